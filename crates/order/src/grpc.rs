//! The gRPC face of the order context: parses requests into domain values,
//! checks who may do what, calls the use case ([`Saga`] for placing,
//! cancelling and watching; the store for plain reads) and converts results
//! back to protobuf.
//!
//! Access: customers place, read, list, follow and cancel their own orders; a
//! customer naming another customer's order gets PERMISSION_DENIED (order ids
//! are unguessable UUIDv7s, so existence is not worth hiding, and the payment
//! service answers the same way). Admins read, list and cancel every order;
//! the service role reads and lists. PlaceOrder also asks the user service
//! whether the caller's account still exists (unless turned off).

use std::pin::Pin;
use std::time::Duration;

use agora_interceptors::api::errors::FieldViolations;
use agora_interceptors::api::pagination::PageRequest;
use agora_interceptors::api::time::timestamp_from_micros;
use agora_interceptors::auth::{Access, Principal, Role, ServicePolicy};
use agora_proto::order::v1 as pb;
use futures::{Stream, StreamExt};
use pb::order_service_server::OrderService;
use tonic::{Request, Response, Status};

use crate::domain::{
    CancelReason, Cart, CustomerId, Money, OrderId, OrderState, PaymentToken, Quantity, RequestId,
    Sku,
};
use crate::downstream::Downstreams;
use crate::error::OrderError;
use crate::saga::{Saga, WatchError};
use crate::steps::{StepKind, StepStatus};
use crate::store::{NewOrder, OrderRecord, OrderStore};

/// Who may call which method of `agora.order.v1.OrderService`.
pub const POLICY: ServicePolicy = ServicePolicy {
    service: "agora.order.v1.OrderService",
    methods: &[
        // People with an account: the customer is the token's subject.
        ("PlaceOrder", Access::Roles(&[Role::Customer, Role::Admin])),
        // Own orders for customers; every order for admins and services.
        ("GetOrder", Access::Authenticated),
        ("ListOrders", Access::Authenticated),
        ("CancelOrder", Access::Roles(&[Role::Customer, Role::Admin])),
        ("WatchOrder", Access::Authenticated),
    ],
};

/// The generated tonic server around [`OrderApi`], as `lib.rs` hands it to
/// the host (generated types stay in this module).
pub type Server = pb::order_service_server::OrderServiceServer<OrderApi>;

/// The OrderService implementation.
#[derive(Clone, Debug)]
pub struct OrderApi {
    store: OrderStore,
    saga: Saga,
    downstreams: Downstreams,
    check_account: bool,
    watch_poll: Duration,
}

impl OrderApi {
    /// The service reading from `store` and placing, cancelling and watching
    /// orders with `saga`; `downstreams` reach the user service for the
    /// account check (when `check_account`); WatchOrder re-reads every
    /// `watch_poll` to see other processes' changes.
    pub fn new(
        store: OrderStore,
        saga: Saga,
        downstreams: Downstreams,
        check_account: bool,
        watch_poll: Duration,
    ) -> Self {
        Self {
            store,
            saga,
            downstreams,
            check_account,
            watch_poll,
        }
    }

    /// The order, if the caller may see it.
    async fn visible_order(
        &self,
        principal: &Principal,
        id: OrderId,
    ) -> Result<OrderRecord, OrderError> {
        let order = self.store.order(id).await?;
        may_see(principal, &order)?;
        Ok(order)
    }

    /// Whether `customer` may place an order: the user service still knows
    /// their account (a deleted account's unexpired token cannot order).
    async fn admit(&self, customer: CustomerId) -> Result<(), OrderError> {
        if !self.check_account {
            return Ok(());
        }
        match self.downstreams.account_exists(customer).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(OrderError::AccountNotFound),
            Err(status) => Err(OrderError::Downstream("user", status)),
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchOrderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let principal = Principal::of(&request)?;
        let customer = CustomerId::parse(&principal.subject).map_err(|_| {
            OrderError::Forbidden("this token does not name a user account that can order")
        })?;
        let order = parse_new_order(customer, request.get_ref())?;
        let order = self.saga.place(order, self.admit(customer)).await?;
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some(to_proto(&order)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let principal = Principal::of(&request)?;
        let id = parse_order_id(&request.get_ref().order_id)?;
        let order = self.visible_order(&principal, id).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(to_proto(&order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.into_inner();
        let customer = listable_customer(&principal, &body.user_id)?;
        let filter = customer.map(|c| c.to_string()).unwrap_or_default();
        let page = PageRequest::parse(
            "agora.order.v1.OrderService/ListOrders",
            body.page_size,
            &body.page_token,
            filter,
        )?;
        let orders = self
            .store
            .list(customer, page.after(), page.fetch_limit())
            .await?;
        let (orders, next_page_token) = page.split(orders, |order| order.id.to_string());
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let principal = Principal::of(&request)?;
        let (id, reason) = parse_cancel(request.get_ref())?;
        let order = self.visible_order(&principal, id).await?;
        let order = self.saga.cancel(order, &reason).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(to_proto(&order)),
        }))
    }

    type WatchOrderStream = WatchStream;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let principal = Principal::of(&request)?;
        let id = parse_order_id(&request.get_ref().order_id)?;
        let watch = self.saga.watch(id).await?;
        may_see(&principal, watch.order())?;
        let updates = watch.follow(self.watch_poll).map(|update| {
            update
                .map(|order| pb::WatchOrderResponse {
                    order: Some(to_proto(&order)),
                })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(updates)))
    }
}

/// Refuses a customer another customer's order.
fn may_see(principal: &Principal, order: &OrderRecord) -> Result<(), OrderError> {
    if principal.may_act_for(&order.customer.to_string()) {
        Ok(())
    } else {
        Err(OrderError::Forbidden(
            "customers may only access their own orders",
        ))
    }
}

