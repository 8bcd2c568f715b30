//! The gRPC face of the payment context: parses requests into domain
//! commands, checks who may do what, and converts results back to protobuf.

use agora_interceptors::api::errors::FieldViolations;
use agora_interceptors::api::pagination::{self, PageRequest};
use agora_interceptors::api::time::timestamp_from_micros;
use agora_interceptors::auth::{Access, Principal, Role, ServicePolicy};
use agora_proto::payment::v1 as pb;
use agora_proto::r#type::v1::Money as PbMoney;
use pb::payment_service_server::PaymentService;
use tonic::{Request, Response, Status};

use crate::domain::{
    AmountMinor, ChargeCommand, Currency, IdempotencyKey, Money, OrderId, Payment, PaymentId,
    PaymentMethodToken, PaymentState, Refund, RefundCommand, RefundReason, Transition, UserId,
};
use crate::engine::PaymentEngine;
use crate::error::PaymentError;
use crate::store::PaymentFilter;

/// Who may call which method of `agora.payment.v1.PaymentService`.
pub const POLICY: ServicePolicy = ServicePolicy {
    service: "agora.payment.v1.PaymentService",
    methods: &[
        // Only other services (the order saga) take money.
        ("Charge", Access::Roles(&[Role::Service])),
        ("Refund", Access::Roles(&[Role::Service, Role::Admin])),
        // Customers only their own payments (checked below).
        ("GetPayment", Access::Authenticated),
        ("ListPayments", Access::Authenticated),
    ],
};

/// The generated tonic server around [`PaymentApi`], as `lib.rs` hands it to
/// the host (generated types stay in this module).
pub type Server = pb::payment_service_server::PaymentServiceServer<PaymentApi>;

/// The PaymentService implementation.
#[derive(Clone, Debug)]
pub struct PaymentApi {
    engine: PaymentEngine,
}

impl PaymentApi {
    /// The service over `engine`.
    pub fn new(engine: PaymentEngine) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn charge(
        &self,
        request: Request<pb::ChargeRequest>,
    ) -> Result<Response<pb::ChargeResponse>, Status> {
        let command = parse_charge(request.into_inner())?;
        let payment = self.engine.charge(command).await?;
        Ok(Response::new(pb::ChargeResponse {
            payment: Some(payment_to_proto(&payment)),
        }))
    }

    async fn refund(
        &self,
        request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::RefundResponse>, Status> {
        let command = parse_refund(request.into_inner())?;
        let (payment, refund) = self.engine.refund(command).await?;
        Ok(Response::new(pb::RefundResponse {
            payment: Some(payment_to_proto(&payment)),
            refund: Some(refund_to_proto(&refund)),
        }))
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let principal = Principal::of(&request)?;
        let id = PaymentId::parse(&request.get_ref().payment_id)
            .map_err(|e| FieldViolations::single("payment_id", e.to_string()))?;
        let payment = self.engine.payment(id).await?;
        if !principal.may_act_for(&payment.user_id.to_string()) {
            return Err(
                PaymentError::Forbidden("customers may only read their own payments").into(),
            );
        }
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(payment_to_proto(&payment)),
        }))
    }

    async fn list_payments(
        &self,
        request: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let order_id = optional(
            &mut violations,
            "order_id",
            &request.order_id,
            OrderId::parse,
        );
        let user_id = optional(&mut violations, "user_id", &request.user_id, UserId::parse);
        let limit = violations.check("page_size", pagination::page_size(request.page_size));
        let (order_id, mut user_id, limit) = violations.finish((order_id, user_id, limit))?;

        if principal.role == Role::Customer {
            // A customer's list is always their own.
            let own = UserId::parse(&principal.subject)
                .map_err(|_| PaymentError::Forbidden("this customer token names no user id"))?;
            match user_id {
                None => user_id = Some(own),
                Some(asked) if asked == own => {}
                Some(_) => {
                    return Err(PaymentError::Forbidden(
                        "customers may only list their own payments",
                    )
                    .into());
                }
            }
        }
        let filter = PaymentFilter { order_id, user_id };
        let fingerprint = format!(
            "order={};user={}",
            order_id.map(|id| id.to_string()).unwrap_or_default(),
            user_id.map(|id| id.to_string()).unwrap_or_default()
        );
        let page = PageRequest::new(
            "agora.payment.v1.PaymentService/ListPayments",
            limit,
            &request.page_token,
            fingerprint,
        )?;
        let payments = self
            .engine
            .store()
            .list(filter, page.after(), page.fetch_limit())
            .await?;
        let (payments, next_page_token) = page.split(payments, |payment| payment.id.to_string());
        Ok(Response::new(pb::ListPaymentsResponse {
            payments: payments.iter().map(payment_to_proto).collect(),
            next_page_token,
        }))
    }
}

