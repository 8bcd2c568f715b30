//! Payment providers that fail on purpose, in front of the shipped test
//! gateway: the one double every test that needs a failing provider uses.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use agora_payment::TestGateway;
use agora_payment::provider::{
    ChargeInstruction, ChargeOutcome, PaymentProvider, ProviderError, RefundInstruction,
    RefundOutcome, async_trait,
};

/// Failures that never run out.
pub const ALWAYS: u32 = u32::MAX;

/// Fails the next charges and refunds it is told to with a transient error
/// before they reach the gateway (nothing happens there), then passes calls
/// through; records every provider key it is given.
#[derive(Debug)]
pub struct FlakyProvider {
    /// The gateway behind it, which counts what really happened.
    pub gateway: Arc<TestGateway>,
    charge_failures: AtomicU32,
    refund_failures: AtomicU32,
    /// Provider keys of every charge asked for, failed ones included.
    pub charge_keys: Mutex<Vec<String>>,
    /// Provider keys of every refund asked for, failed ones included.
    pub refund_keys: Mutex<Vec<String>>,
}

impl FlakyProvider {
    /// A provider that fails nothing (yet) in front of `gateway`.
    pub fn new(gateway: Arc<TestGateway>) -> Self {
        Self {
            gateway,
            charge_failures: AtomicU32::new(0),
            refund_failures: AtomicU32::new(0),
            charge_keys: Mutex::default(),
            refund_keys: Mutex::default(),
        }
    }

    /// Fails the next `n` charges ([`ALWAYS`]: every one).
    pub fn failing_charges(self, n: u32) -> Self {
        self.charge_failures.store(n, Ordering::SeqCst);
        self
    }

    /// Fails the next `n` refunds ([`ALWAYS`]: every one).
    pub fn failing_refunds(self, n: u32) -> Self {
        self.refund_failures.store(n, Ordering::SeqCst);
        self
    }

    /// The provider is back: no more failures.
    pub fn recover(&self) {
        self.charge_failures.store(0, Ordering::SeqCst);
        self.refund_failures.store(0, Ordering::SeqCst);
    }

    /// Charges that took money at the gateway.
    pub fn captures(&self) -> u64 {
        self.gateway.captures()
    }

    /// Refunds that returned money at the gateway.
    pub fn refunds(&self) -> u64 {
        self.gateway.refunds_made()
    }
}

/// Takes one failure from `budget`; true when this call must fail.
fn fail_now(budget: &AtomicU32) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
            0 => None,
            ALWAYS => Some(ALWAYS),
            n => Some(n - 1),
        })
        .is_ok()
}

#[async_trait]
impl PaymentProvider for FlakyProvider {
    async fn charge(
        &self,
        instruction: &ChargeInstruction,
    ) -> Result<ChargeOutcome, ProviderError> {
        self.charge_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(instruction.idempotency_key.clone());
        if fail_now(&self.charge_failures) {
            return Err(ProviderError::Unavailable("provider down (test)".into()));
        }
        self.gateway.charge(instruction).await
    }

    async fn refund(
        &self,
        instruction: &RefundInstruction,
    ) -> Result<RefundOutcome, ProviderError> {
        self.refund_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(instruction.idempotency_key.clone());
        if fail_now(&self.refund_failures) {
            return Err(ProviderError::Unavailable("provider down (test)".into()));
        }
        self.gateway.refund(instruction).await
    }
}