/// Whose orders the caller lists: a customer only their own (`user_id`
/// empty or theirs); admins and services anyone's, or everyone's when
/// `user_id` is empty.
fn listable_customer(principal: &Principal, user_id: &str) -> Result<Option<CustomerId>, Status> {
    match principal.role {
        Role::Customer => {
            if !user_id.is_empty() && user_id != principal.subject {
                return Err(
                    OrderError::Forbidden("customers may only list their own orders").into(),
                );
            }
            let own = CustomerId::parse(&principal.subject)
                .map_err(|_| OrderError::Forbidden("this token does not name a user account"))?;
            Ok(Some(own))
        }
        Role::Admin | Role::Service if user_id.is_empty() => Ok(None),
        Role::Admin | Role::Service => CustomerId::parse(user_id)
            .map(Some)
            .map_err(|e| FieldViolations::single("user_id", e.to_string())),
    }
}

/// PlaceOrder's body as the order `customer` asks for; every invalid field
/// is reported at once.
fn parse_new_order(customer: CustomerId, body: &pb::PlaceOrderRequest) -> Result<NewOrder, Status> {
    let mut violations = FieldViolations::new();
    let mut lines = Vec::with_capacity(body.lines.len());
    for (i, line) in body.lines.iter().enumerate() {
        let sku = violations.check(&format!("lines[{i}].sku"), Sku::parse(&line.sku));
        let quantity = violations.check(
            &format!("lines[{i}].quantity"),
            Quantity::parse(line.quantity),
        );
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            lines.push((sku, quantity));
        }
    }
    let cart = if violations.is_empty() {
        violations.check("lines", Cart::new(lines))
    } else {
        None
    };
    let payment_token = violations.check(
        "payment_method_token",
        PaymentToken::parse(&body.payment_method_token),
    );
    let request_id = violations.check("request_id", RequestId::parse(&body.request_id));
    let (cart, payment_token, request_id) = violations.finish((cart, payment_token, request_id))?;
    Ok(NewOrder {
        customer,
        request_id,
        cart,
        payment_token,
    })
}

/// CancelOrder's body: the order and why.
fn parse_cancel(body: &pb::CancelOrderRequest) -> Result<(OrderId, CancelReason), Status> {
    let mut violations = FieldViolations::new();
    let id = violations.check("order_id", OrderId::parse(&body.order_id));
    let reason = violations.check("reason", CancelReason::parse(&body.reason));
    let (id, reason) = violations.finish((id, reason))?;
    Ok((id, reason))
}

impl From<WatchError> for Status {
    fn from(error: WatchError) -> Self {
        match error {
            WatchError::ShuttingDown => {
                Status::unavailable("the order service is shutting down; watch again")
            }
            WatchError::Order(error) => error.into(),
        }
    }
}

fn parse_order_id(value: &str) -> Result<OrderId, Status> {
    OrderId::parse(value).map_err(|e| FieldViolations::single("order_id", e.to_string()))
}

fn money(money: &Money) -> agora_proto::Money {
    agora_proto::Money {
        currency_code: money.currency.clone(),
        amount_minor: money.amount_minor,
    }
}

/// The order as the API shows it.
pub fn to_proto(order: &OrderRecord) -> pb::Order {
    let state = match order.state {
        OrderState::Pending => pb::OrderState::Pending,
        OrderState::Confirmed => pb::OrderState::Confirmed,
        OrderState::Failed => pb::OrderState::Failed,
        OrderState::Cancelling => pb::OrderState::Cancelling,
        OrderState::Cancelled => pb::OrderState::Cancelled,
    };
    let failed = order.state == OrderState::Failed;
    pb::Order {
        order_id: order.id.to_string(),
        user_id: order.customer.to_string(),
        state: state as i32,
        lines: order
            .lines
            .iter()
            .map(|line| pb::OrderLine {
                sku: line.sku.as_str().to_owned(),
                quantity: line.quantity.get(),
                unit_price: line.unit_price.as_ref().map(money),
            })
            .collect(),
        total: order.total.as_ref().map(money),
        payment_id: order.payment_id.clone().unwrap_or_default(),
        failure_reason: if failed {
            order.failure_reason.clone()
        } else {
            String::new()
        },
        failure_message: if failed {
            order.failure_message.clone()
        } else {
            String::new()
        },
        steps: order
            .steps
            .0
            .iter()
            .map(|entry| pb::SagaStep {
                step: step_kind(entry.step) as i32,
                status: match entry.status {
                    StepStatus::Started => pb::SagaStepStatus::Started,
                    StepStatus::Succeeded => pb::SagaStepStatus::Succeeded,
                    StepStatus::Failed => pb::SagaStepStatus::Failed,
                } as i32,
                detail: entry.detail.clone(),
                time: Some(timestamp_from_micros(entry.at)),
                attempt: entry.attempt,
            })
            .collect(),
        request_id: order.request_id.to_string(),
        create_time: Some(timestamp_from_micros(order.created_at)),
        update_time: Some(timestamp_from_micros(order.updated_at)),
    }
}

fn step_kind(step: StepKind) -> pb::SagaStepKind {
    match step {
        StepKind::ReserveStock => pb::SagaStepKind::ReserveStock,
        StepKind::ChargePayment => pb::SagaStepKind::ChargePayment,
        StepKind::CommitStock => pb::SagaStepKind::CommitStock,
        StepKind::Confirm => pb::SagaStepKind::Confirm,
        StepKind::RefundPayment => pb::SagaStepKind::RefundPayment,
        StepKind::ReleaseStock => pb::SagaStepKind::ReleaseStock,
    }
}
