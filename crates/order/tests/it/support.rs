//! The calls order tests make, on top of `agora_testkit` (which starts the
//! services, mints tokens and reads error details).

use std::net::SocketAddr;
use std::time::Duration;

use agora_proto::order::v1 as pb;
use agora_proto::order::v1::order_service_client::OrderServiceClient;
use agora_testkit::services;
pub use agora_testkit::services::Keys;
pub use agora_testkit::services::start_order;
pub use agora_testkit::status::{reason, violated_fields};
pub use agora_testkit::suite::order_config;
pub use agora_testkit::{TestDatabase, TestServer};
use agora_testkit::{eventually, sign_up, with_token};
use tonic::transport::Channel;

/// An address nothing listens on (bound, then closed).
pub async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A user service on `db`.
pub async fn start_user(db: &TestDatabase, keys: &Keys) -> TestServer {
    services::start_user(db, keys, |_| {}).await
}

pub fn order_client(server: &TestServer) -> OrderServiceClient<Channel> {
    OrderServiceClient::new(server.channel())
}

/// Registers a customer and signs them in: (user id, token).
pub async fn customer(user: &TestServer, email: &str) -> (String, String) {
    let (created, token) = sign_up(user.channel(), email).await;
    (created.user_id, token)
}

pub fn line(sku: &str, quantity: i64) -> pb::OrderLine {
    pb::OrderLine {
        sku: sku.into(),
        quantity,
        unit_price: None,
    }
}

pub fn place_request(lines: Vec<pb::OrderLine>, token: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        lines,
        payment_method_token: token.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub async fn place(
    client: &OrderServiceClient<Channel>,
    request: pb::PlaceOrderRequest,
    token: &str,
) -> Result<pb::Order, tonic::Status> {
    client
        .clone()
        .place_order(with_token(request, token))
        .await
        .map(|r| r.into_inner().order.unwrap())
}

pub async fn get(
    client: &OrderServiceClient<Channel>,
    order_id: &str,
    token: &str,
) -> Result<pb::Order, tonic::Status> {
    client
        .clone()
        .get_order(with_token(
            pb::GetOrderRequest {
                order_id: order_id.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().order.unwrap())
}

/// Polls the order until `done` holds (30 s at most).
pub async fn wait_for_order(
    client: &OrderServiceClient<Channel>,
    order_id: &str,
    token: &str,
    done: impl Fn(&pb::Order) -> bool,
) -> pb::Order {
    eventually(
        &format!("order {order_id} to reach the expected state"),
        Duration::from_secs(30),
        || async {
            let order = get(client, order_id, token).await.expect("get order");
            done(&order).then_some(order)
        },
    )
    .await
}

pub fn is_settled(order: &pb::Order) -> bool {
    [
        pb::OrderState::Confirmed,
        pb::OrderState::Failed,
        pb::OrderState::Cancelled,
    ]
    .contains(&order.state())
}

/// (step, status) pairs of an order's saga log, for compact assertions.
pub fn steps(order: &pb::Order) -> Vec<(pb::SagaStepKind, pb::SagaStepStatus)> {
    order.steps.iter().map(|s| (s.step(), s.status())).collect()
}

/// The order service's outbox on `db`, migrated, outside any server.
pub async fn outbox_on(db: &TestDatabase) -> agora_interceptors::outbox::Outbox {
    let database = agora_interceptors::db::Database::open(
        db.url(),
        &Default::default(),
        &agora_order::MIGRATIONS,
    )
    .await
    .unwrap();
    agora_interceptors::outbox::Outbox::new(database, "order")
}
