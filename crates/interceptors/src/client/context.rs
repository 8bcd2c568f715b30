//! The calling context a served request hands to the downstream calls its
//! handler makes: the absolute deadline and the request id.
//!
//! [`super::DeadlineLayer`] runs each served call inside a
//! [`tokio::task_local!`] scope, so any code awaited by the handler (on the same
//! task) sees it without threading it through every signature. A call spawned
//! onto another task does not inherit it; wrap that future with
//! [`CallContext::scope`] explicitly.

use std::future::Future;

use tokio::time::Instant;

/// The header carrying the id that ties one user request together across hops.
pub const REQUEST_ID: &str = "x-request-id";

/// What a served call passes on to its downstream calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// When the caller stops waiting; downstream calls must finish before it.
    pub deadline: Instant,
    /// The caller's `x-request-id`, or one generated at the edge.
    pub request_id: String,
}

tokio::task_local! {
    /// The context of the call being served on this task.
    static CALL_CONTEXT: CallContext;
}

impl CallContext {
    /// Runs `future` with this context visible to [`current_deadline`] and
    /// [`current_request_id`].
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CALL_CONTEXT.scope(self, future)
    }
}

/// The deadline of the call being served on this task, if any.
pub fn current_deadline() -> Option<Instant> {
    CALL_CONTEXT.try_with(|context| context.deadline).ok()
}

/// The request id of the call being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    CALL_CONTEXT
        .try_with(|context| context.request_id.clone())
        .ok()
}

/// A fresh request id: a UUIDv7, so ids sort by creation time in logs.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The deadline a client call carries down the stack (set by the outermost
/// client layer), so inner layers such as retry need not consult the
/// task-local, which may be absent or belong to another call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallDeadline(pub Instant);
