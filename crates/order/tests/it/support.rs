//! Starts the services an order test needs, in-process over real gRPC, each
//! with its own database of the scenario's backend, and hands back clients.

use std::net::SocketAddr;
use std::time::Duration;

use agora_interceptors::auth::{KeySet, Role, SigningKey};
use agora_order::{OrderConfig, OrderKeys, ServeOptions};
use agora_proto::order::v1 as pb;
use agora_proto::order::v1::order_service_client::OrderServiceClient;
use agora_proto::user::v1 as upb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_testkit::{TestDatabase, TestKeys, channel, wait_until_serving, with_token};
use agora_user::{UserConfig, UserKeys};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const PASSWORD: &str = "correct horse battery staple";
pub const ORDER_SERVICE: &str = "agora.order.v1.OrderService";

/// A fresh database of the same backend as `like`.
pub async fn database_like(like: &TestDatabase) -> TestDatabase {
    if like.backend() == "postgres" {
        TestDatabase::postgres().await.expect("postgres configured")
    } else {
        TestDatabase::sqlite()
    }
}

/// An address nothing listens on (bound, then closed).
pub async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A server task and the way to stop it.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    pub fn new(
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<anyhow::Result<()>>,
    ) -> Self {
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A placeholder for a server that is not running.
    #[allow(dead_code)]
    pub fn detached() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stop: None,
            task: None,
        }
    }

    #[allow(dead_code)]
    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

/// Shared test keys: `people` signs customers' and admins' tokens (as the
/// user service would); `order_service` is the order service's own key.
#[derive(Clone)]
pub struct Keys {
    pub people: TestKeys,
    pub order_service: SigningKey,
}

impl Keys {
    pub fn new() -> Self {
        Self {
            people: TestKeys::new(),
            order_service: SigningKey::generate("agora-order").unwrap(),
        }
    }

    /// What user, inventory and payment trust: people's tokens and the order
    /// service's service tokens.
    pub fn downstream_key_set(&self) -> KeySet {
        let mut keys = self.people.key_set.clone();
        keys.insert(self.order_service.public_jwk()).unwrap();
        keys
    }

    pub fn order_keys(&self) -> OrderKeys {
        OrderKeys {
            verifying: self.people.key_set.clone(),
            service: self.order_service.clone(),
        }
    }

    pub fn admin_token(&self) -> String {
        self.people
            .token(&uuid::Uuid::now_v7().to_string(), Role::Admin)
    }
}

/// Starts a user service on `db`.
pub async fn start_user(db: &TestDatabase, keys: &Keys) -> Server {
    let mut config = UserConfig::defaults();
    config.database.database_url = Some(db.url().to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let user_keys =
        UserKeys::with_verifying(keys.people.signing.clone(), keys.downstream_key_set());
    let task = tokio::spawn(agora_user::serve(config, user_keys, listener, async {
        let _ = stopped.await;
    }));
    wait_until_serving(channel(addr), "agora.user.v1.UserService").await;
    Server::new(addr, stop, task)
}

/// Order-service settings for tests: fast retries and recovery.
pub fn order_config(db: &TestDatabase) -> OrderConfig {
    let mut config = OrderConfig::defaults();
    config.database.database_url = Some(db.url().to_owned());
    config.saga_step_attempts = 3;
    config.saga_retry_base = Duration::from_millis(20);
    config.saga_retry_max = Duration::from_millis(200);
    config.saga_compensation_retry_max = Duration::from_millis(300);
    config.saga_attempt_timeout = Duration::from_secs(3);
    config.saga_lease_ttl = Duration::from_secs(2);
    config.saga_recovery_interval = Duration::from_millis(200);
    config.watch_poll_interval = Duration::from_millis(200);
    config.serve.shutdown_grace = Duration::from_secs(2);
    // Tests place many orders from one customer in a burst.
    config.serve.rate_limit_per_second = 0;
    config
}

/// Starts an order service.
pub async fn start_order(config: OrderConfig, keys: &Keys, options: ServeOptions) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(agora_order::serve_with(
        config,
        keys.order_keys(),
        options,
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    wait_until_serving(channel(addr), ORDER_SERVICE).await;
    Server::new(addr, stop, task)
}

pub fn order_client(server: &Server) -> OrderServiceClient<Channel> {
    OrderServiceClient::new(channel(server.addr))
}

/// Registers a customer and signs them in: (user id, token).
pub async fn customer(user: &Server, email: &str) -> (String, String) {
    let mut client = UserServiceClient::new(channel(user.addr));
    let created = client
        .create_user(upb::CreateUserRequest {
            email: email.into(),
            display_name: "Test Customer".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("create user")
        .into_inner()
        .user
        .unwrap();
    let token = client
        .authenticate(upb::AuthenticateRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("authenticate")
        .into_inner()
        .access_token;
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let order = get(client, order_id, token).await.expect("get order");
        if done(&order) {
            return order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order never reached the expected state: {order:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// The field paths of a status's BadRequest violations.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The ErrorInfo reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}
