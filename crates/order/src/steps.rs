//! The saga's vocabulary and its step log: phases, steps, what a try did
//! downstream, and what the reservation priced. The store records these, the
//! downstream calls answer in them, and the saga decides with them; none of
//! those modules owns them.
//!
//! The log (table `saga_steps`) is the saga's memory: every try of every step
//! is written as STARTED before the remote call and as SUCCEEDED or FAILED
//! after it, with the try's [`Effect`]. What compensation must undo is read
//! from the log alone ([`StepLog::may_have_applied`]), so it is right after a
//! crash at any point, including between a remote call and its record.

use crate::domain::{Money, Sku};

/// What the runner must do next for an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Reserve the stock (and learn the prices).
    Reserve,
    /// Charge the total.
    Charge,
    /// Commit the reservation; success confirms the order.
    Commit,
    /// Give back any money taken (compensation or cancellation).
    Refund,
    /// Give back any stock held or sold (compensation or cancellation).
    Release,
    /// Nothing: the order is CONFIRMED, FAILED or CANCELLED.
    Done,
}

impl Phase {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Reserve => "reserve",
            Phase::Charge => "charge",
            Phase::Commit => "commit",
            Phase::Refund => "refund",
            Phase::Release => "release",
            Phase::Done => "done",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reserve" => Phase::Reserve,
            "charge" => Phase::Charge,
            "commit" => Phase::Commit,
            "refund" => Phase::Refund,
            "release" => Phase::Release,
            "done" => Phase::Done,
            _ => return None,
        })
    }
}

/// A saga step, as named in `agora.order.v1.SagaStepKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// InventoryService.ReserveStock.
    ReserveStock,
    /// PaymentService.Charge.
    ChargePayment,
    /// InventoryService.CommitReservation.
    CommitStock,
    /// The order becoming CONFIRMED.
    Confirm,
    /// PaymentService.Refund.
    RefundPayment,
    /// InventoryService.ReleaseReservation.
    ReleaseStock,
}

impl StepKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::ReserveStock => "RESERVE_STOCK",
            StepKind::ChargePayment => "CHARGE_PAYMENT",
            StepKind::CommitStock => "COMMIT_STOCK",
            StepKind::Confirm => "CONFIRM",
            StepKind::RefundPayment => "REFUND_PAYMENT",
            StepKind::ReleaseStock => "RELEASE_STOCK",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "RESERVE_STOCK" => StepKind::ReserveStock,
            "CHARGE_PAYMENT" => StepKind::ChargePayment,
            "COMMIT_STOCK" => StepKind::CommitStock,
            "CONFIRM" => StepKind::Confirm,
            "REFUND_PAYMENT" => StepKind::RefundPayment,
            "RELEASE_STOCK" => StepKind::ReleaseStock,
            _ => return None,
        })
    }
}

/// How far one try of a step got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepStatus {
    /// Recorded before the remote call.
    Started,
    /// The step is done.
    Succeeded,
    /// The try ended without the step being done.
    Failed,
}

impl StepStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Started => "STARTED",
            StepStatus::Succeeded => "SUCCEEDED",
            StepStatus::Failed => "FAILED",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "STARTED" => StepStatus::Started,
            "SUCCEEDED" => StepStatus::Succeeded,
            "FAILED" => StepStatus::Failed,
            _ => return None,
        })
    }
}

/// What a finished try did downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Not recorded (STARTED rows).
    Unrecorded,
    /// The step took effect.
    Applied,
    /// This try certainly did nothing (refused before doing anything, e.g.
    /// UNAVAILABLE); says nothing about earlier tries.
    None,
    /// The downstream settled the request, under its idempotency key, without
    /// effect (a decline, out of stock): no try with that key did or will do
    /// anything.
    Refused,
    /// The try may or may not have taken effect (a deadline passed, the
    /// answer was lost).
    Unknown,
}

impl Effect {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Unrecorded => "",
            Effect::Applied => "applied",
            Effect::None => "none",
            Effect::Refused => "refused",
            Effect::Unknown => "unknown",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" => Effect::Unrecorded,
            "applied" => Effect::Applied,
            "none" => Effect::None,
            "refused" => Effect::Refused,
            "unknown" => Effect::Unknown,
            _ => return None,
        })
    }
}

/// One row of the step log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepEntry {
    /// Which step.
    pub step: StepKind,
    /// How far this try got.
    pub status: StepStatus,
    /// Which try, from 1.
    pub attempt: i32,
    /// What the try did downstream (finished tries only).
    pub effect: Effect,
    /// For people: an error, a reservation or payment id.
    pub detail: String,
    /// When, in microseconds since the epoch.
    pub at: i64,
}

