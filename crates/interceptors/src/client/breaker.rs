//! A circuit breaker per downstream.
//!
//! Closed: calls flow; `threshold` consecutive failures (UNAVAILABLE,
//! transport errors) open it. A call that runs out of time (DEADLINE_EXCEEDED,
//! or dropped at its deadline) is not a failure: a slow downstream may well
//! be succeeding (a payment provider approving after eight seconds), and
//! failing fast would turn its slow successes into failures; each such call
//! is already bounded by its deadline. Open: calls fail at once with
//! UNAVAILABLE and ErrorInfo reason `CIRCUIT_OPEN`, never touching the network,
//! until `cooldown` has passed. Half-open: exactly one probe goes through;
//! success closes the circuit, failure opens it for another cool-down.
//!
//! Written by hand: the maintained breaker crates are either not tower services
//! or bring policies (rates, windows) Agora does not need; the state machine is
//! a few lines behind one mutex and is tested on its own below.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;
use tower::Service;

use super::BoxError;
use crate::api::errors::with_reason;

type Response = http::Response<tonic::body::Body>;

/// The ErrorInfo reason of a call refused by an open circuit.
pub const CIRCUIT_OPEN: &str = "CIRCUIT_OPEN";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// What a call did, as far as the breaker cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// Dropped before an answer (the caller gave up), or out of time (the
    /// downstream may be slow, not failing): says nothing either way.
    Abandoned,
}

/// The breaker's state machine, shared by every clone of one downstream.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker opening after `threshold` consecutive failures for
    /// `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value always left consistent; a panic elsewhere
        // while holding the lock cannot corrupt it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a call may go out now; `Some(true)` marks the half-open probe.
    fn admit(&self, now: Instant) -> Option<bool> {
        let mut state = self.state();
        match *state {
            State::Closed { .. } => Some(false),
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                Some(true)
            }
            State::Open { .. } | State::HalfOpen => None,
        }
    }

    fn record(&self, probe: bool, outcome: Outcome, now: Instant) {
        let mut state = self.state();
        match (*state, probe, outcome) {
            (State::HalfOpen, true, Outcome::Success) => *state = State::Closed { failures: 0 },
            (State::HalfOpen, true, Outcome::Failure) => {
                *state = State::Open {
                    until: now + self.cooldown,
                };
            }
            // An abandoned probe proves nothing: let the next call probe.
            (State::HalfOpen, true, Outcome::Abandoned) => *state = State::Open { until: now },
            (State::Closed { .. }, _, Outcome::Success) => *state = State::Closed { failures: 0 },
            (State::Closed { failures }, _, Outcome::Failure) => {
                let failures = failures + 1;
                *state = if failures >= self.threshold {
                    State::Open {
                        until: now + self.cooldown,
                    }
                } else {
                    State::Closed { failures }
                };
            }
            // Late answers of calls admitted before the state changed, and
            // abandoned calls, leave it as it is.
            _ => {}
        }
    }

    /// True while calls are refused without a probe being possible.
    pub fn is_open(&self) -> bool {
        match *self.state() {
            State::Open { until } => Instant::now() < until,
            State::HalfOpen => true,
            State::Closed { .. } => false,
        }
    }
}

/// Records a call's outcome when it ends, including when it is dropped.
struct Permit {
    breaker: Arc<Breaker>,
    probe: bool,
    recorded: bool,
}

impl Permit {
    fn record(mut self, outcome: Outcome) {
        self.recorded = true;
        self.breaker.record(self.probe, outcome, Instant::now());
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.recorded {
            // Dropped unanswered: the caller went away, or its deadline
            // passed (slow is not failing; see the module documentation).
            self.breaker
                .record(self.probe, Outcome::Abandoned, Instant::now());
        }
    }
}

/// Guards the inner service with a [`Breaker`].
#[derive(Clone, Debug)]
pub struct BreakerService<S> {
    inner: S,
    breaker: Arc<Breaker>,
    downstream: Arc<str>,
}

impl<S> BreakerService<S> {
    /// Guards `inner`, the downstream called `downstream`, with `breaker`.
    pub fn new(inner: S, breaker: Arc<Breaker>, downstream: &str) -> Self {
        Self {
            inner,
            breaker,
            downstream: downstream.into(),
        }
    }
}

