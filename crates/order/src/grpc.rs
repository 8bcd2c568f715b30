//! The gRPC face of the order context: parses requests into domain types,
//! checks who may do what, hands work to the saga, and converts results back
//! to protobuf.
//!
//! Access: customers place, read, list, follow and cancel their own orders; a
//! customer naming another customer's order gets PERMISSION_DENIED (order ids
//! are unguessable UUIDv7s, so existence is not worth hiding, and the payment
//! service answers the same way). Admins read, list and cancel every order;
//! the service role reads and lists.

use std::pin::Pin;
use std::time::Duration;

use agora_interceptors::api::errors::FieldViolations;
use agora_interceptors::api::pagination::PageRequest;
use agora_interceptors::api::time::timestamp_from_micros;
use agora_interceptors::auth::{Access, Principal, Role, ServicePolicy};
use agora_interceptors::client::current_deadline;
use agora_proto::order::v1 as pb;
use futures::Stream;
use pb::order_service_server::OrderService;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::domain::{
    CancelReason, Cart, CustomerId, Money, OrderId, OrderState, PaymentToken, Quantity, RequestId,
    Sku,
};
use crate::downstream::Downstreams;
use crate::error::OrderError;
use crate::saga::Saga;
use crate::saga::log::{StepKind, StepStatus};
use crate::store::{Inserted, NewOrder, OrderRecord, OrderStore};

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
    /// The service over `store`, running sagas with `saga`.
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
        let order = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| OrderError::NotFound(id.to_string()))?;
        if !principal.may_act_for(&order.customer.to_string()) {
            return Err(OrderError::Forbidden(
                "customers may only access their own orders",
            ));
        }
        Ok(order)
    }

    /// The answer to a PlaceOrder repeat: the same order, unless the lines
    /// differ from the first request's.
    fn repeat(
        existing: OrderRecord,
        cart: &Cart,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        if !cart.same_as(&existing.cart_lines()) {
            return Err(OrderError::RequestIdReused.into());
        }
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some(to_proto(&existing)),
        }))
    }

    async fn reread(&self, id: OrderId) -> Result<OrderRecord, OrderError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| OrderError::NotFound(id.to_string()))
    }
}

