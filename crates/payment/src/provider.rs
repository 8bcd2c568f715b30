//! The seam between Agora and whoever actually moves money.
//!
//! [`PaymentProvider`] is what a card gateway adapter implements; the service
//! ships [`crate::gateway::TestGateway`], a deterministic in-memory stand-in.
//! Every instruction carries an idempotency key of its own (derived from our
//! payment or refund id), which real gateways honour: sending the same
//! instruction twice has the effect of sending it once and returns the first
//! answer. That is what lets a PENDING payment be re-driven after a crash or a
//! lost answer without ever charging twice.
//!
//! The trait is object safe (`Arc<dyn PaymentProvider>`); implement it with
//! the re-exported [`async_trait`] attribute:
//!
//! ```
//! use agora_payment::provider::*;
//!
//! #[derive(Debug)]
//! struct AlwaysDown;
//!
//! #[async_trait]
//! impl PaymentProvider for AlwaysDown {
//!     async fn charge(&self, _: &ChargeInstruction) -> Result<ChargeOutcome, ProviderError> {
//!         Err(ProviderError::Unavailable("gateway down".into()))
//!     }
//!     async fn refund(&self, _: &RefundInstruction) -> Result<RefundOutcome, ProviderError> {
//!         Err(ProviderError::Unavailable("gateway down".into()))
//!     }
//! }
//! ```

use crate::domain::{Money, PaymentId, PaymentMethodToken, RefundId};

/// The attribute that makes `async fn` in [`PaymentProvider`] impls object
/// safe (re-exported so implementers need no extra dependency).
pub use tonic::async_trait;

/// Take money: one charge, authorised and captured at once.
#[derive(Clone, Debug)]
pub struct ChargeInstruction {
    /// The provider-side idempotency key: the same for every attempt of one
    /// payment, different for every payment.
    pub idempotency_key: String,
    /// Our payment, for the provider's records.
    pub payment_id: PaymentId,
    /// How much.
    pub amount: Money,
    /// The customer's payment method.
    pub payment_method_token: PaymentMethodToken,
}

impl ChargeInstruction {
    /// The provider key of a payment's charge.
    pub fn key_for(payment_id: PaymentId) -> String {
        format!("agora-charge-{payment_id}")
    }
}

/// Return money from an earlier charge.
#[derive(Clone, Debug)]
pub struct RefundInstruction {
    /// The provider-side idempotency key: the same for every attempt of one
    /// refund.
    pub idempotency_key: String,
    /// Our refund, for the provider's records.
    pub refund_id: RefundId,
    /// The provider's reference of the charge being refunded.
    pub charge_reference: String,
    /// How much (in the charge's currency).
    pub amount: Money,
}

impl RefundInstruction {
    /// The provider key of a refund.
    pub fn key_for(refund_id: RefundId) -> String {
        format!("agora-refund-{refund_id}")
    }
}

/// The provider's final answer to a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The money was taken.
    Approved {
        /// The provider's id for the charge.
        provider_reference: String,
    },
    /// The card network or issuer refused; no money was taken.
    Declined {
        /// A stable lower-snake-case code such as `card_declined`.
        reason: String,
        /// The provider's id for the attempt.
        provider_reference: String,
    },
    /// The provider refused the request itself (an unknown or unusable payment
    /// method, for example); no money was taken and retrying cannot help.
    Rejected {
        /// A stable lower-snake-case code such as `invalid_payment_method`.
        reason: String,
    },
}

/// The provider's final answer to a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The money was returned.
    Refunded {
        /// The provider's id for the refund.
        provider_reference: String,
    },
    /// The provider refused the refund; nothing was returned.
    Rejected {
        /// A stable lower-snake-case code.
        reason: String,
    },
}

/// A provider call that did not produce a final answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached, timed out or failed transiently.
    /// The instruction may or may not have taken effect; repeating it with
    /// the same idempotency key is safe and settles which.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
}

/// A payment gateway. Implementations must honour
/// [`ChargeInstruction::idempotency_key`] and
/// [`RefundInstruction::idempotency_key`]: a repeated key returns the first
/// final answer and moves no more money.
#[async_trait]
pub trait PaymentProvider: Send + Sync + std::fmt::Debug + 'static {
    /// Authorises and captures a charge.
    async fn charge(&self, instruction: &ChargeInstruction)
    -> Result<ChargeOutcome, ProviderError>;

    /// Refunds part or all of a captured charge.
    async fn refund(&self, instruction: &RefundInstruction)
    -> Result<RefundOutcome, ProviderError>;
}