impl<S> Service<http::Request<tonic::body::Body>> for BreakerService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Response, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(probe) = self.breaker.admit(Instant::now()) else {
            let status = with_reason(
                Code::Unavailable,
                CIRCUIT_OPEN,
                format!("circuit to {} is open; failing fast", self.downstream),
                [("downstream", self.downstream.to_string())],
            );
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let permit = Permit {
            breaker: self.breaker.clone(),
            probe,
            recorded: false,
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            permit.record(classify(&result));
            result
        })
    }
}

/// UNAVAILABLE (in a trailers-only response's headers) and transport errors
/// count against the downstream; DEADLINE_EXCEEDED says only that it was
/// slow, and an UNAVAILABLE inviting a retry (RetryInfo) that it is busy;
/// anything else is its answer.
fn classify(result: &Result<Response, BoxError>) -> Outcome {
    match result {
        Err(_) => Outcome::Failure,
        Ok(response) => match response
            .headers()
            .get(crate::observe::GRPC_STATUS)
            .map(|v| v.as_bytes())
        {
            // An UNAVAILABLE with a RetryInfo is a live service asking for a
            // retry later (an idempotent call still in progress there), not
            // one failing.
            Some(b"14") => match tonic::Status::from_header_map(response.headers()) {
                Some(status) if crate::api::errors::retry_delay(&status).is_some() => {
                    Outcome::Abandoned
                }
                _ => Outcome::Failure,
            },
            Some(b"4") => Outcome::Abandoned,
            _ => Outcome::Success,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(5);

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let breaker = Breaker::new(3, COOLDOWN);
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(breaker.admit(now), Some(false));
            breaker.record(false, Outcome::Failure, now);
        }
        breaker.record(false, Outcome::Success, now);
        for _ in 0..2 {
            breaker.record(false, Outcome::Failure, now);
        }
        assert_eq!(
            breaker.admit(now),
            Some(false),
            "a success resets the count"
        );
        breaker.record(false, Outcome::Failure, now);
        assert_eq!(breaker.admit(now), None);
        assert_eq!(breaker.admit(now + COOLDOWN / 2), None);
    }

    #[test]
    fn half_open_admits_one_probe_and_its_result_decides() {
        let breaker = Breaker::new(1, COOLDOWN);
        let now = Instant::now();
        breaker.record(false, Outcome::Failure, now);
        let later = now + COOLDOWN;
        assert_eq!(breaker.admit(later), Some(true));
        assert_eq!(breaker.admit(later), None, "only one probe at a time");
        breaker.record(true, Outcome::Failure, later);
        assert_eq!(breaker.admit(later), None, "a failed probe re-opens");
        let again = later + COOLDOWN;
        assert_eq!(breaker.admit(again), Some(true));
        breaker.record(true, Outcome::Success, again);
        assert_eq!(breaker.admit(again), Some(false), "a good probe closes");
    }

    #[test]
    fn slow_calls_out_of_time_do_not_open_the_circuit() {
        let breaker = Breaker::new(2, COOLDOWN);
        let now = Instant::now();
        let breaker = Arc::new(breaker);
        // Dropped at the deadline: neutral.
        for _ in 0..5 {
            drop(Permit {
                breaker: breaker.clone(),
                probe: false,
                recorded: false,
            });
        }
        for _ in 0..5 {
            let slow = classify(&Ok(http::Response::builder()
                .header(crate::observe::GRPC_STATUS, "4")
                .body(tonic::body::Body::empty())
                .unwrap()));
            breaker.record(false, slow, now);
        }
        assert_eq!(breaker.admit(now), Some(false), "still closed");
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let breaker = Breaker::new(1, COOLDOWN);
        let now = Instant::now();
        breaker.record(false, Outcome::Failure, now);
        let later = now + COOLDOWN;
        assert_eq!(breaker.admit(later), Some(true));
        breaker.record(true, Outcome::Abandoned, later);
        assert_eq!(breaker.admit(later), Some(true));
    }

    #[test]
    fn late_answers_do_not_override_the_probe() {
        let breaker = Breaker::new(1, COOLDOWN);
        let now = Instant::now();
        breaker.record(false, Outcome::Failure, now);
        let later = now + COOLDOWN;
        assert_eq!(breaker.admit(later), Some(true));
        breaker.record(false, Outcome::Success, later);
        assert_eq!(breaker.admit(later), None, "still waiting for the probe");
    }
}