/// Waits until the order is settled (or its runner stopped), but not past
/// the served call's deadline less a margin to answer in: then the saga
/// carries on in the background. `changes` was subscribed before the runner
/// started, so no change is missed.
async fn wait_until_settled(
    store: &OrderStore,
    id: OrderId,
    mut changes: broadcast::Receiver<OrderId>,
    done: Option<oneshot::Receiver<()>>,
) {
    let Some(mut done) = done else {
        return;
    };
    let now = Instant::now();
    let deadline = current_deadline().unwrap_or(now + Duration::from_secs(30));
    let left = deadline.saturating_duration_since(now);
    let margin = (left / 10).max(Duration::from_millis(50)).min(left);
    let give_up = tokio::time::sleep_until(deadline - margin);
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            _ = &mut done => return,
            () = &mut give_up => return,
            change = changes.recv() => match change {
                Ok(changed) if changed != id => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
        if let Ok(Some(order)) = store.get(id).await
            && !order.state.is_in_flight()
        {
            return;
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
        let body = request.into_inner();
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
        let token = violations.check(
            "payment_method_token",
            PaymentToken::parse(&body.payment_method_token),
        );
        let request_id = violations.check("request_id", RequestId::parse(&body.request_id));
        let (cart, token, request_id) = violations.finish((cart, token, request_id))?;

        // AIP-155: a repeat returns the order as it is now and starts nothing.
        if let Some(existing) = self.store.find_by_request(customer, request_id).await? {
            return Self::repeat(existing, &cart);
        }
        if self.check_account {
            match self.downstreams.account_exists(customer).await {
                Ok(true) => {}
                Ok(false) => return Err(OrderError::AccountNotFound.into()),
                Err(status) => return Err(OrderError::Downstream("user", status).into()),
            }
        }

        // Recorded PENDING, with the saga's first phase and its runner's
        // lease, before any remote call.
        let id = OrderId::new();
        let owner = self.saga.new_lease_owner();
        let inserted = self
            .store
            .insert(NewOrder {
                id,
                customer,
                request_id,
                cart: &cart,
                payment_token: &token,
                lease_owner: &owner,
                lease_until: self.saga.first_lease_until(),
            })
            .await?;
        if let Inserted::Duplicate = inserted {
            // A concurrent repeat won the race.
            let existing = self
                .store
                .find_by_request(customer, request_id)
                .await?
                .ok_or_else(|| OrderError::from(anyhow::anyhow!("duplicate order vanished")))?;
            return Self::repeat(existing, &cart);
        }
        tracing::info!(order_id = %id, user_id = %customer, "order placed");
        let changes = self.store.subscribe();
        let runner = self.saga.drive(id, owner.clone());
        if runner.is_none() {
            // Shutting down: leave the order to recovery.
            self.store.release_lease(id, &owner).await?;
        }
        wait_until_settled(&self.store, id, changes, runner).await;
        let order = self.reread(id).await?;
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
        let customer = match principal.role {
            Role::Customer => {
                if !body.user_id.is_empty() && body.user_id != principal.subject {
                    return Err(
                        OrderError::Forbidden("customers may only list their own orders").into(),
                    );
                }
                Some(CustomerId::parse(&principal.subject).map_err(|_| {
                    OrderError::Forbidden("this token does not name a user account")
                })?)
            }
            Role::Admin | Role::Service if body.user_id.is_empty() => None,
            Role::Admin | Role::Service => Some(
                CustomerId::parse(&body.user_id)
                    .map_err(|e| FieldViolations::single("user_id", e.to_string()))?,
            ),
        };
        let filter = customer.map(|c| c.to_string()).unwrap_or_default();
        let page = PageRequest::parse(body.page_size, &body.page_token, filter)?;
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
        let body = request.get_ref();
        let mut violations = FieldViolations::new();
        let id = violations.check("order_id", OrderId::parse(&body.order_id));
        let reason = violations.check("reason", CancelReason::parse(&body.reason));
        let (id, reason) = violations.finish((id, reason))?;
        let order = self.visible_order(&principal, id).await?;
        let changes = self.store.subscribe();
        let runner = match order.state {
            OrderState::Cancelled => None,
            OrderState::Pending | OrderState::Failed => {
                return Err(OrderError::NotCancellable {
                    order_id: id.to_string(),
                    state: order.state.as_str(),
                }
                .into());
            }
            OrderState::Confirmed | OrderState::Cancelling => {
                let owner = self.saga.new_lease_owner();
                let until = self.saga.first_lease_until();
                // The state CAS is the semantic lock: only one caller turns
                // CONFIRMED into CANCELLING; a repeat finds it CANCELLING.
                let began = order.state == OrderState::Confirmed
                    && self
                        .store
                        .begin_cancel(id, &owner, until, reason.as_str())
                        .await?;
                if began {
                    tracing::info!(order_id = %id, "cancellation started");
                    self.saga.drive(id, owner)
                } else if self.store.acquire_lease(id, &owner, until).await? {
                    // Already cancelling and nobody drives it (its runner
                    // died): drive it from here.
                    self.saga.drive(id, owner)
                } else {
                    None
                }
            }
        };
        wait_until_settled(&self.store, id, changes, runner).await;
        let order = self.reread(id).await?;
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
        // Subscribe before the first read, so no change falls in between.
        let mut changes = self.store.subscribe();
        let order = self.visible_order(&principal, id).await?;
        let (tx, rx) = mpsc::channel(16);
        let settled = !order.state.is_in_flight();
        let mut last_version = order.version;
        tx.send(Ok(pb::WatchOrderResponse {
            order: Some(to_proto(&order)),
        }))
        .await
        .map_err(|_| Status::cancelled("the watcher went away"))?;
        if settled {
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        let store = self.store.clone();
        let saga = self.saga.clone();
        let poll = self.watch_poll;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = saga.stopping() => {
                        let _ = tx.send(Err(Status::unavailable(
                            "the order service is shutting down; watch again",
                        ))).await;
                        return;
                    }
                    () = tx.closed() => return,
                    change = changes.recv() => match change {
                        Ok(changed) if changed != id => continue,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    // Changes made by other processes are only seen by polling.
                    () = tokio::time::sleep(poll) => {}
                }
                let order = match store.get(id).await {
                    Ok(Some(order)) => order,
                    Ok(None) => return,
                    Err(error) => {
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                };
                if order.version == last_version {
                    continue;
                }
                last_version = order.version;
                let settled = !order.state.is_in_flight();
                if tx
                    .send(Ok(pb::WatchOrderResponse {
                        order: Some(to_proto(&order)),
                    }))
                    .await
                    .is_err()
                    || settled
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
