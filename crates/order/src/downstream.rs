//! The order service's calls to user, inventory and payment, through the
//! shared calling stack (`agora_interceptors::client::Downstream`: deadline
//! propagation, retries of idempotent calls on UNAVAILABLE, circuit breaker,
//! service credentials).
//!
//! Generated types stop here: each call takes domain values and answers
//! either what was asked, in domain values, or a [`Failure`] that says
//! whether to retry and what the try may have done downstream ([`Effect`]).
//! These are plain calls: what to ask for, and what an answer means for the
//! order, is the saga's to decide. Every saga call is idempotent by the order
//! id or a key derived from it, which is what makes retries, and re-running a
//! step after a crash, safe:
//! - ReserveStock / CommitReservation / ReleaseReservation: by `order_id`;
//! - Charge: `idempotency_key = "charge-<order_id>"`;
//! - Refund: by the key the saga gives ([`Downstreams::refund`]).

use std::sync::Arc;
use std::time::Duration;

use agora_interceptors::client::{BearerSource, Downstream, DownstreamChannel};
use agora_interceptors::metrics::GrpcMetrics;
use agora_proto::inventory::v1 as inv;
use agora_proto::payment::v1 as pay;
use agora_proto::user::v1 as usr;
use inv::inventory_service_client::InventoryServiceClient;
use pay::payment_service_client::PaymentServiceClient;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use usr::user_service_client::UserServiceClient;

use crate::domain::{CustomerId, Money, OrderId, PaymentToken, Quantity, Sku};
use crate::steps::{Effect, Prices};

/// The downstream methods the saga may repeat: all of them, since each is
/// idempotent by order id or key.
const RETRYABLE: &[&str] = &[
    "/agora.inventory.v1.InventoryService/ReserveStock",
    "/agora.inventory.v1.InventoryService/CommitReservation",
    "/agora.inventory.v1.InventoryService/ReleaseReservation",
    "/agora.payment.v1.PaymentService/Charge",
    "/agora.payment.v1.PaymentService/Refund",
    "/agora.payment.v1.PaymentService/GetPayment",
    "/agora.payment.v1.PaymentService/ListPayments",
    "/agora.user.v1.UserService/GetUser",
];

/// Where the downstreams are and how to call them.
#[derive(Clone, Debug)]
pub struct DownstreamSettings {
    /// `http://host:port` of the user service.
    pub user_url: String,
    /// `http://host:port` of the inventory service.
    pub inventory_url: String,
    /// `http://host:port` of the payment service.
    pub payment_url: String,
    /// Longest one try of one call may take.
    pub attempt_timeout: Duration,
    /// Longest one charge try may take (the provider's latency and more).
    pub charge_timeout: Duration,
    /// How long inventory holds reserved stock before releasing it itself.
    pub reservation_ttl: Duration,
    /// TLS for `https://` addresses (mutual TLS with a client identity).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Why a call did not do what the saga asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Worth another try (with the same key) after a backoff.
    pub retry: bool,
    /// What this try may have done downstream.
    pub effect: Effect,
    /// Stable code for `Order.failure_reason` if the order fails of this.
    pub reason: &'static str,
    /// For people: what went wrong.
    pub message: String,
    /// The downstream may still be deciding: the try ran out of time, or
    /// another try with the same key is still in progress there. Asking
    /// again with the key finds out (see the saga's charge step).
    pub unresolved: bool,
}

