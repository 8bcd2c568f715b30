//! Giving an order's money back (REFUND_PAYMENT, in compensation and in
//! cancellation): which payments, how much, under which key, and when the
//! money is settled.
//!
//! - **Which payments**: the one the charge answered with; or, when no
//!   charge answer was recorded (it was lost, or the charge is still
//!   PENDING), every payment the payment service has for the order.
//! - **How much**: what each captured payment still holds (amount less what
//!   was refunded). Declined, failed and wholly refunded payments hold
//!   nothing.
//! - **Key**: `refund-<order_id>-<payment_id>-<refunded so far>`, so a repeat
//!   of the same refund (a retry, a re-run after a crash) is the same
//!   request, and a refund that went through leaves nothing for a repeat to
//!   refund.
//! - **Settled** only when none of the payments is PENDING: the payment
//!   service may yet capture it, and then it must be refunded too.

use crate::domain::{Money, OrderId, OrderState};
use crate::downstream::{Downstreams, Failure, Payment, PaymentState};
use crate::store::OrderRecord;

use super::runner::Progress;

/// One refund to ask for.
#[derive(Debug, PartialEq, Eq)]
struct Refund<'a> {
    payment: &'a str,
    amount: Money,
    idempotency_key: String,
}

/// What settling an order's payments takes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan<'a> {
    refunds: Vec<Refund<'a>>,
    /// Payments whose outcome is not known yet.
    pending: Vec<&'a str>,
}

/// The refunds that give back what `payments` of `order` still hold.
fn plan(order: OrderId, payments: &[Payment]) -> Plan<'_> {
    let mut plan = Plan::default();
    for payment in payments {
        match payment.state {
            PaymentState::Pending => plan.pending.push(&payment.id),
            PaymentState::Captured | PaymentState::PartiallyRefunded => {
                let remaining = payment.amount.amount_minor - payment.refunded_minor;
                if remaining > 0 {
                    plan.refunds.push(Refund {
                        payment: &payment.id,
                        amount: Money {
                            currency: payment.amount.currency.clone(),
                            amount_minor: remaining,
                        },
                        idempotency_key: format!(
                            "refund-{order}-{}-{}",
                            payment.id, payment.refunded_minor
                        ),
                    });
                }
            }
            PaymentState::Refunded | PaymentState::Declined | PaymentState::Failed => {}
        }
    }
    plan
}

/// One try of REFUND_PAYMENT for `order`: refunds what its payments still
/// hold; settled once none is PENDING.
pub(super) async fn refund_order(
    downstreams: &Downstreams,
    order: &OrderRecord,
) -> Result<Progress, Failure> {
    let payments = match &order.payment_id {
        Some(id) => downstreams.payment(id).await?.into_iter().collect(),
        None => downstreams.payments_of(order.id).await?,
    };
    let plan = plan(order.id, &payments);
    let reason = reason(order);
    let mut done = Vec::new();
    for refund in &plan.refunds {
        downstreams
            .refund(
                refund.payment,
                &refund.amount,
                &reason,
                &refund.idempotency_key,
            )
            .await?;
        done.push(format!(
            "refunded {} {} of payment {}",
            refund.amount.amount_minor, refund.amount.currency, refund.payment
        ));
    }
    if !plan.pending.is_empty() {
        done.push(format!(
            "payment {} still pending at the provider; will refund it if it is captured",
            plan.pending.join(", ")
        ));
        return Ok(Progress {
            settled: false,
            detail: done.join("; "),
        });
    }
    Ok(Progress::settled(if done.is_empty() {
        "nothing captured: nothing to refund".to_owned()
    } else {
        done.join("; ")
    }))
}

/// Why the money goes back, for the payment's record.
fn reason(order: &OrderRecord) -> String {
    if order.state == OrderState::Cancelling {
        if order.cancel_reason.is_empty() {
            format!("order {} cancelled", order.id)
        } else {
            format!("order {} cancelled: {}", order.id, order.cancel_reason)
        }
    } else {
        format!("order {} failed: {}", order.id, order.failure_reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(id: &str, state: PaymentState, amount: i64, refunded: i64) -> Payment {
        Payment {
            id: id.to_owned(),
            state,
            amount: Money {
                currency: "EUR".to_owned(),
                amount_minor: amount,
            },
            refunded_minor: refunded,
        }
    }

    fn eur(amount_minor: i64) -> Money {
        Money {
            currency: "EUR".to_owned(),
            amount_minor,
        }
    }

    #[test]
    fn what_is_captured_and_not_yet_refunded_goes_back() {
        let order = OrderId::new();
        let payments = [
            payment("p1", PaymentState::Captured, 1000, 0),
            payment("p2", PaymentState::PartiallyRefunded, 1000, 300),
        ];
        let plan = plan(order, &payments);
        assert_eq!(
            plan.refunds,
            vec![
                Refund {
                    payment: "p1",
                    amount: eur(1000),
                    idempotency_key: format!("refund-{order}-p1-0"),
                },
                Refund {
                    payment: "p2",
                    amount: eur(700),
                    idempotency_key: format!("refund-{order}-p2-300"),
                },
            ]
        );
        assert!(plan.pending.is_empty());
    }

    #[test]
    fn payments_that_hold_nothing_are_left_alone() {
        let payments = [
            payment("p1", PaymentState::Refunded, 1000, 1000),
            payment("p2", PaymentState::Declined, 1000, 0),
            payment("p3", PaymentState::Failed, 1000, 0),
            // Refunded in full, but the state was read before it moved.
            payment("p4", PaymentState::PartiallyRefunded, 1000, 1000),
        ];
        assert_eq!(plan(OrderId::new(), &payments), Plan::default());
    }

    #[test]
    fn a_pending_payment_keeps_the_money_unsettled() {
        let payments = [
            payment("p1", PaymentState::Pending, 1000, 0),
            payment("p2", PaymentState::Captured, 500, 0),
        ];
        let plan = plan(OrderId::new(), &payments);
        assert_eq!(plan.pending, vec!["p1"]);
        assert_eq!(
            plan.refunds.len(),
            1,
            "what is captured goes back meanwhile"
        );
    }
}
