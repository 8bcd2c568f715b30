//! An inventory service for one test, with its typed client and the calls
//! most scenarios need. Starting it, tokens and error details come from
//! `agora_testkit`.

use std::time::Duration;

use agora_interceptors::db::{Database, PoolSettings};
use agora_inventory::InventoryConfig;
use agora_proto::Money;
use agora_proto::inventory::v1 as pb;
use agora_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use agora_testkit::services::{self, INVENTORY};
use agora_testkit::{Keys, TestDatabase, TestServer, with_token};
use tonic::transport::Channel;

pub const INVENTORY_SERVICE: &str = INVENTORY;

/// A running inventory service.
pub struct TestApp {
    pub server: TestServer,
    pub client: InventoryServiceClient<Channel>,
    pub keys: Keys,
    pub admin: String,
    pub service: String,
    pub database_url: String,
}

pub async fn spawn_app(db: &TestDatabase) -> TestApp {
    spawn_with(db, |_| {}).await
}

pub async fn spawn_with(db: &TestDatabase, adjust: impl FnOnce(&mut InventoryConfig)) -> TestApp {
    let keys = Keys::new();
    let server = services::start_inventory(db, &keys, adjust).await;
    TestApp {
        client: InventoryServiceClient::new(server.channel()),
        server,
        admin: keys.token("test-admin", agora_interceptors::auth::Role::Admin),
        service: keys.service_token(),
        keys,
        database_url: db.url().to_owned(),
    }
}

impl TestApp {
    /// A new connection to the service (a client of its own).
    pub fn channel(&self) -> Channel {
        self.server.channel()
    }

    /// A customer token.
    pub fn customer_token(&self) -> String {
        self.keys.customer_token(&uuid::Uuid::now_v7().to_string())
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
    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.shut_down().await
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