impl Failure {
    /// A business refusal that settles the key: nothing was or will be done.
    fn refused(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            retry: false,
            effect: Effect::Refused,
            reason,
            message: message.into(),
            unresolved: false,
        }
    }

    /// Classifies an RPC error by its code alone. `reason` names the failure
    /// for the order should this end the step.
    fn from_status(status: &Status, service: &str, reason: &'static str) -> Self {
        let (retry, effect) = match status.code() {
            // The call was refused before doing anything; worth another try.
            Code::Unavailable | Code::ResourceExhausted => (true, Effect::None),
            // The answer was lost: the call may have run. Retrying with the
            // same key is safe and tells us.
            Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted => {
                (true, Effect::Unknown)
            }
            // A bug somewhere; what happened is unknown, another try will not help.
            Code::Internal | Code::DataLoss => (false, Effect::Unknown),
            // Refused as asked (bad request, credentials, state).
            _ => (false, Effect::None),
        };
        let unresolved = matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled)
            || status
                .get_details_error_info()
                .is_some_and(|info| info.reason == "CHARGE_IN_PROGRESS");
        Self {
            retry,
            effect,
            reason,
            unresolved,
            message: format!(
                "{service} answered {:?}: {}",
                status.code(),
                status.message()
            ),
        }
    }
}

/// What a charge came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charged {
    /// The payment's id.
    pub payment_id: String,
}

/// A payment, as the payment service reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// Its id.
    pub id: String,
    /// Where it stands.
    pub state: PaymentState,
    /// The amount charged.
    pub amount: Money,
    /// How much of it has been refunded, in the same currency's minor units.
    pub refunded_minor: i64,
}

/// Where a payment stands (`agora.payment.v1.PaymentState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentState {
    /// The provider's answer is outstanding: it may yet be captured. A state
    /// this service does not know is read as this one (never as settled).
    Pending,
    /// The amount was taken.
    Captured,
    /// The amount was taken and part of it given back.
    PartiallyRefunded,
    /// The amount was taken and all of it given back.
    Refunded,
    /// The provider refused the charge: nothing was taken.
    Declined,
    /// The charge could not be made: nothing was taken.
    Failed,
}

/// Typed clients of the three downstreams.
#[derive(Clone, Debug)]
pub struct Downstreams {
    user: UserServiceClient<DownstreamChannel>,
    inventory: InventoryServiceClient<DownstreamChannel>,
    payment: PaymentServiceClient<DownstreamChannel>,
    attempt_timeout: Duration,
    charge_timeout: Duration,
    reservation_ttl: Duration,
}

