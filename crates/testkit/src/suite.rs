//! The four services of a scenario together, in-process over real gRPC,
//! each on its own database of the scenario's backend: user, inventory,
//! payment (behind a [`FlakyProvider`]) and order (stoppable and restartable
//! on the same database, with an optional fault hook), plus the calls and
//! the end-to-end invariant the saga tests check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_interceptors::ServeArgs;
use agora_interceptors::outbox::RelaySettings;
use agora_order::{FaultHook, OrderConfig, ServeOptions};
use agora_payment::{PaymentProvider, TestGateway};
use agora_proto::inventory::v1 as inv;
use agora_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use agora_proto::order::v1 as ord;
use agora_proto::order::v1::order_service_client::OrderServiceClient;
use agora_proto::payment::v1 as pay;
use agora_proto::payment::v1::payment_service_client::PaymentServiceClient;
use futures::future::BoxFuture;
use tonic::transport::Channel;

use crate::providers::FlakyProvider;
use crate::services::{self, Keys};
use crate::{TestDatabase, TestServer, with_token};

/// How long the suite's test gateway takes to approve `tok_slow`.
pub const SLOW_CARD_DELAY: Duration = Duration::from_secs(2);

/// A change to the order service's settings.
pub type AdjustOrder = Box<dyn FnOnce(&mut OrderConfig) + Send>;

/// Something put in front of inventory for the order service to call
/// instead (a proxy that fails on demand, say): given inventory's address,
/// the server to call.
pub type InventoryFront = Box<dyn FnOnce(SocketAddr) -> BoxFuture<'static, TestServer> + Send>;

/// How to start a suite.
#[derive(Default)]
pub struct SuiteOptions {
    /// The payment provider (default: one that fails nothing).
    pub provider: Option<Arc<FlakyProvider>>,
    /// Put this in front of inventory for the order service.
    pub inventory_front: Option<InventoryFront>,
    /// Fault hook of the first order service.
    pub fault: Option<FaultHook>,
    /// Changes to the order service's settings.
    pub order: Option<AdjustOrder>,
    /// Run the payment service's reconciler (which completes PENDING
    /// payments on its own) at this interval; off by default, so each test
    /// shows the saga's part.
    pub payment_reconcile: Option<Duration>,
    /// Every service relays its events to this NATS server (subject
    /// prefix included), as with `AGORA_NATS_URL`; none by default.
    pub nats: Option<RelaySettings>,
}

/// A provider that fails nothing, in front of a fresh test gateway.
pub fn reliable_provider() -> Arc<FlakyProvider> {
    Arc::new(FlakyProvider::new(Arc::new(TestGateway::new(
        SLOW_CARD_DELAY,
    ))))
}

/// The order service's settings for tests: fast retries, short leases and
/// recovery, no rate limit (tests place orders in bursts).
pub fn order_config(db: &TestDatabase) -> OrderConfig {
    let mut config = OrderConfig::defaults();
    config.database.database_url = Some(db.url().to_owned());
    config.saga_step_attempts = 3;
    config.saga_retry_base = Duration::from_millis(20);
    config.saga_retry_max = Duration::from_millis(200);
    config.saga_compensation_retry_max = Duration::from_millis(300);
    config.saga_attempt_timeout = Duration::from_secs(3);
    config.saga_charge_timeout = Duration::from_secs(3);
    config.saga_charge_resolve_within = Duration::from_secs(20);
    config.saga_lease_ttl = Duration::from_secs(2);
    config.saga_recovery_interval = Duration::from_millis(200);
    config.watch_poll_interval = Duration::from_millis(200);
    config.serve.shutdown_grace = Duration::from_secs(2);
    config.serve.rate_limit_per_second = 0;
    config.serve.revocation_poll = Duration::ZERO;
    config
}

/// How often the suite's services read the revocation list.
pub const REVOCATION_POLL: Duration = Duration::from_millis(250);

/// Makes a service follow the revocation list of the user service at `user`.
pub fn follow_revocations(serve: &mut agora_interceptors::ServeArgs, user: std::net::SocketAddr) {
    serve.revocation_url = format!("http://{user}");
    serve.revocation_poll = REVOCATION_POLL;
}