/// An optional id: empty means "any".
fn optional<T>(
    violations: &mut FieldViolations,
    field: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, crate::domain::ParseError>,
) -> Option<Option<T>> {
    if value.is_empty() {
        Some(None)
    } else {
        violations.check(field, parse(value)).map(Some)
    }
}

/// Parses `money` into `field`'s violations: amount and currency both
/// checked, so a caller learns about both at once.
fn parse_money(
    violations: &mut FieldViolations,
    field: &str,
    money: Option<&PbMoney>,
) -> Option<Money> {
    let Some(money) = money else {
        violations.add(field, "is required");
        return None;
    };
    let amount = violations.check(
        &format!("{field}.amount_minor"),
        AmountMinor::parse(money.amount_minor),
    );
    let currency = violations.check(
        &format!("{field}.currency_code"),
        Currency::parse(&money.currency_code),
    );
    Some(Money {
        amount: amount?,
        currency: currency?,
    })
}

fn parse_charge(request: pb::ChargeRequest) -> Result<ChargeCommand, Status> {
    let mut violations = FieldViolations::new();
    let order_id = violations.check("order_id", OrderId::parse(&request.order_id));
    let user_id = violations.check("user_id", UserId::parse(&request.user_id));
    let amount = parse_money(&mut violations, "amount", request.amount.as_ref());
    let token = violations.check(
        "payment_method_token",
        PaymentMethodToken::parse(&request.payment_method_token),
    );
    let key = violations.check(
        "idempotency_key",
        IdempotencyKey::parse(&request.idempotency_key),
    );
    let (order_id, user_id, amount, token, idempotency_key) =
        violations.finish((order_id, user_id, amount, token, key))?;
    Ok(ChargeCommand {
        order_id,
        user_id,
        amount,
        token,
        idempotency_key,
    })
}

fn parse_refund(request: pb::RefundRequest) -> Result<RefundCommand, Status> {
    let mut violations = FieldViolations::new();
    let payment_id = violations.check("payment_id", PaymentId::parse(&request.payment_id));
    let amount = parse_money(&mut violations, "amount", request.amount.as_ref());
    let reason = violations.check("reason", RefundReason::parse(&request.reason));
    let key = violations.check(
        "idempotency_key",
        IdempotencyKey::parse(&request.idempotency_key),
    );
    let (payment_id, amount, reason, idempotency_key) =
        violations.finish((payment_id, amount, reason, key))?;
    Ok(RefundCommand {
        payment_id,
        amount,
        reason,
        idempotency_key,
    })
}

fn money_to_proto(amount: i64, currency: Currency) -> PbMoney {
    PbMoney {
        currency_code: currency.to_string(),
        amount_minor: amount,
    }
}

fn state_to_proto(state: PaymentState) -> pb::PaymentState {
    match state {
        PaymentState::Pending => pb::PaymentState::Pending,
        PaymentState::Captured => pb::PaymentState::Captured,
        PaymentState::Declined => pb::PaymentState::Declined,
        PaymentState::PartiallyRefunded => pb::PaymentState::PartiallyRefunded,
        PaymentState::Refunded => pb::PaymentState::Refunded,
        PaymentState::Failed => pb::PaymentState::Failed,
    }
}

fn transition_to_proto(transition: &Transition) -> pb::PaymentTransition {
    pb::PaymentTransition {
        state: state_to_proto(transition.state) as i32,
        time: Some(timestamp_from_micros(transition.at)),
        note: transition.note.clone(),
    }
}

fn refund_to_proto(refund: &Refund) -> pb::PaymentRefund {
    pb::PaymentRefund {
        refund_id: refund.id.to_string(),
        amount: Some(money_to_proto(
            refund.amount.amount.get(),
            refund.amount.currency,
        )),
        reason: refund.reason.clone(),
        create_time: Some(timestamp_from_micros(refund.updated_at)),
    }
}

fn payment_to_proto(payment: &Payment) -> pb::Payment {
    pb::Payment {
        payment_id: payment.id.to_string(),
        order_id: payment.order_id.to_string(),
        user_id: payment.user_id.to_string(),
        amount: Some(money_to_proto(
            payment.amount.amount.get(),
            payment.amount.currency,
        )),
        refunded_amount: Some(money_to_proto(
            payment.refunded_minor,
            payment.amount.currency,
        )),
        state: state_to_proto(payment.state) as i32,
        decline_reason: payment.decline_reason.clone(),
        provider_reference: payment.provider_reference.clone(),
        refunds: payment.refunds.iter().map(refund_to_proto).collect(),
        history: payment.history.iter().map(transition_to_proto).collect(),
        create_time: Some(timestamp_from_micros(payment.created_at)),
        update_time: Some(timestamp_from_micros(payment.updated_at)),
    }
}