impl Downstreams {
    /// Channels to the three services, authenticated with `credentials` and
    /// measured in `metrics`. Connections are made lazily.
    pub fn connect(
        settings: &DownstreamSettings,
        credentials: Arc<dyn BearerSource>,
        metrics: &GrpcMetrics,
    ) -> anyhow::Result<Self> {
        let channel = |name: &str, url: &str| {
            Downstream::builder(name, url)
                .retryable(RETRYABLE)
                .tls(settings.tls.clone())
                .bearer(credentials.clone())
                .metrics(metrics)
                .build()
        };
        Ok(Self {
            user: UserServiceClient::new(channel("user", &settings.user_url)?),
            inventory: InventoryServiceClient::new(channel("inventory", &settings.inventory_url)?),
            payment: PaymentServiceClient::new(channel("payment", &settings.payment_url)?),
            attempt_timeout: settings.attempt_timeout,
            charge_timeout: settings.charge_timeout,
            reservation_ttl: settings.reservation_ttl,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.attempt_timeout);
        request
    }

    /// Whether the user service still knows the account. Errors other than
    /// NOT_FOUND are returned as they are.
    pub async fn account_exists(&self, customer: CustomerId) -> Result<bool, Status> {
        let answer = self
            .user
            .clone()
            .get_user(self.request(usr::GetUserRequest {
                user_id: customer.to_string(),
            }))
            .await;
        match answer {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(status),
        }
    }

    /// ReserveStock for the order's lines: the prices and total on success.
    pub async fn reserve(
        &self,
        order: OrderId,
        lines: &[(Sku, Quantity)],
    ) -> Result<Prices, Failure> {
        let ttl = prost_types::Duration::try_from(self.reservation_ttl).unwrap_or_default();
        let answer = self
            .inventory
            .clone()
            .reserve_stock(
                self.request(inv::ReserveStockRequest {
                    order_id: order.to_string(),
                    lines: lines
                        .iter()
                        .map(|(sku, quantity)| inv::ReservationLine {
                            sku: sku.as_str().to_owned(),
                            quantity: quantity.get(),
                            unit_price: None,
                        })
                        .collect(),
                    ttl: Some(ttl),
                }),
            )
            .await;
        let reservation = match answer {
            Ok(response) => response.into_inner().reservation.unwrap_or_default(),
            Err(status) => return Err(reserve_failure(&status)),
        };
        let state = inv::ReservationState::try_from(reservation.state)
            .unwrap_or(inv::ReservationState::Unspecified);
        if !matches!(
            state,
            inv::ReservationState::Held | inv::ReservationState::Committed
        ) {
            // Found from an earlier try but no longer holding anything: the
            // hold expired while this saga was stalled.
            return Err(Failure {
                retry: false,
                effect: Effect::Unknown,
                reason: "RESERVATION_EXPIRED",
                message: format!("the stock reservation is {}", state.as_str_name()),
                unresolved: false,
            });
        }
        prices_of(lines, &reservation).map_err(|message| Failure {
            retry: false,
            effect: Effect::Unknown,
            reason: "INTERNAL",
            message,
            unresolved: false,
        })
    }

    /// Charge the total, once per order.
    pub async fn charge(
        &self,
        order: OrderId,
        customer: CustomerId,
        total: &Money,
        token: &PaymentToken,
    ) -> Result<Charged, Failure> {
        let mut request = self.request(pay::ChargeRequest {
            order_id: order.to_string(),
            user_id: customer.to_string(),
            amount: Some(to_money(total)),
            payment_method_token: token.expose().to_owned(),
            idempotency_key: format!("charge-{order}"),
        });
        request.set_timeout(self.charge_timeout);
        let answer = self.payment.clone().charge(request).await;
        let payment = match answer {
            Ok(response) => response.into_inner().payment.unwrap_or_default(),
            Err(status) => {
                let mut failure = Failure::from_status(&status, "payment", "PAYMENT_UNAVAILABLE");
                if failure.retry {
                    // Even a refused try may have left a PENDING payment that
                    // the payment service completes later on its own:
                    // compensation must look.
                    failure.effect = Effect::Unknown;
                } else {
                    // The key was refused (e.g. reused with another amount):
                    // not the customer's doing. Whether money moved is
                    // checked by the refund that follows.
                    failure.reason = "PAYMENT_FAILED";
                    failure.effect = Effect::Unknown;
                }
                return Err(failure);
            }
        };
        match pay::PaymentState::try_from(payment.state).unwrap_or(pay::PaymentState::Unspecified) {
            pay::PaymentState::Captured
            | pay::PaymentState::PartiallyRefunded
            | pay::PaymentState::Refunded => Ok(Charged {
                payment_id: payment.payment_id,
            }),
            pay::PaymentState::Declined => Err(Failure::refused(
                "PAYMENT_DECLINED",
                format!(
                    "the payment was declined ({}); payment {}",
                    payment.decline_reason, payment.payment_id
                ),
            )),
            pay::PaymentState::Failed => Err(Failure::refused(
                "PAYMENT_FAILED",
                format!(
                    "the payment could not be made ({}); payment {}",
                    payment.decline_reason, payment.payment_id
                ),
            )),
            // Recorded but unanswered: ask again with the same key.
            pay::PaymentState::Pending | pay::PaymentState::Unspecified => Err(Failure {
                retry: true,
                effect: Effect::Unknown,
                reason: "PAYMENT_UNAVAILABLE",
                message: "the payment is still pending at the provider".into(),
                unresolved: false,
            }),
        }
    }

    /// CommitReservation: the stock is sold.
    pub async fn commit(&self, order: OrderId) -> Result<String, Failure> {
        let answer = self
            .inventory
            .clone()
            .commit_reservation(self.request(inv::CommitReservationRequest {
                order_id: order.to_string(),
            }))
            .await;
        match answer {
            Ok(response) => Ok(describe_reservation(response.into_inner().reservation)),
            Err(status) => Err(Failure::from_status(&status, "inventory", "COMMIT_FAILED")),
        }
    }

    /// ReleaseReservation: held stock back to available, sold stock back on
    /// hand. An order with no reservation has nothing to release.
    pub async fn release(&self, order: OrderId) -> Result<String, Failure> {
        let answer = self
            .inventory
            .clone()
            .release_reservation(self.request(inv::ReleaseReservationRequest {
                order_id: order.to_string(),
            }))
            .await;
        match answer {
            Ok(response) => Ok(describe_reservation(response.into_inner().reservation)),
            Err(status) if status.code() == Code::NotFound => {
                Ok("no reservation: nothing to release".to_owned())
            }
            Err(status) => Err(Failure::from_status(&status, "inventory", "INTERNAL")),
        }
    }

    /// GetPayment: the payment with this id, if the payment service answers
    /// with one.
    pub async fn payment(&self, id: &str) -> Result<Option<Payment>, Failure> {
        let answer = self
            .payment
            .clone()
            .get_payment(self.request(pay::GetPaymentRequest {
                payment_id: id.to_owned(),
            }))
            .await
            .map_err(|status| payment_failure(&status))?;
        Ok(answer.into_inner().payment.map(payment_of))
    }

    /// ListPayments: the payments the payment service has for the order (the
    /// first hundred; the saga charges an order under one key, so one is
    /// expected).
    pub async fn payments_of(&self, order: OrderId) -> Result<Vec<Payment>, Failure> {
        let answer = self
            .payment
            .clone()
            .list_payments(self.request(pay::ListPaymentsRequest {
                order_id: order.to_string(),
                user_id: String::new(),
                page_size: 100,
                page_token: String::new(),
            }))
            .await
            .map_err(|status| payment_failure(&status))?;
        Ok(answer
            .into_inner()
            .payments
            .into_iter()
            .map(payment_of)
            .collect())
    }

    /// Refund: gives `amount` of `payment` back, once per `idempotency_key`.
    pub async fn refund(
        &self,
        payment: &str,
        amount: &Money,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<(), Failure> {
        self.payment
            .clone()
            .refund(self.request(pay::RefundRequest {
                payment_id: payment.to_owned(),
                amount: Some(to_money(amount)),
                reason: reason.to_owned(),
                idempotency_key: idempotency_key.to_owned(),
            }))
            .await
            .map_err(|status| payment_failure(&status))?;
        Ok(())
    }
}

/// Why a payment read or refund failed.
fn payment_failure(status: &Status) -> Failure {
    Failure::from_status(status, "payment", "INTERNAL")
}

/// A payment in the order's terms.
fn payment_of(payment: pay::Payment) -> Payment {
    let state = match pay::PaymentState::try_from(payment.state)
        .unwrap_or(pay::PaymentState::Unspecified)
    {
        pay::PaymentState::Pending | pay::PaymentState::Unspecified => PaymentState::Pending,
        pay::PaymentState::Captured => PaymentState::Captured,
        pay::PaymentState::PartiallyRefunded => PaymentState::PartiallyRefunded,
        pay::PaymentState::Refunded => PaymentState::Refunded,
        pay::PaymentState::Declined => PaymentState::Declined,
        pay::PaymentState::Failed => PaymentState::Failed,
    };
    Payment {
        id: payment.payment_id,
        state,
        amount: from_money(&payment.amount.unwrap_or_default()),
        refunded_minor: payment.refunded_amount.map_or(0, |m| m.amount_minor),
    }
}

/// Why a reservation failed, in the order's terms.
fn reserve_failure(status: &Status) -> Failure {
    match status.code() {
        Code::FailedPrecondition => {
            let short = status
                .get_details_precondition_failure()
                .map(|failure| {
                    failure
                        .violations
                        .into_iter()
                        .filter(|v| v.r#type == "STOCK")
                        .map(|v| format!("{}: {}", v.subject, v.description))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let reason = status
                .get_details_error_info()
                .map(|info| info.reason)
                .unwrap_or_default();
            if !short.is_empty() {
                Failure::refused(
                    "OUT_OF_STOCK",
                    format!("not enough stock: {}", short.join("; ")),
                )
            } else if reason.contains("CURRENC") {
                Failure::refused("MIXED_CURRENCY", status.message().to_owned())
            } else {
                Failure::refused("RESERVATION_REFUSED", status.message().to_owned())
            }
        }
        Code::NotFound => Failure::refused("UNKNOWN_SKU", status.message().to_owned()),
        _ => Failure::from_status(status, "inventory", "INVENTORY_UNAVAILABLE"),
    }
}

/// The unit price of every ordered line and the total, from the reservation.
fn prices_of(lines: &[(Sku, Quantity)], reservation: &inv::Reservation) -> Result<Prices, String> {
    let total = reservation
        .total
        .as_ref()
        .ok_or("the reservation has no total")?;
    let mut priced = Vec::with_capacity(lines.len());
    for (sku, _) in lines {
        let price = reservation
            .lines
            .iter()
            .find(|line| line.sku == sku.as_str())
            .and_then(|line| line.unit_price.as_ref())
            .ok_or_else(|| format!("the reservation has no price for {sku}"))?;
        if price.currency_code != total.currency_code {
            return Err("the reservation mixes currencies".into());
        }
        priced.push((sku.clone(), from_money(price)));
    }
    Ok(Prices {
        lines: priced,
        total: from_money(total),
    })
}

fn describe_reservation(reservation: Option<inv::Reservation>) -> String {
    let state = reservation
        .map(|r| r.state)
        .and_then(|s| inv::ReservationState::try_from(s).ok())
        .unwrap_or(inv::ReservationState::Unspecified);
    format!("reservation {}", state.as_str_name())
}

fn to_money(money: &Money) -> agora_proto::Money {
    agora_proto::Money {
        currency_code: money.currency.clone(),
        amount_minor: money.amount_minor,
    }
}

fn from_money(money: &agora_proto::Money) -> Money {
    Money {
        currency: money.currency_code.clone(),
        amount_minor: money.amount_minor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_answers_are_unknown_and_refusals_are_not() {
        let lost = Failure::from_status(&Status::deadline_exceeded("slow"), "payment", "X");
        assert!(lost.retry);
        assert_eq!(lost.effect, Effect::Unknown);
        let down = Failure::from_status(&Status::unavailable("down"), "payment", "X");
        assert!(down.retry);
        assert_eq!(down.effect, Effect::None);
        let bad = Failure::from_status(&Status::invalid_argument("bad"), "payment", "X");
        assert!(!bad.retry);
        assert_eq!(bad.effect, Effect::None);
    }

    #[test]
    fn unknown_skus_and_short_stock_are_business_failures() {
        let missing = reserve_failure(&Status::not_found("no such sku"));
        assert_eq!(missing.reason, "UNKNOWN_SKU");
        assert_eq!(missing.effect, Effect::Refused);
        let mut details = tonic_types::ErrorDetails::with_precondition_failure_violation(
            "STOCK",
            "MUG",
            "asked 3, available 1",
        );
        details.set_error_info(
            "OUT_OF_STOCK",
            "agora.dev",
            std::collections::HashMap::new(),
        );
        let short = reserve_failure(&Status::with_error_details(
            Code::FailedPrecondition,
            "short",
            details,
        ));
        assert_eq!(short.reason, "OUT_OF_STOCK");
        assert!(short.message.contains("MUG: asked 3, available 1"));
    }
}
