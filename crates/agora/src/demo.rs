//! `agora demo`: the README walkthrough driven through the real gRPC API,
//! printing each step. A new customer registers and signs in, browses the
//! catalogue, orders with a good card and watches the saga confirm, then
//! tries a declined card and sees the saga compensate (stock released).
//!
//! Every step checks what it saw, so a run that ends OK is evidence that the
//! suite works end to end; the first surprise ends the demo with an error.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agora_proto::inventory::v1 as inventory_pb;
use agora_proto::order::v1 as order_pb;
use agora_proto::r#type::v1::Money;
use agora_proto::user::v1 as user_pb;
use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use inventory_pb::inventory_service_client::InventoryServiceClient;
use order_pb::order_service_client::OrderServiceClient;
use tonic::transport::Channel;
use user_pb::user_service_client::UserServiceClient;

use crate::suite::channel_to;

/// Where the demo finds the services it calls.
#[derive(Clone, Copy, Debug)]
pub struct Targets {
    /// agora.user.v1.UserService
    pub user: SocketAddr,
    /// agora.order.v1.OrderService
    pub order: SocketAddr,
    /// agora.inventory.v1.InventoryService
    pub inventory: SocketAddr,
}

/// What the demo ended with.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The order paid with `tok_visa`: CONFIRMED.
    pub confirmed: order_pb::Order,
    /// The order paid with `tok_declined`: FAILED and compensated.
    pub declined: order_pb::Order,
}

/// How long one unary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an order may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Quiet time after which a watched order reports that it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
const STEPS: usize = 6;

/// Runs the walkthrough, reporting each line through `say`.
pub async fn run(targets: Targets, say: &mut dyn FnMut(&str)) -> anyhow::Result<Outcome> {
    let mut users = UserServiceClient::new(channel_to(targets.user));
    let mut inventory = InventoryServiceClient::new(channel_to(targets.inventory));
    let orders = OrderServiceClient::new(channel_to(targets.order));
    let started = Instant::now();

    // 1. Register.
    step(say, 1, "register a customer");
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("demo-{}@example.com", &suffix[..8]);
    let password = format!("demo-{suffix}");
    let created = users
        .create_user(timed(user_pb::CreateUserRequest {
            email: email.clone(),
            display_name: "Demo Customer".to_owned(),
            password: password.clone(),
        }))
        .await
        .context("CreateUser")?
        .into_inner()
        .user
        .context("CreateUser answered without a user")?;
    say(&format!(
        "   CreateUser → user {} ({email})",
        created.user_id
    ));

    // 2. Sign in.
    step(say, 2, "authenticate");
    let token = users
        .authenticate(timed(user_pb::AuthenticateRequest { email, password }))
        .await
        .context("Authenticate")?
        .into_inner()
        .access_token;
    ensure!(!token.is_empty(), "Authenticate answered without a token");
    say(&format!(
        "   Authenticate → access token ({} bytes, EdDSA JWT)",
        token.len()
    ));

    // 3. Browse.
    step(say, 3, "browse the catalogue");
    let products = inventory
        .list_products(timed(inventory_pb::ListProductsRequest {
            page_size: 10,
            page_token: String::new(),
        }))
        .await
        .context("ListProducts")?
        .into_inner()
        .products;
    for product in &products {
        say(&format!(
            "   {:<14} {:<28} {:>12}   {} available",
            product.sku,
            product.name,
            money(product.price.as_ref()),
            product.available
        ));
    }
    let Some(pick) = products.iter().find(|p| p.available >= 2) else {
        bail!("no product has two units available; restock one with AdjustStock (see the README)");
    };
    let sku = pick.sku.clone();

    // 4. Order with a good card and watch the saga.
    step(
        say,
        4,
        &format!("place an order for 2 × {sku} with tok_visa, and watch it"),
    );
    let placed = place(&orders, &token, &sku, 2, "tok_visa").await?;
    let confirmed = watch(&orders, &token, placed, say).await?;
    ensure!(
        confirmed.state() == order_pb::OrderState::Confirmed,
        "the order ended {:?}, not CONFIRMED: {}",
        confirmed.state(),
        confirmed.failure_message
    );
    say(&format!(
        "   order {} CONFIRMED, total {}",
        confirmed.order_id,
        money(confirmed.total.as_ref())
    ));

    // 5. A declined card: the saga compensates.
    let before = available(&mut inventory, &sku).await?;
    step(
        say,
        5,
        &format!("place an order for 1 × {sku} with tok_declined, and watch it compensate"),
    );
    let placed = place(&orders, &token, &sku, 1, "tok_declined").await?;
    let declined = watch(&orders, &token, placed, say).await?;
    ensure!(
        declined.state() == order_pb::OrderState::Failed,
        "the declined order ended {:?}, not FAILED",
        declined.state()
    );
    say(&format!(
        "   order {} FAILED: {} ({})",
        declined.order_id, declined.failure_reason, declined.failure_message
    ));

    // 6. Nothing is held for the failed order.
    step(say, 6, "check that the declined order holds no stock");
    let after = available(&mut inventory, &sku).await?;
    ensure!(
        after == before,
        "{sku}: {before} available before the declined order, {after} after"
    );
    say(&format!(
        "   {sku}: {after} available, as before the declined order"
    ));

    say(&format!("\nDemo finished in {:.1?}.", started.elapsed()));
    Ok(Outcome {
        confirmed,
        declined,
    })
}

