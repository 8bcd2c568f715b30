//! The shipped [`PaymentProvider`]: a deterministic, in-memory test gateway
//! that answers by payment-method token the way card networks' test tokens do.
//! It makes no network calls.
//!
//! | token | answer |
//! | --- | --- |
//! | `tok_visa` | approved |
//! | `tok_declined` | declined, reason `card_declined` |
//! | `tok_insufficient_funds` | declined, reason `insufficient_funds` |
//! | `tok_processing_error` | transient failure (the service answers UNAVAILABLE) |
//! | `tok_slow` | approved after the configured delay |
//! | anything else | rejected, reason `invalid_payment_method` (payment FAILED) |
//!
//! Like a real gateway it remembers every idempotency key it has answered
//! finally (in memory, for the life of the value) and answers a repeat with
//! the first answer, moving no more money. It counts calls and captures so
//! tests can assert "exactly one provider call, exactly one capture".

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::provider::{
    ChargeInstruction, ChargeOutcome, PaymentProvider, ProviderError, RefundInstruction,
    RefundOutcome, async_trait,
};

/// Approves.
pub const TOK_VISA: &str = "tok_visa";
/// Declines with `card_declined`.
pub const TOK_DECLINED: &str = "tok_declined";
/// Declines with `insufficient_funds`.
pub const TOK_INSUFFICIENT_FUNDS: &str = "tok_insufficient_funds";
/// Fails transiently, every time.
pub const TOK_PROCESSING_ERROR: &str = "tok_processing_error";
/// Approves after the configured delay.
pub const TOK_SLOW: &str = "tok_slow";

/// The deterministic test gateway.
#[derive(Debug)]
pub struct TestGateway {
    slow_delay: Duration,
    charge_calls: AtomicU64,
    refund_calls: AtomicU64,
    ledger: Mutex<Ledger>,
}

/// What the gateway remembers: final answers by idempotency key, and the
/// money it moved.
#[derive(Debug, Default)]
struct Ledger {
    charges: HashMap<String, ChargeOutcome>,
    refunds: HashMap<String, RefundOutcome>,
    /// Captured charges by reference: (amount, currency, refunded so far).
    captured: HashMap<String, (i64, String, i64)>,
    captures: u64,
    refunds_made: u64,
    next_reference: u64,
}

impl Ledger {
    fn reference(&mut self, prefix: &str) -> String {
        self.next_reference += 1;
        format!("{prefix}_test_{:06}", self.next_reference)
    }
}

impl TestGateway {
    /// A gateway whose `tok_slow` answers after `slow_delay`.
    pub fn new(slow_delay: Duration) -> Self {
        Self {
            slow_delay,
            charge_calls: AtomicU64::new(0),
            refund_calls: AtomicU64::new(0),
            ledger: Mutex::new(Ledger::default()),
        }
    }

    /// Charge calls received, repeats included.
    pub fn charge_calls(&self) -> u64 {
        self.charge_calls.load(Ordering::SeqCst)
    }

    /// Refund calls received, repeats included.
    pub fn refund_calls(&self) -> u64 {
        self.refund_calls.load(Ordering::SeqCst)
    }

    /// Charges that took money (each idempotency key at most once).
    pub fn captures(&self) -> u64 {
        self.lock().captures
    }

    /// Refunds that returned money (each idempotency key at most once).
    pub fn refunds_made(&self) -> u64 {
        self.lock().refunds_made
    }

    /// Minor units refunded so far against a captured charge.
    pub fn refunded_against(&self, charge_reference: &str) -> Option<i64> {
        self.lock()
            .captured
            .get(charge_reference)
            .map(|(_, _, refunded)| *refunded)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave the ledger half-written
        // (every update is a few plain assignments), so poisoning is ignored.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for TestGateway {
    fn default() -> Self {
        Self::new(Duration::from_secs(3))
    }
}

#[async_trait]
impl PaymentProvider for TestGateway {
    async fn charge(
        &self,
        instruction: &ChargeInstruction,
    ) -> Result<ChargeOutcome, ProviderError> {
        self.charge_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(answer) = self.lock().charges.get(&instruction.idempotency_key) {
            return Ok(answer.clone());
        }
        let token = instruction.payment_method_token.as_str();
        let decline = |reason: &str| (Some(reason.to_owned()), None);
        let (declined, rejected) = match token {
            TOK_VISA => (None, None),
            TOK_SLOW => {
                tokio::time::sleep(self.slow_delay).await;
                (None, None)
            }
            TOK_DECLINED => decline("card_declined"),
            TOK_INSUFFICIENT_FUNDS => decline("insufficient_funds"),
            TOK_PROCESSING_ERROR => {
                return Err(ProviderError::Unavailable(
                    "test gateway: processing error".into(),
                ));
            }
            _ => (None, Some("invalid_payment_method".to_owned())),
        };

        let mut ledger = self.lock();
        // A concurrent call with the same key may have answered while this one
        // slept: the first answer stands.
        if let Some(answer) = ledger.charges.get(&instruction.idempotency_key) {
            return Ok(answer.clone());
        }
        let outcome = match (declined, rejected) {
            (Some(reason), _) => ChargeOutcome::Declined {
                reason,
                provider_reference: ledger.reference("ch"),
            },
            (None, Some(reason)) => ChargeOutcome::Rejected { reason },
            (None, None) => {
                let reference = ledger.reference("ch");
                ledger.captures += 1;
                ledger.captured.insert(
                    reference.clone(),
                    (
                        instruction.amount.amount.get(),
                        instruction.amount.currency.to_string(),
                        0,
                    ),
                );
                ChargeOutcome::Approved {
                    provider_reference: reference,
                }
            }
        };
        ledger
            .charges
            .insert(instruction.idempotency_key.clone(), outcome.clone());
        Ok(outcome)
    }