/// The four services.
pub struct TestSuite {
    /// The scenario's keys.
    pub keys: Keys,
    /// The user service.
    pub user: TestServer,
    /// The inventory service.
    pub inventory: TestServer,
    /// The payment service.
    pub payment: TestServer,
    /// What the order service calls as inventory, when not inventory itself.
    pub inventory_front: Option<TestServer>,
    /// The order service, while it runs.
    pub order: Option<TestServer>,
    /// The payment provider behind the payment service.
    pub provider: Arc<FlakyProvider>,
    order_config: OrderConfig,
    databases: Vec<TestDatabase>,
}

impl TestSuite {
    /// Starts every service; the order service uses `db`, the others fresh
    /// databases of the same backend.
    pub async fn start(db: &TestDatabase, options: SuiteOptions) -> Self {
        let keys = Keys::new();
        let user_db = TestDatabase::like(db).await;
        let inventory_db = TestDatabase::like(db).await;
        let payment_db = TestDatabase::like(db).await;
        let nats = options.nats;
        let relay = |serve: &mut ServeArgs| {
            if let Some(nats) = &nats {
                serve.nats_url = Some(nats.url.clone());
                serve.nats_subject_prefix = nats.prefix.clone();
            }
        };
        let user = services::start_user(&user_db, &keys, |config| relay(&mut config.serve)).await;
        let inventory = services::start_inventory(&inventory_db, &keys, |config| {
            config.serve.rate_limit_per_second = 0;
            follow_revocations(&mut config.serve, user.addr());
            relay(&mut config.serve);
        })
        .await;
        let provider = options.provider.unwrap_or_else(reliable_provider);
        let provider_dyn: Arc<dyn PaymentProvider> = provider.clone();
        let payment = services::start_payment(&payment_db, &keys, provider_dyn, |config| {
            config.serve.rate_limit_per_second = 0;
            config.reconcile_interval = options.payment_reconcile.unwrap_or(Duration::ZERO);
            follow_revocations(&mut config.serve, user.addr());
            relay(&mut config.serve);
        })
        .await;
        let inventory_front = match options.inventory_front {
            Some(front) => Some(front(inventory.addr()).await),
            None => None,
        };

        let mut order_config = order_config(db);
        order_config.user_url = format!("http://{}", user.addr());
        order_config.inventory_url = format!(
            "http://{}",
            inventory_front.as_ref().unwrap_or(&inventory).addr()
        );
        order_config.payment_url = format!("http://{}", payment.addr());
        follow_revocations(&mut order_config.serve, user.addr());
        relay(&mut order_config.serve);
        if let Some(adjust) = options.order {
            adjust(&mut order_config);
        }
        let order = services::start_order(
            order_config.clone(),
            &keys,
            ServeOptions {
                fault: options.fault,
            },
        )
        .await;
        Self {
            keys,
            user,
            inventory,
            payment,
            inventory_front,
            order: Some(order),
            provider,
            order_config,
            databases: vec![user_db, inventory_db, payment_db],
        }
    }

    /// The order service's settings (to start another process beside it).
    pub fn order_config(&self) -> OrderConfig {
        self.order_config.clone()
    }

    /// A client of the running order service.
    pub fn orders(&self) -> OrderServiceClient<Channel> {
        let order = self.order.as_ref().expect("the order service runs");
        OrderServiceClient::new(order.channel())
    }

