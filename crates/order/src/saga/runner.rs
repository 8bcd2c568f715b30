//! Drives one order's saga: read the order, make one recorded try of the step
//! its phase names, write the outcome (and the next phase) in one transaction,
//! repeat until the phase is `done`. A forward step's success also records
//! the next forward step's STARTED row in that transaction, so the next try
//! begins with its call: one commit per step instead of two.
//!
//! Forward steps (reserve, charge, commit) have a budget of tries; a business
//! failure, or a spent budget, starts compensation. Compensation steps
//! (release, then refund) are retried until they succeed, with a capped
//! backoff: giving stock and money back is not optional.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::{OrderId, OrderState};
use crate::downstream::Failure;
use crate::error::OrderError;
use crate::steps::{Effect, Phase, StepEntry, StepKind, StepLog, StepStatus};
use crate::store::{Lease, NewStep, OrderRecord, Transition};

use super::{FaultPoint, Inner, refund};

/// Why a runner stopped.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    /// The saga is done.
    Done,
    /// Shutdown: the lease was given up.
    Stopped,
    /// Another runner holds the order now.
    LeaseLost,
    /// A fault point fired: stop as a crash would.
    Crashed,
}

/// What to do after one try.
enum Flow {
    Continue,
    /// Go on with the next phase's step, whose try (this attempt) is already
    /// recorded STARTED.
    ContinueStarted(i32),
    Backoff(Duration),
    Exit(Exit),
}

/// How far one try of a compensation got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Progress {
    /// Nothing is left to undo.
    pub(super) settled: bool,
    /// For people: what was done, or what is still outstanding.
    pub(super) detail: String,
}

impl Progress {
    pub(super) fn settled(detail: impl Into<String>) -> Self {
        Self {
            settled: true,
            detail: detail.into(),
        }
    }
}

/// Runs `order`'s saga under `owner`'s lease until it stops; `settled`
/// turns true when the runner settles the order.
pub(super) async fn run(
    inner: Arc<Inner>,
    order: OrderId,
    owner: String,
    settled: watch::Sender<bool>,
) {
    let runner = Runner {
        inner: &inner,
        owner: &owner,
        settled: &settled,
    };
    if runner.crash(FaultPoint::Recorded) {
        tracing::warn!("fault injected: runner stops before the first step");
        return;
    }
    match runner.drive(order).await {
        Ok(Exit::Done) => tracing::debug!("saga done"),
        Ok(Exit::Crashed) => tracing::warn!("fault injected: runner stopped abruptly"),
        Ok(Exit::LeaseLost) => tracing::warn!("lease lost; another runner drives the order"),
        Ok(Exit::Stopped) => {
            let _ = inner.store.release_lease(order, &owner).await;
            tracing::info!("saga paused for shutdown; it resumes from its last step");
        }
        Err(error) => {
            // The database failed under us: let the lease go so recovery
            // (here or elsewhere) resumes the order once it is back.
            tracing::warn!(error = %agora_interceptors::api::errors::error_chain(&error), "saga runner failed; recovery will resume it");
            let _ = inner.store.release_lease(order, &owner).await;
        }
    }
}

struct Runner<'a> {
    inner: &'a Inner,
    owner: &'a str,
    settled: &'a watch::Sender<bool>,
}