fn step(say: &mut dyn FnMut(&str), n: usize, what: &str) {
    say(&format!("\n[{n}/{STEPS}] {what}"));
}

/// A request with the demo's per-call deadline.
fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// `message` with the caller's bearer token.
fn authorized<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = timed(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token is not valid metadata")?,
    );
    Ok(request)
}

async fn place(
    orders: &OrderServiceClient<Channel>,
    token: &str,
    sku: &str,
    quantity: i64,
    card: &str,
) -> anyhow::Result<order_pb::Order> {
    let request = order_pb::PlaceOrderRequest {
        lines: vec![order_pb::OrderLine {
            sku: sku.to_owned(),
            quantity,
            unit_price: None,
        }],
        payment_method_token: card.to_owned(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    orders
        .clone()
        .place_order(authorized(request, token)?)
        .await
        .context("PlaceOrder")?
        .into_inner()
        .order
        .context("PlaceOrder answered without an order")
}

/// Follows `order` with WatchOrder until it is terminal, printing each saga
/// step as it is recorded and a progress line whenever it goes quiet.
async fn watch(
    orders: &OrderServiceClient<Channel>,
    token: &str,
    order: order_pb::Order,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<order_pb::Order> {
    let started = Instant::now();
    say(&format!(
        "   PlaceOrder → order {} {}",
        order.order_id,
        state_name(&order)
    ));
    let mut request = authorized(
        order_pb::WatchOrderRequest {
            order_id: order.order_id.clone(),
        },
        token,
    )?;
    request.set_timeout(SETTLE_TIMEOUT);
    let mut stream = orders
        .clone()
        .watch_order(request)
        .await
        .context("WatchOrder")?
        .into_inner();
    let mut shown_steps = 0;
    let mut last = order;
    loop {
        let next = tokio::time::timeout(PROGRESS_EVERY, stream.next()).await;
        let update = match next {
            Err(_quiet) => {
                say(&format!(
                    "   … still {} after {:.0?}",
                    state_name(&last),
                    started.elapsed()
                ));
                continue;
            }
            Ok(None) => break,
            Ok(Some(update)) => update.context("WatchOrder")?,
        };
        let Some(order) = update.order else { continue };
        for step in order.steps.iter().skip(shown_steps) {
            let mut line = format!(
                "   {:>9}  {:<15} {:<9}",
                since_placed(&order, step),
                step_name(step.step()),
                status_name(step.status())
            );
            if step.attempt > 1 {
                let _ = write!(line, " (attempt {})", step.attempt);
            }
            if !step.detail.is_empty() {
                let _ = write!(line, " {}", step.detail);
            }
            say(&line);
        }
        shown_steps = shown_steps.max(order.steps.len());
        last = order;
    }
    ensure!(
        is_terminal(&last),
        "WatchOrder ended while the order was still {}",
        state_name(&last)
    );
    Ok(last)
}

async fn available(
    inventory: &mut InventoryServiceClient<Channel>,
    sku: &str,
) -> anyhow::Result<i64> {
    let product = inventory
        .get_product(timed(inventory_pb::GetProductRequest {
            sku: sku.to_owned(),
        }))
        .await
        .context("GetProduct")?
        .into_inner()
        .product
        .context("GetProduct answered without a product")?;
    Ok(product.available)
}

/// "+3.2 ms": when `step` was recorded, counted from the order's creation.
fn since_placed(order: &order_pb::Order, step: &order_pb::SagaStep) -> String {
    let micros = |t: Option<&prost_types::Timestamp>| {
        t.map(|t| t.seconds.saturating_mul(1_000_000) + i64::from(t.nanos / 1_000))
    };
    match (
        micros(order.create_time.as_ref()),
        micros(step.time.as_ref()),
    ) {
        (Some(created), Some(at)) => format!("+{:.1} ms", (at - created) as f64 / 1000.0),
        _ => String::new(),
    }
}

fn is_terminal(order: &order_pb::Order) -> bool {
    use order_pb::OrderState;
    matches!(
        order.state(),
        OrderState::Confirmed | OrderState::Failed | OrderState::Cancelled
    )
}

fn state_name(order: &order_pb::Order) -> &'static str {
    order
        .state()
        .as_str_name()
        .trim_start_matches("ORDER_STATE_")
}

fn step_name(kind: order_pb::SagaStepKind) -> &'static str {
    kind.as_str_name().trim_start_matches("SAGA_STEP_KIND_")
}

fn status_name(status: order_pb::SagaStepStatus) -> &'static str {
    status.as_str_name().trim_start_matches("SAGA_STEP_STATUS_")
}

/// "12.50 EUR": minor units shown with the currency's usual two decimals
/// (the demo catalogue is in euros).
fn money(money: Option<&Money>) -> String {
    match money {
        Some(m) => format!(
            "{}{}.{:02} {}",
            if m.amount_minor < 0 { "-" } else { "" },
            m.amount_minor.unsigned_abs() / 100,
            m.amount_minor.unsigned_abs() % 100,
            m.currency_code
        ),
        None => "-".to_owned(),
    }
}