    /// A client of inventory.
    pub fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(self.inventory.channel())
    }

    /// A client of payment.
    pub fn payments(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::new(self.payment.channel())
    }

    /// Stops the order service (cleanly) without starting another.
    pub async fn stop_order(&mut self) {
        if let Some(order) = self.order.take() {
            order.stop().await;
        }
    }

    /// Starts the order service again after [`Self::stop_order`].
    pub async fn start_order(&mut self, fault: Option<FaultHook>) {
        assert!(self.order.is_none(), "stop the order service first");
        self.order = Some(
            services::start_order(
                self.order_config.clone(),
                &self.keys,
                ServeOptions { fault },
            )
            .await,
        );
    }

    /// A product with `stock` units at `price` EUR cents.
    pub async fn product(&self, sku: &str, price: i64, stock: i64) {
        let admin = self.keys.admin_token();
        let mut inventory = self.inventory();
        inventory
            .create_product(with_token(
                inv::CreateProductRequest {
                    product: Some(inv::Product {
                        sku: sku.into(),
                        name: format!("Product {sku}"),
                        price: Some(agora_proto::Money {
                            currency_code: "EUR".into(),
                            amount_minor: price,
                        }),
                        ..Default::default()
                    }),
                },
                &admin,
            ))
            .await
            .expect("create product");
        inventory
            .adjust_stock(with_token(
                inv::AdjustStockRequest {
                    sku: sku.into(),
                    delta: stock,
                    reason: "initial stock".into(),
                    request_id: uuid::Uuid::now_v7().to_string(),
                },
                &admin,
            ))
            .await
            .expect("stock product");
    }

    /// The product as inventory sees it now.
    pub async fn stock(&self, sku: &str) -> inv::Product {
        self.inventory()
            .get_product(with_token(
                inv::GetProductRequest { sku: sku.into() },
                &self.keys.admin_token(),
            ))
            .await
            .expect("get product")
            .into_inner()
            .product
            .expect("the product")
    }

    /// Every payment the payment service has for the order.
    pub async fn payments_of(&self, order_id: &str) -> Vec<pay::Payment> {
        self.payments()
            .list_payments(with_token(
                pay::ListPaymentsRequest {
                    order_id: order_id.into(),
                    page_size: 100,
                    ..Default::default()
                },
                &self.keys.admin_token(),
            ))
            .await
            .expect("list payments")
            .into_inner()
            .payments
    }

    /// The order's reservation, if inventory has one.
    pub async fn reservation_of(&self, order_id: &str) -> Option<inv::Reservation> {
        match self
            .inventory()
            .get_reservation(with_token(
                inv::GetReservationRequest {
                    order_id: order_id.into(),
                },
                &self.keys.admin_token(),
            ))
            .await
        {
            Ok(response) => response.into_inner().reservation,
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => panic!("get reservation: {status:?}"),
        }
    }

    /// Money kept for the order: captured minus refunded, over its payments.
    pub async fn net_charged(&self, order_id: &str) -> i64 {
        self.payments_of(order_id)
            .await
            .iter()
            .filter(|p| {
                matches!(
                    p.state(),
                    pay::PaymentState::Captured
                        | pay::PaymentState::PartiallyRefunded
                        | pay::PaymentState::Refunded
                )
            })
            .map(|p| {
                p.amount.as_ref().map_or(0, |m| m.amount_minor)
                    - p.refunded_amount.as_ref().map_or(0, |m| m.amount_minor)
            })
            .sum()
    }

    /// The saga's invariant for one settled order: CONFIRMED ⇔ exactly one
    /// capture not refunded (of the order's total) and committed stock;
    /// FAILED/CANCELLED ⇔ nothing kept and no stock held or sold.
    pub async fn assert_reconciled(&self, order: &ord::Order) {
        let payments = self.payments_of(&order.order_id).await;
        let captured: Vec<_> = payments
            .iter()
            .filter(|p| p.state() == pay::PaymentState::Captured)
            .collect();
        let reservation = self.reservation_of(&order.order_id).await;
        let reservation_state = reservation.as_ref().map(|r| r.state());
        match order.state() {
            ord::OrderState::Confirmed => {
                assert_eq!(
                    captured.len(),
                    1,
                    "one capture for {order:#?}: {payments:#?}"
                );
                assert_eq!(
                    captured[0].amount.as_ref().map(|m| m.amount_minor),
                    order.total.as_ref().map(|m| m.amount_minor)
                );
                assert_eq!(
                    self.net_charged(&order.order_id).await,
                    order.total.as_ref().map_or(0, |m| m.amount_minor)
                );
                assert_eq!(
                    reservation_state,
                    Some(inv::ReservationState::Committed),
                    "{order:#?}"
                );
            }
            ord::OrderState::Failed | ord::OrderState::Cancelled => {
                assert_eq!(
                    self.net_charged(&order.order_id).await,
                    0,
                    "{order:#?}: {payments:#?}"
                );
                assert!(
                    matches!(
                        reservation_state,
                        None | Some(
                            inv::ReservationState::Released | inv::ReservationState::Expired
                        )
                    ),
                    "no stock held or sold for {order:#?}: {reservation:#?}"
                );
            }
            other => panic!("order not settled: {other:?}"),
        }
    }

    /// Stops every service cleanly and drops the databases.
    pub async fn stop(mut self) {
        self.stop_order().await;
        if let Some(front) = self.inventory_front.take() {
            front.stop().await;
        }
        self.payment.stop().await;
        self.inventory.stop().await;
        self.user.stop().await;
        for db in self.databases {
            db.cleanup().await;
        }
    }
}
