//! The calling context a served request hands to the downstream calls its
//! handler makes: the absolute deadline and the request id.
//!
//! [`super::DeadlineLayer`] runs each served call inside a
//! [`tokio::task_local!`] scope, so any code awaited by the handler (on the same
//! task) sees it without threading it through every signature. A call spawned
//! onto another task does not inherit it; wrap that future with
//! [`CallContext::scope`] explicitly.

use std::future::Future;
use std::sync::OnceLock;

use tokio::time::Instant;

/// The header carrying the id that ties one user request together across hops.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// What a served call passes on to its downstream calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// When the caller stops waiting; downstream calls must finish before it.
    pub deadline: Instant,
    /// The caller's `x-request-id`; when it sent none, one is made the first
    /// time something asks (a log line, a downstream call), so the many calls
    /// that need none do not pay for one.
    request_id: OnceLock<String>,
}

tokio::task_local! {
    /// The context of the call being served on this task.
    static CALL_CONTEXT: CallContext;
}

impl CallContext {
    /// A context ending at `deadline`, carrying `request_id` if the caller
    /// sent one.
    pub fn new(deadline: Instant, request_id: Option<String>) -> Self {
        let lazy = OnceLock::new();
        if let Some(id) = request_id {
            let _ = lazy.set(id);
        }
        Self {
            deadline,
            request_id: lazy,
        }
    }

    /// The request id, made now if there is none yet.
    pub fn request_id(&self) -> &str {
        self.request_id.get_or_init(new_request_id)
    }

    /// Runs `future` with this context visible to [`current_deadline`] and
    /// [`current_request_id`].
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CALL_CONTEXT.scope(self, future)
    }
}

/// How far away the deadline of a task detached from its call is: far enough
/// never to cut it short (its own timeouts bound it).
const DETACHED_DEADLINE: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// `future`, to be spawned by a call's handler, carrying the call's trace
/// context and request id, so the task's log lines, spans and downstream
/// calls still name the call that started it. The call's deadline is not
/// carried: such a task runs apart from the caller's wait on purpose (a
/// payment attempt must not be cut in half by a caller giving up).
pub fn with_call_ids<F: Future>(future: F) -> impl Future<Output = F::Output> {
    use opentelemetry::context::FutureExt as _;
    let context = CallContext::new(Instant::now() + DETACHED_DEADLINE, current_request_id());
    context.scope(future.with_current_context())
}

/// The deadline of the call being served on this task, if any.
pub fn current_deadline() -> Option<Instant> {
    CALL_CONTEXT.try_with(|context| context.deadline).ok()
}

/// The request id of the call being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    CALL_CONTEXT
        .try_with(|context| context.request_id().to_owned())
        .ok()
}

/// A fresh request id: a UUIDv7, so ids sort by creation time in logs.
pub fn new_request_id() -> String {
    // Encoded by hand rather than through `Display`: the formatting machinery
    // costs more than the id itself, on every call served.
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

/// The deadline a client call carries down the stack (set by the outermost
/// client layer), so inner layers such as retry need not consult the
/// task-local, which may be absent or belong to another call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallDeadline(pub Instant);