/// An order's step log, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepLog(pub Vec<StepEntry>);

impl StepLog {
    /// The number the next try of `step` gets.
    pub fn next_attempt(&self, step: StepKind) -> i32 {
        self.0
            .iter()
            .filter(|entry| entry.step == step && entry.status == StepStatus::Started)
            .map(|entry| entry.attempt)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// Tries of `step` since the last time it succeeded, or since the start:
    /// a saga resumed after a crash keeps counting against the same budget.
    pub fn tries_since_success(&self, step: StepKind) -> u32 {
        let mut tries = 0;
        for entry in &self.0 {
            if entry.step != step {
                continue;
            }
            match entry.status {
                StepStatus::Started => tries += 1,
                StepStatus::Succeeded => tries = 0,
                StepStatus::Failed => {}
            }
        }
        tries
    }

    /// Whether `step` may have taken effect downstream: some try succeeded,
    /// ended with an unknown effect, or never recorded its end (a crash), and
    /// no later answer settled the key without effect.
    pub fn may_have_applied(&self, step: StepKind) -> bool {
        let mut maybe = false;
        let mut open = false;
        for entry in self.0.iter().filter(|entry| entry.step == step) {
            match (entry.status, entry.effect) {
                (StepStatus::Started, _) => open = true,
                (_, Effect::Applied) | (StepStatus::Succeeded, _) => {
                    open = false;
                    maybe = true;
                }
                (_, Effect::Unknown) => {
                    open = false;
                    maybe = true;
                }
                (_, Effect::Refused) => {
                    open = false;
                    maybe = false;
                }
                (_, Effect::None | Effect::Unrecorded) => open = false,
            }
        }
        maybe || open
    }
}

/// What RESERVE_STOCK learns: each line's unit price and the total, as
/// inventory captured them when it took the units.
#[derive(Clone, Debug)]
pub struct Prices {
    /// Unit price per sku.
    pub lines: Vec<(Sku, Money)>,
    /// Sum over the lines.
    pub total: Money,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(step: StepKind, status: StepStatus, attempt: i32, effect: Effect) -> StepEntry {
        StepEntry {
            step,
            status,
            attempt,
            effect,
            detail: String::new(),
            at: 0,
        }
    }

    use Effect as E;
    use StepKind::ChargePayment as C;
    use StepStatus as S;

    #[test]
    fn a_clean_failure_applied_nothing() {
        let log = StepLog(vec![
            entry(C, S::Started, 1, E::Unrecorded),
            entry(C, S::Failed, 1, E::None),
            entry(C, S::Started, 2, E::Unrecorded),
            entry(C, S::Failed, 2, E::None),
        ]);
        assert!(!log.may_have_applied(C));
        assert_eq!(log.next_attempt(C), 3);
        assert_eq!(log.tries_since_success(C), 2);
    }

    #[test]
    fn a_crash_during_a_call_leaves_it_open() {
        let log = StepLog(vec![entry(C, S::Started, 1, E::Unrecorded)]);
        assert!(log.may_have_applied(C));
    }

    #[test]
    fn an_unknown_outcome_sticks_until_the_key_is_settled() {
        let mut log = StepLog(vec![
            entry(C, S::Started, 1, E::Unrecorded),
            entry(C, S::Failed, 1, E::Unknown),
            entry(C, S::Started, 2, E::Unrecorded),
            entry(C, S::Failed, 2, E::None),
        ]);
        assert!(
            log.may_have_applied(C),
            "a later clean failure proves nothing"
        );
        log.0.push(entry(C, S::Started, 3, E::Unrecorded));
        log.0.push(entry(C, S::Failed, 3, E::Refused));
        assert!(!log.may_have_applied(C), "a decline settles the key");
    }

    #[test]
    fn success_is_an_effect() {
        let log = StepLog(vec![
            entry(C, S::Started, 1, E::Unrecorded),
            entry(C, S::Succeeded, 1, E::Applied),
        ]);
        assert!(log.may_have_applied(C));
        assert!(!log.may_have_applied(StepKind::ReserveStock));
    }

    #[test]
    fn stored_forms_round_trip() {
        for phase in [
            Phase::Reserve,
            Phase::Charge,
            Phase::Commit,
            Phase::Refund,
            Phase::Release,
            Phase::Done,
        ] {
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        }
        for effect in [E::Unrecorded, E::Applied, E::None, E::Refused, E::Unknown] {
            assert_eq!(Effect::parse(effect.as_str()), Some(effect));
        }
    }
}