    async fn refund(
        &self,
        instruction: &RefundInstruction,
    ) -> Result<RefundOutcome, ProviderError> {
        self.refund_calls.fetch_add(1, Ordering::SeqCst);
        let mut ledger = self.lock();
        if let Some(answer) = ledger.refunds.get(&instruction.idempotency_key) {
            return Ok(answer.clone());
        }
        let amount = instruction.amount.amount.get();
        let outcome = match ledger.captured.get_mut(&instruction.charge_reference) {
            None => RefundOutcome::Rejected {
                reason: "unknown_charge".into(),
            },
            Some((_, currency, _)) if currency != instruction.amount.currency.as_str() => {
                RefundOutcome::Rejected {
                    reason: "currency_mismatch".into(),
                }
            }
            Some((captured, _, refunded)) if *refunded + amount > *captured => {
                RefundOutcome::Rejected {
                    reason: "amount_exceeds_charge".into(),
                }
            }
            Some((_, _, refunded)) => {
                *refunded += amount;
                ledger.refunds_made += 1;
                RefundOutcome::Refunded {
                    provider_reference: ledger.reference("re"),
                }
            }
        };
        ledger
            .refunds
            .insert(instruction.idempotency_key.clone(), outcome.clone());
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AmountMinor, Currency, Money, PaymentId, PaymentMethodToken, RefundId};

    fn charge(key: &str, token: &str, amount: i64) -> ChargeInstruction {
        ChargeInstruction {
            idempotency_key: key.into(),
            payment_id: PaymentId::new(),
            amount: Money {
                amount: AmountMinor::parse(amount).unwrap(),
                currency: Currency::parse("USD").unwrap(),
            },
            payment_method_token: PaymentMethodToken::parse(token).unwrap(),
        }
    }

    fn refund(key: &str, reference: &str, amount: i64) -> RefundInstruction {
        RefundInstruction {
            idempotency_key: key.into(),
            refund_id: RefundId::new(),
            charge_reference: reference.into(),
            amount: Money {
                amount: AmountMinor::parse(amount).unwrap(),
                currency: Currency::parse("USD").unwrap(),
            },
        }
    }

    #[tokio::test]
    async fn answers_by_token_and_remembers_keys() {
        let gateway = TestGateway::new(Duration::from_millis(1));
        let first = gateway.charge(&charge("a", TOK_VISA, 500)).await.unwrap();
        let again = gateway.charge(&charge("a", TOK_VISA, 500)).await.unwrap();
        assert_eq!(first, again);
        assert_eq!((gateway.charge_calls(), gateway.captures()), (2, 1));

        assert!(matches!(
            gateway.charge(&charge("b", TOK_DECLINED, 1)).await.unwrap(),
            ChargeOutcome::Declined { reason, .. } if reason == "card_declined"
        ));
        assert!(matches!(
            gateway.charge(&charge("c", TOK_INSUFFICIENT_FUNDS, 1)).await.unwrap(),
            ChargeOutcome::Declined { reason, .. } if reason == "insufficient_funds"
        ));
        assert!(matches!(
            gateway
                .charge(&charge("d", "tok_nonsense", 1))
                .await
                .unwrap(),
            ChargeOutcome::Rejected { .. }
        ));
        assert!(
            gateway
                .charge(&charge("e", TOK_PROCESSING_ERROR, 1))
                .await
                .is_err()
        );
        assert!(matches!(
            gateway.charge(&charge("f", TOK_SLOW, 1)).await.unwrap(),
            ChargeOutcome::Approved { .. }
        ));
        assert_eq!(gateway.captures(), 2);
    }

    #[tokio::test]
    async fn refunds_never_exceed_the_charge() {
        let gateway = TestGateway::default();
        let ChargeOutcome::Approved { provider_reference } =
            gateway.charge(&charge("a", TOK_VISA, 500)).await.unwrap()
        else {
            panic!("approved");
        };
        let ok = gateway
            .refund(&refund("r1", &provider_reference, 300))
            .await
            .unwrap();
        assert!(matches!(ok, RefundOutcome::Refunded { .. }));
        assert_eq!(
            gateway
                .refund(&refund("r1", &provider_reference, 300))
                .await
                .unwrap(),
            ok
        );
        assert!(matches!(
            gateway
                .refund(&refund("r2", &provider_reference, 201))
                .await
                .unwrap(),
            RefundOutcome::Rejected { .. }
        ));
        assert_eq!(gateway.refunded_against(&provider_reference), Some(300));
        assert_eq!(gateway.refunds_made(), 1);
    }
}