impl Runner<'_> {
    fn crash(&self, point: FaultPoint) -> bool {
        self.inner.fault.as_ref().is_some_and(|hook| hook(point))
    }

    async fn drive(&self, id: OrderId) -> Result<Exit, OrderError> {
        // The attempt of the current phase's step already recorded STARTED
        // by the previous step's outcome.
        let mut started = None;
        loop {
            // A try already recorded STARTED is made even during shutdown:
            // its call is as durable-before-remote as any.
            if self.inner.stop.is_cancelled() && started.is_none() {
                return Ok(Exit::Stopped);
            }
            let order = self.inner.store.order(id).await?;
            let pre = started.take();
            let flow = match order.phase {
                Phase::Done => return Ok(Exit::Done),
                Phase::Reserve => self.forward(&order, StepKind::ReserveStock, pre).await?,
                Phase::Charge => self.forward(&order, StepKind::ChargePayment, pre).await?,
                Phase::Commit => self.forward(&order, StepKind::CommitStock, pre).await?,
                Phase::Refund => self.compensate(&order, StepKind::RefundPayment).await?,
                Phase::Release => self.compensate(&order, StepKind::ReleaseStock).await?,
            };
            match flow {
                Flow::Continue => {}
                Flow::ContinueStarted(attempt) => started = Some(attempt),
                Flow::Exit(exit) => return Ok(exit),
                Flow::Backoff(pause) => {
                    tokio::select! {
                        () = self.inner.stop.cancelled() => return Ok(Exit::Stopped),
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Records `change`; false when the lease was lost.
    async fn apply(&self, order: &OrderRecord, change: Transition) -> Result<bool, OrderError> {
        let applied = self
            .inner
            .store
            .apply(order.id, self.owner, &change)
            .await?;
        if applied {
            self.inner.metrics.record(order, &change);
            if change.state.is_some_and(|state| !state.is_in_flight()) {
                self.settled.send_replace(true);
            }
        }
        Ok(applied)
    }

    /// Records the try as STARTED, holding the lease for the call.
    async fn start(
        &self,
        order: &OrderRecord,
        step: StepKind,
        attempt: i32,
    ) -> Result<bool, OrderError> {
        let settings = &self.inner.settings;
        self.apply(
            order,
            Transition {
                steps: vec![NewStep {
                    step,
                    status: StepStatus::Started,
                    attempt,
                    effect: Effect::Unrecorded,
                    detail: String::new(),
                }],
                lease: Lease::HoldFor(settings.lease_ttl),
                ..Transition::default()
            },
        )
        .await
    }

    /// One try of a forward step; `started` is its attempt when the previous
    /// step's outcome already recorded it STARTED.
    async fn forward(
        &self,
        order: &OrderRecord,
        step: StepKind,
        started: Option<i32>,
    ) -> Result<Flow, OrderError> {
        let attempt = match started {
            Some(attempt) => attempt,
            None => {
                let attempt = order.steps.next_attempt(step);
                if !self.start(order, step, attempt).await? {
                    return Ok(Flow::Exit(Exit::LeaseLost));
                }
                attempt
            }
        };
        if self.crash(FaultPoint::BeforeCall(step)) {
            return Ok(Flow::Exit(Exit::Crashed));
        }
        let downstreams = &self.inner.downstreams;
        let outcome: Result<Transition, Failure> = match step {
            StepKind::ReserveStock => downstreams
                .reserve(order.id, &order.cart_lines())
                .await
                .map(|prices| Transition {
                    steps: vec![succeeded(
                        step,
                        attempt,
                        format!(
                            "reserved {} line(s); total {} {}",
                            prices.lines.len(),
                            prices.total.amount_minor,
                            prices.total.currency
                        ),
                    )],
                    phase: Some(Phase::Charge),
                    prices: Some(prices),
                    ..Transition::default()
                }),
            StepKind::ChargePayment => match (&order.total, &order.payment_token) {
                (Some(total), Some(token)) => downstreams
                    .charge(order.id, order.customer, total, token)
                    .await
                    .map(|charged| Transition {
                        steps: vec![succeeded(
                            step,
                            attempt,
                            format!("payment {} captured", charged.payment_id),
                        )],
                        phase: Some(Phase::Commit),
                        payment_id: Some(charged.payment_id),
                        forget_payment_token: true,
                        ..Transition::default()
                    }),
                _ => Err(Failure {
                    retry: false,
                    effect: Effect::None,
                    reason: "INTERNAL",
                    message: "the order has no total or no payment method to charge".into(),
                    unresolved: false,
                }),
            },
            StepKind::CommitStock => downstreams.commit(order.id).await.map(|detail| Transition {
                steps: vec![
                    succeeded(step, attempt, detail),
                    succeeded(StepKind::Confirm, 1, "order confirmed".into()),
                ],
                phase: Some(Phase::Done),
                state: Some(OrderState::Confirmed),
                lease: Lease::Release,
                ..Transition::default()
            }),
            _ => unreachable!("forward() is only called for forward steps"),
        };
        if self.crash(FaultPoint::AfterCall(step)) {
            return Ok(Flow::Exit(Exit::Crashed));
        }
        let failure = match outcome {
            // A success that is not the last records the next forward
            // step's try STARTED with it, holding the lease for that call
            // (unless shutdown has begun: then the runner stops here).
            Ok(mut change) => {
                let done = change.phase == Some(Phase::Done);
                let next = match change.phase {
                    Some(Phase::Charge) => Some(StepKind::ChargePayment),
                    Some(Phase::Commit) => Some(StepKind::CommitStock),
                    _ => None,
                }
                .filter(|_| !self.inner.stop.is_cancelled());
                let next_attempt = next.map(|next| order.steps.next_attempt(next));
                if let (Some(next), Some(attempt)) = (next, next_attempt) {
                    let settings = &self.inner.settings;
                    change.steps.push(NewStep {
                        step: next,
                        status: StepStatus::Started,
                        attempt,
                        effect: Effect::Unrecorded,
                        detail: String::new(),
                    });
                    change.lease = Lease::HoldFor(settings.attempt_timeout + settings.lease_ttl);
                }
                if !self.apply(order, change).await? {
                    return Ok(Flow::Exit(Exit::LeaseLost));
                }
                return Ok(match (done, next_attempt) {
                    (true, _) => Flow::Exit(Exit::Done),
                    (false, Some(attempt)) => Flow::ContinueStarted(attempt),
                    (false, None) => Flow::Continue,
                });
            }
            Err(failure) => failure,
        };
        let failed_row = NewStep {
            step,
            status: StepStatus::Failed,
            attempt,
            effect: failure.effect,
            detail: failure.message.clone(),
        };
        let tries = order.steps.tries_since_success(step) + 1;
        if failure.retry
            && (tries < self.inner.settings.step_attempts
                || self.may_still_resolve(order, step, &failure))
        {
            let pause = backoff(
                attempt,
                self.inner.settings.retry_base,
                self.inner.settings.retry_max,
            );
            tracing::info!(
                step = step.as_str(),
                attempt,
                ?pause,
                reason = failure.reason,
                "step failed; retrying"
            );
            let change = Transition {
                steps: vec![failed_row],
                lease: Lease::HoldFor(pause + self.inner.settings.lease_ttl),
                ..Transition::default()
            };
            return Ok(if self.apply(order, change).await? {
                Flow::Backoff(pause)
            } else {
                Flow::Exit(Exit::LeaseLost)
            });
        }
        // A business failure, or the budget is spent: undo what may be done.
        tracing::info!(
            step = step.as_str(),
            attempt,
            reason = failure.reason,
            "step failed; compensating"
        );
        let mut log = order.steps.clone();
        log.0.push(StepEntry {
            step,
            status: StepStatus::Failed,
            attempt,
            effect: failure.effect,
            detail: String::new(),
            at: 0,
        });
        // The customer reads `failure_message`: a business refusal says what
        // they can act on (which skus were short, the decline); anything
        // else gets a plain sentence. The downstream's own words stay in the
        // step history and the log.
        // A business refusal (a decline, short stock) is the shop working:
        // info. Giving up after retries means a partner is in trouble: warn.
        if failure.retry {
            tracing::warn!(
                order_id = %order.id,
                step = step.as_str(),
                reason = failure.reason,
                detail = %failure.message,
                "order failed: retries spent"
            );
        } else {
            tracing::info!(
                order_id = %order.id,
                step = step.as_str(),
                reason = failure.reason,
                detail = %failure.message,
                "order failed"
            );
        }
        let plain = customer_message(&failure);
        let message = if failure.retry {
            format!("gave up after {tries} tries: {plain}")
        } else {
            plain
        };
        let mut change = self.next_compensation(order.state, &log, Phase::Release);
        change.steps.insert(0, failed_row);
        change.failure = Some((failure.reason.to_owned(), message));
        change.forget_payment_token = true;
        self.finish(order, change).await
    }

    /// Whether a charge whose outcome is unknown (its tries ran out of time;
    /// the provider may yet approve) is still worth asking about, past the
    /// step's try budget: asking again under the same idempotency key finds
    /// out what it came to, and a slow approval is a sale, not a failure.
    /// Bounded by `charge_resolve_within` from the first try.
    fn may_still_resolve(&self, order: &OrderRecord, step: StepKind, failure: &Failure) -> bool {
        if step != StepKind::ChargePayment || !failure.unresolved {
            return false;
        }
        let within = i64::try_from(self.inner.settings.charge_resolve_within.as_micros())
            .unwrap_or(i64::MAX);
        order
            .steps
            .0
            .iter()
            .find(|entry| entry.step == step)
            .is_some_and(|first| {
                agora_interceptors::api::time::now_micros().saturating_sub(first.at) < within
            })
    }

    /// The transition into the first compensation phase at or after `from`
    /// that has something to undo, or to the end. Stock goes back first
    /// (RELEASE_STOCK), money second (REFUND_PAYMENT): the order can no longer
    /// be fulfilled, so freeing the stock others may be waiting for never
    /// harms, while settling money may have to wait for the payment provider.
    fn next_compensation(&self, state: OrderState, log: &StepLog, from: Phase) -> Transition {
        let release = from == Phase::Release && log.may_have_applied(StepKind::ReserveStock);
        let refund = matches!(from, Phase::Release | Phase::Refund)
            && log.may_have_applied(StepKind::ChargePayment);
        let lease = Lease::HoldFor(self.inner.settings.lease_ttl);
        if release {
            Transition {
                phase: Some(Phase::Release),
                lease,
                ..Transition::default()
            }
        } else if refund {
            Transition {
                phase: Some(Phase::Refund),
                lease,
                ..Transition::default()
            }
        } else {
            Transition {
                phase: Some(Phase::Done),
                state: Some(settled_state(state)),
                lease: Lease::Release,
                ..Transition::default()
            }
        }
    }

    async fn finish(&self, order: &OrderRecord, change: Transition) -> Result<Flow, OrderError> {
        let done = change.phase == Some(Phase::Done);
        if !self.apply(order, change).await? {
            return Ok(Flow::Exit(Exit::LeaseLost));
        }
        Ok(if done {
            Flow::Exit(Exit::Done)
        } else {
            Flow::Continue
        })
    }

    /// One try of a compensation step (also the steps of a cancellation).
    async fn compensate(&self, order: &OrderRecord, step: StepKind) -> Result<Flow, OrderError> {
        let attempt = order.steps.next_attempt(step);
        if !self.start(order, step, attempt).await? {
            return Ok(Flow::Exit(Exit::LeaseLost));
        }
        if self.crash(FaultPoint::BeforeCall(step)) {
            return Ok(Flow::Exit(Exit::Crashed));
        }
        let downstreams = &self.inner.downstreams;
        let outcome = match step {
            StepKind::RefundPayment => refund::refund_order(downstreams, order).await,
            StepKind::ReleaseStock => downstreams.release(order.id).await.map(Progress::settled),
            _ => unreachable!("compensate() is only called for compensation steps"),
        };
        if self.crash(FaultPoint::AfterCall(step)) {
            return Ok(Flow::Exit(Exit::Crashed));
        }
        let failure = match outcome {
            Ok(progress) if progress.settled => {
                let next = if step == StepKind::ReleaseStock {
                    Phase::Refund
                } else {
                    Phase::Done
                };
                let mut change = self.next_compensation(order.state, &order.steps, next);
                change
                    .steps
                    .insert(0, succeeded(step, attempt, progress.detail));
                return self.finish(order, change).await;
            }
            Ok(progress) => Failure {
                retry: true,
                effect: Effect::None,
                reason: "PAYMENT_PENDING",
                message: progress.detail,
                unresolved: false,
            },
            Err(failure) => failure,
        };
        let pause = backoff(
            attempt,
            self.inner.settings.retry_base,
            self.inner.settings.compensation_retry_max,
        );
        tracing::warn!(step = step.as_str(), attempt, ?pause, message = %failure.message, "compensation not done yet; retrying");
        let mut change = Transition {
            steps: vec![NewStep {
                step,
                status: StepStatus::Failed,
                attempt,
                effect: failure.effect,
                detail: failure.message,
            }],
            lease: Lease::HoldFor(pause + self.inner.settings.lease_ttl),
            ..Transition::default()
        };
        // A payment whose outcome is unknown (still PENDING at the provider,
        // or the payment service unreachable) must not keep a failed order
        // PENDING forever: once the stock is back and no money is known to be
        // taken, and the retry budget is spent, the order is FAILED and the
        // payment is settled in the background (refunded should it turn out
        // captured).
        let tries = order.steps.tries_since_success(step) + 1;
        if step == StepKind::RefundPayment
            && order.state == OrderState::Pending
            && order.payment_id.is_none()
            && tries >= self.inner.settings.step_attempts
        {
            change.state = Some(OrderState::Failed);
        }
        Ok(if self.apply(order, change).await? {
            Flow::Backoff(pause)
        } else {
            Flow::Exit(Exit::LeaseLost)
        })
    }
}

/// The final state of a compensated order.
fn settled_state(state: OrderState) -> OrderState {
    match state {
        OrderState::Cancelling | OrderState::Cancelled => OrderState::Cancelled,
        _ => OrderState::Failed,
    }
}

fn succeeded(step: StepKind, attempt: i32, detail: String) -> NewStep {
    NewStep {
        step,
        status: StepStatus::Succeeded,
        attempt,
        effect: Effect::Applied,
        detail,
    }
}

/// Exponential backoff with jitter: try `attempt` (from 1) waits between half
/// and all of `base · 2^(attempt-1)`, capped at `max`.
pub fn backoff(attempt: i32, base: Duration, max: Duration) -> Duration {
    let exponent = attempt.clamp(1, 20) as u32 - 1;
    let full = base.saturating_mul(1 << exponent).min(max);
    let jitter = f64::from(getrandom::u32().unwrap_or(u32::MAX)) / f64::from(u32::MAX);
    full.mul_f64(0.5 + 0.5 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for _ in 0..50 {
            let first = backoff(1, base, max);
            assert!(first >= base / 2 && first <= base);
            let third = backoff(3, base, max);
            assert!(third >= base * 2 && third <= base * 4);
            assert!(backoff(30, base, max) <= max);
        }
    }
}

/// What the customer is told about `failure` (see `Order.failure_message`):
/// a downstream's refusal as it worded it for them, else a plain sentence
/// by reason, never an RPC status or another service's internals.
pub(crate) fn customer_message(failure: &Failure) -> String {
    if failure.effect == Effect::Refused {
        return failure.message.clone();
    }
    match failure.reason {
        "PAYMENT_UNAVAILABLE" | "PAYMENT_PENDING" => {
            "the payment could not be completed; anything charged is refunded"
        }
        "PAYMENT_FAILED" => "the payment could not be made; anything charged is refunded",
        "INVENTORY_UNAVAILABLE" => "the stock could not be checked; try again later",
        "COMMIT_FAILED" | "RESERVATION_EXPIRED" => {
            "the reserved stock could not be sold; anything charged is refunded"
        }
        _ => "the order could not be completed; anything charged is refunded",
    }
    .to_owned()
}

#[cfg(test)]
mod customer_message_tests {
    use super::*;

    #[test]
    fn technical_failures_read_plainly_and_refusals_keep_their_words() {
        let technical = Failure {
            retry: false,
            effect: Effect::Unknown,
            reason: "PAYMENT_FAILED",
            message: "payment answered InvalidArgument: invalid request: amount".into(),
            unresolved: false,
        };
        let told = customer_message(&technical);
        assert!(
            !told.contains("InvalidArgument") && !told.contains("amount"),
            "{told}"
        );
        let declined = Failure {
            retry: false,
            effect: Effect::Refused,
            reason: "PAYMENT_DECLINED",
            message: "the payment was declined (card_declined)".into(),
            unresolved: false,
        };
        assert_eq!(customer_message(&declined), declined.message);
    }
}
