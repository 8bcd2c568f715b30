//! Starts an inventory service for one test and hands back typed clients and
//! the calls most scenarios need.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agora_interceptors::auth::Role;
use agora_interceptors::db::{Database, PoolSettings};
use agora_inventory::InventoryConfig;
use agora_proto::Money;
use agora_proto::inventory::v1 as pb;
use agora_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use agora_testkit::{TestDatabase, TestKeys, channel, wait_until_serving, with_token};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const INVENTORY_SERVICE: &str = "agora.inventory.v1.InventoryService";

/// A running inventory service.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: InventoryServiceClient<Channel>,
    pub keys: TestKeys,
    pub admin: String,
    pub service: String,
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app(db: &TestDatabase) -> TestApp {
    spawn_with(db, |_| {}).await
}

pub async fn spawn_with(db: &TestDatabase, adjust: impl FnOnce(&mut InventoryConfig)) -> TestApp {
    let keys = TestKeys::new();
    let mut config = InventoryConfig::defaults();
    config.database.database_url = Some(db.url().to_owned());
    config.serve.metrics_listen = None;
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(agora_inventory::serve(
        config,
        keys.key_set.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let channel = channel(addr);
    wait_until_serving(channel.clone(), INVENTORY_SERVICE).await;
    TestApp {
        addr,
        client: InventoryServiceClient::new(channel),
        admin: keys.token("test-admin", Role::Admin),
        service: keys.token("order-service", Role::Service),
        keys,
        database_url: db.url().to_owned(),
        stop: Some(stop),
        task,
    }
}

impl TestApp {
    /// A new connection to the service (a client of its own).
    pub fn channel(&self) -> Channel {
        channel(self.addr)
    }

    /// A customer token.
    pub fn customer_token(&self) -> String {
        self.keys
            .token(&uuid::Uuid::now_v7().to_string(), Role::Customer)
    }

    /// Creates a product priced `price` EUR cents and stocks it with `stock`
    /// units (when positive).
    pub async fn product(&self, sku: &str, price: i64, stock: i64) -> pb::Product {
        self.product_in(sku, price, "EUR", stock).await
    }

    pub async fn product_in(
        &self,
        sku: &str,
        price: i64,
        currency: &str,
        stock: i64,
    ) -> pb::Product {
        let product = self
            .client
            .clone()
            .create_product(with_token(
                pb::CreateProductRequest {
                    product: Some(pb::Product {
                        sku: sku.into(),
                        name: format!("Product {sku}"),
                        description: "for tests".into(),
                        price: Some(money(price, currency)),
                        ..Default::default()
                    }),
                },
                &self.admin,
            ))
            .await
            .expect("create product")
            .into_inner()
            .product
            .unwrap();
        if stock == 0 {
            return product;
        }
        self.adjust(sku, stock).await.expect("stock the product")
    }

    /// AdjustStock with a fresh request id.
    pub async fn adjust(&self, sku: &str, delta: i64) -> Result<pb::Product, tonic::Status> {
        self.adjust_with(sku, delta, &uuid::Uuid::now_v7().to_string())
            .await
    }

    pub async fn adjust_with(
        &self,
        sku: &str,
        delta: i64,
        request_id: &str,
    ) -> Result<pb::Product, tonic::Status> {
        self.client
            .clone()
            .adjust_stock(with_token(
                pb::AdjustStockRequest {
                    sku: sku.into(),
                    delta,
                    reason: "test adjustment".into(),
                    request_id: request_id.into(),
                },
                &self.admin,
            ))
            .await
            .map(|r| r.into_inner().product.unwrap())
    }

    /// GetProduct, anonymously (the catalogue is public).
    pub async fn get_product(&self, sku: &str) -> pb::Product {
        self.client
            .clone()
            .get_product(pb::GetProductRequest { sku: sku.into() })
            .await
            .expect("get product")
            .into_inner()
            .product
            .unwrap()
    }

    /// ReserveStock as the order service, with the server's default ttl.
    pub async fn reserve(
        &self,
        order_id: &str,
        lines: &[(&str, i64)],
    ) -> Result<pb::Reservation, tonic::Status> {
        self.reserve_for(order_id, lines, None).await
    }

    pub async fn reserve_for(
        &self,
        order_id: &str,
        lines: &[(&str, i64)],
        ttl: Option<Duration>,
    ) -> Result<pb::Reservation, tonic::Status> {
        reserve_on(
            &mut self.client.clone(),
            &self.service,
            order_id,
            lines,
            ttl,
        )
        .await
    }

    pub async fn commit(&self, order_id: &str) -> Result<pb::Reservation, tonic::Status> {
        self.client
            .clone()
            .commit_reservation(with_token(
                pb::CommitReservationRequest {
                    order_id: order_id.into(),
                },
                &self.service,
            ))
            .await
            .map(|r| r.into_inner().reservation.unwrap())
    }

    pub async fn release(&self, order_id: &str) -> Result<pb::Reservation, tonic::Status> {
        self.client
            .clone()
            .release_reservation(with_token(
                pb::ReleaseReservationRequest {
                    order_id: order_id.into(),
                },
                &self.service,
            ))
            .await
            .map(|r| r.into_inner().reservation.unwrap())
    }

    pub async fn get_reservation(&self, order_id: &str) -> Result<pb::Reservation, tonic::Status> {
        self.client
            .clone()
            .get_reservation(with_token(
                pb::GetReservationRequest {
                    order_id: order_id.into(),
                },
                &self.service,
            ))
            .await
            .map(|r| r.into_inner().reservation.unwrap())
    }

    /// A connection of the test's own to the service's database, to check
    /// what the API cannot show (audit rows, sums over reservations).
    pub async fn database(&self) -> Database {
        Database::connect(&self.database_url, &PoolSettings::default())
            .await
            .expect("test connection to the service's database")
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }
}

/// ReserveStock over `client`.
pub async fn reserve_on(
    client: &mut InventoryServiceClient<Channel>,
    token: &str,
    order_id: &str,
    lines: &[(&str, i64)],
    ttl: Option<Duration>,
) -> Result<pb::Reservation, tonic::Status> {
    client
        .reserve_stock(with_token(
            pb::ReserveStockRequest {
                order_id: order_id.into(),
                lines: lines
                    .iter()
                    .map(|(sku, quantity)| pb::ReservationLine {
                        sku: (*sku).into(),
                        quantity: *quantity,
                        unit_price: None,
                    })
                    .collect(),
                ttl: ttl.map(|ttl| prost_types::Duration {
                    seconds: ttl.as_secs() as i64,
                    nanos: ttl.subsec_nanos() as i32,
                }),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().reservation.unwrap())
}

pub fn money(amount_minor: i64, currency: &str) -> Money {
    Money {
        currency_code: currency.into(),
        amount_minor,
    }
}

/// A fresh order id (a UUIDv7, as the order service mints).
pub fn order_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Polls `check` until it returns `Some`, or panics after `deadline`. For
/// conditions that become true on their own (expiry), never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// The ErrorInfo metadata value under `key`.
pub fn metadata(status: &tonic::Status, key: &str) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get(key).cloned())
        .unwrap_or_default()
}

/// The (subject, description) of each PreconditionFailure violation.
pub fn precondition_subjects(status: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_details_precondition_failure()
        .map(|failure| {
            failure
                .violations
                .into_iter()
                .map(|v| {
                    assert_eq!(v.r#type, "STOCK");
                    (v.subject, v.description)
                })
                .collect()
        })
        .unwrap_or_default()
}
