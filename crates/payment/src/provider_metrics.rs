//! Payments by outcome on the payment service's `/metrics`, counted where
//! money moves: every answer of the [`PaymentProvider`].
//!
//! | metric | labels | meaning |
//! | --- | --- | --- |
//! | `agora_payments_total` | `operation` (`charge`, `refund`), `outcome` (`captured`, `declined`, `rejected`, `refunded`, `unavailable`) | provider answers, one per attempt |
//!
//! A payment normally gets one answer; an `unavailable` one is tried again
//! (by the caller's retry or the reconciler) and its next answer counts too.

use std::sync::Arc;

use agora_interceptors::metrics::GrpcMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::provider::{
    ChargeInstruction, ChargeOutcome, PaymentProvider, ProviderError, RefundInstruction,
    RefundOutcome, async_trait,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PaymentLabels {
    operation: &'static str,
    outcome: &'static str,
}

/// A provider whose answers are counted; answers pass through unchanged.
#[derive(Debug)]
pub struct CountedProvider {
    inner: Arc<dyn PaymentProvider>,
    payments: Family<PaymentLabels, Counter>,
}

impl CountedProvider {
    /// `inner`, counted into `metrics`.
    pub fn new(inner: Arc<dyn PaymentProvider>, metrics: &GrpcMetrics) -> Self {
        let payments = Family::default();
        metrics.register(
            "agora_payments",
            "Answers of the payment provider by operation (charge, refund) and outcome",
            payments.clone(),
        );
        Self { inner, payments }
    }

    fn count(&self, operation: &'static str, outcome: &'static str) {
        self.payments
            .get_or_create(&PaymentLabels { operation, outcome })
            .inc();
    }
}

#[async_trait]
impl PaymentProvider for CountedProvider {
    async fn charge(
        &self,
        instruction: &ChargeInstruction,
    ) -> Result<ChargeOutcome, ProviderError> {
        let answer = self.inner.charge(instruction).await;
        self.count(
            "charge",
            match &answer {
                Ok(ChargeOutcome::Approved { .. }) => "captured",
                Ok(ChargeOutcome::Declined { .. }) => "declined",
                Ok(ChargeOutcome::Rejected { .. }) => "rejected",
                Err(ProviderError::Unavailable(_)) => "unavailable",
            },
        );
        answer
    }

    async fn refund(
        &self,
        instruction: &RefundInstruction,
    ) -> Result<RefundOutcome, ProviderError> {
        let answer = self.inner.refund(instruction).await;
        self.count(
            "refund",
            match &answer {
                Ok(RefundOutcome::Refunded { .. }) => "refunded",
                Ok(RefundOutcome::Rejected { .. }) => "rejected",
                Err(ProviderError::Unavailable(_)) => "unavailable",
            },
        );
        answer
    }
}
