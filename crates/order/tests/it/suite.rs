//! All four services in-process over real gRPC, each on its own database of
//! the scenario's backend: user, inventory, payment (with an injectable
//! provider) and order (restartable on the same database, with an optional
//! fault hook), plus an optional inventory proxy that fails CommitReservation
//! on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use agora_inventory::InventoryConfig;
use agora_order::{FaultHook, OrderConfig, ServeOptions};
use agora_payment::PaymentConfig;
use agora_payment::provider::{
    ChargeInstruction, ChargeOutcome, PaymentProvider, ProviderError, RefundInstruction,
    RefundOutcome, async_trait,
};
use agora_proto::inventory::v1 as inv;
use agora_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use agora_proto::inventory::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use agora_proto::order::v1::order_service_client::OrderServiceClient;
use agora_proto::payment::v1 as pay;
use agora_proto::payment::v1::payment_service_client::PaymentServiceClient;
use agora_testkit::{TestDatabase, channel, wait_until_serving, with_token};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::support::*;

/// How long the test gateway takes to approve `tok_slow`.
pub const SLOW_CARD_DELAY: Duration = Duration::from_secs(2);

/// A payment provider that fails the next `failures` charges with a
/// transient error (u32::MAX: for ever), then behaves like the test gateway.
#[derive(Debug)]
pub struct FlakyProvider {
    inner: agora_payment::TestGateway,
    failures: AtomicU32,
}

impl FlakyProvider {
    pub fn failing(failures: u32) -> Arc<Self> {
        Arc::new(Self {
            inner: agora_payment::TestGateway::new(SLOW_CARD_DELAY),
            failures: AtomicU32::new(failures),
        })
    }

    pub fn reliable() -> Arc<Self> {
        Self::failing(0)
    }

    /// The gateway is back: no more failures.
    pub fn recover(&self) {
        self.failures.store(0, Ordering::SeqCst);
    }

    /// Charges that took money at the provider.
    pub fn captures(&self) -> u64 {
        self.inner.captures()
    }

    /// Refunds that returned money at the provider.
    pub fn refunds(&self) -> u64 {
        self.inner.refunds_made()
    }
}

#[async_trait]
impl PaymentProvider for FlakyProvider {
    async fn charge(
        &self,
        instruction: &ChargeInstruction,
    ) -> Result<ChargeOutcome, ProviderError> {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                0 => None,
                u32::MAX => Some(u32::MAX),
                n => Some(n - 1),
            })
            .is_ok();
        if failing {
            return Err(ProviderError::Unavailable("gateway down (test)".into()));
        }
        self.inner.charge(instruction).await
    }

    async fn refund(
        &self,
        instruction: &RefundInstruction,
    ) -> Result<RefundOutcome, ProviderError> {
        self.inner.refund(instruction).await
    }
}

/// Forwards InventoryService calls to the real service, failing
/// CommitReservation with FAILED_PRECONDITION while `fail_commits` is set:
/// a commit failure after the charge, over real gRPC.
#[derive(Clone)]
struct CommitFailingProxy {
    upstream: InventoryServiceClient<Channel>,
    fail_commits: Arc<AtomicBool>,
}

/// The same call for the upstream, with the caller's credentials.
fn forward<T>(request: Request<T>) -> Request<T> {
    let authorization = request.metadata().get("authorization").cloned();
    let mut forwarded = Request::new(request.into_inner());
    if let Some(value) = authorization {
        forwarded.metadata_mut().insert("authorization", value);
    }
    forwarded
}

#[tonic::async_trait]
impl InventoryService for CommitFailingProxy {
    async fn create_product(
        &self,
        r: Request<inv::CreateProductRequest>,
    ) -> Result<Response<inv::CreateProductResponse>, Status> {
        self.upstream.clone().create_product(forward(r)).await
    }
    async fn get_product(
        &self,
        r: Request<inv::GetProductRequest>,
    ) -> Result<Response<inv::GetProductResponse>, Status> {
        self.upstream.clone().get_product(forward(r)).await
    }
    async fn list_products(
        &self,
        r: Request<inv::ListProductsRequest>,
    ) -> Result<Response<inv::ListProductsResponse>, Status> {
        self.upstream.clone().list_products(forward(r)).await
    }
    async fn adjust_stock(
        &self,
        r: Request<inv::AdjustStockRequest>,
    ) -> Result<Response<inv::AdjustStockResponse>, Status> {
        self.upstream.clone().adjust_stock(forward(r)).await
    }
    async fn reserve_stock(
        &self,
        r: Request<inv::ReserveStockRequest>,
    ) -> Result<Response<inv::ReserveStockResponse>, Status> {
        self.upstream.clone().reserve_stock(forward(r)).await
    }
    async fn commit_reservation(
        &self,
        r: Request<inv::CommitReservationRequest>,
    ) -> Result<Response<inv::CommitReservationResponse>, Status> {
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(Status::failed_precondition(
                "the reservation cannot be committed (test proxy)",
            ));
        }
        self.upstream.clone().commit_reservation(forward(r)).await
    }
    async fn release_reservation(
        &self,
        r: Request<inv::ReleaseReservationRequest>,
    ) -> Result<Response<inv::ReleaseReservationResponse>, Status> {
        self.upstream.clone().release_reservation(forward(r)).await
    }
    async fn get_reservation(
        &self,
        r: Request<inv::GetReservationRequest>,
    ) -> Result<Response<inv::GetReservationResponse>, Status> {
        self.upstream.clone().get_reservation(forward(r)).await
    }
}

/// A change to the order service's settings.
pub type AdjustOrder = Box<dyn FnOnce(&mut OrderConfig)>;

/// How to start a suite.
#[derive(Default)]
pub struct SuiteOptions {
    /// The payment provider (default: reliable).
    pub provider: Option<Arc<FlakyProvider>>,
    /// Put the commit-failing proxy in front of inventory.
    pub commit_proxy: bool,
    /// Fault hook of the first order service.
    pub fault: Option<FaultHook>,
    /// Changes to the order service's settings.
    pub order: Option<AdjustOrder>,
    /// Run the payment service's reconciler (which completes PENDING
    /// payments on its own) at this interval; off by default.
    pub payment_reconcile: Option<Duration>,
}

/// The four services.
pub struct Suite {
    pub keys: Keys,
    pub user: Server,
    inventory: Server,
    payment: Server,
    proxy: Option<Server>,
    pub order: Server,
    pub provider: Arc<FlakyProvider>,
    pub fail_commits: Arc<AtomicBool>,
    order_config: OrderConfig,
    databases: Vec<TestDatabase>,
}

impl Suite {
    /// Starts every service; the order service uses `db`.
    pub async fn start(db: &TestDatabase, options: SuiteOptions) -> Self {
        let keys = Keys::new();
        let user_db = database_like(db).await;
        let inventory_db = database_like(db).await;
        let payment_db = database_like(db).await;
        let user = start_user(&user_db, &keys).await;

        let mut config = InventoryConfig::defaults();
        config.database.database_url = Some(inventory_db.url().to_owned());
        config.serve.rate_limit_per_second = 0;
        let inventory = spawn_server(|listener, stop| {
            agora_inventory::serve(config, keys.downstream_key_set(), listener, stop)
        })
        .await;
        wait_until_serving(
            channel(inventory.addr),
            "agora.inventory.v1.InventoryService",
        )
        .await;

        let provider = options.provider.unwrap_or_else(FlakyProvider::reliable);
        let mut config = PaymentConfig::defaults();
        config.database.database_url = Some(payment_db.url().to_owned());
        config.serve.rate_limit_per_second = 0;
        // The payment service's own reconciler would also complete PENDING
        // charges; keep it out of the way so each test shows the saga's part.
        config.reconcile_interval = options.payment_reconcile.unwrap_or(Duration::ZERO);
        let provider_dyn: Arc<dyn PaymentProvider> = provider.clone();
        let payment = spawn_server(|listener, stop| {
            agora_payment::serve_with_provider(
                config,
                keys.downstream_key_set(),
                provider_dyn,
                listener,
                stop,
            )
        })
        .await;
        wait_until_serving(channel(payment.addr), "agora.payment.v1.PaymentService").await;

        let fail_commits = Arc::new(AtomicBool::new(false));
        let proxy = if options.commit_proxy {
            let proxy = CommitFailingProxy {
                upstream: InventoryServiceClient::new(channel(inventory.addr)),
                fail_commits: fail_commits.clone(),
            };
            Some(
                spawn_server(|listener, stop| async move {
                    tonic::transport::Server::builder()
                        .add_service(InventoryServiceServer::new(proxy))
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::TcpListenerStream::new(listener),
                            stop,
                        )
                        .await?;
                    Ok(())
                })
                .await,
            )
        } else {
            None
        };

        let mut order_config = order_config(db);
        order_config.user_url = format!("http://{}", user.addr);
        order_config.inventory_url =
            format!("http://{}", proxy.as_ref().unwrap_or(&inventory).addr);
        order_config.payment_url = format!("http://{}", payment.addr);
        if let Some(adjust) = options.order {
            adjust(&mut order_config);
        }
        let order = start_order(
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
            proxy,
            order,
            provider,
            fail_commits,
            order_config,
            databases: vec![user_db, inventory_db, payment_db],
        }
    }

    /// The order service's settings (to start another process beside it).
    pub fn order_config(&self) -> OrderConfig {
        self.order_config.clone()
    }

    pub fn orders(&self) -> OrderServiceClient<Channel> {
        order_client(&self.order)
    }

    pub fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(channel(self.inventory.addr))
    }

    pub fn payments(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::new(channel(self.payment.addr))
    }

    /// Stops the order service without starting another.
    pub async fn stop_order(&mut self) -> OrderConfig {
        let placeholder = Server::detached();
        let previous = std::mem::replace(&mut self.order, placeholder);
        previous.stop().await;
        self.order_config.clone()
    }

    /// Starts the order service again after [`Suite::stop_order`].
    pub async fn start_order(&mut self, fault: Option<FaultHook>) {
        self.order = start_order(
            self.order_config.clone(),
            &self.keys,
            ServeOptions { fault },
        )
        .await;
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
            .unwrap()
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
    pub async fn assert_reconciled(&self, order: &pb_order::Order) {
        let payments = self.payments_of(&order.order_id).await;
        let captured: Vec<_> = payments
            .iter()
            .filter(|p| p.state() == pay::PaymentState::Captured)
            .collect();
        let reservation = self.reservation_of(&order.order_id).await;
        let reservation_state = reservation.as_ref().map(|r| r.state());
        match order.state() {
            pb_order::OrderState::Confirmed => {
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
                    order.total.as_ref().unwrap().amount_minor
                );
                assert_eq!(
                    reservation_state,
                    Some(inv::ReservationState::Committed),
                    "{order:#?}"
                );
            }
            pb_order::OrderState::Failed | pb_order::OrderState::Cancelled => {
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

    pub async fn stop(mut self) {
        if self.order.is_running() {
            self.order.stop().await;
        }
        if let Some(proxy) = self.proxy.take() {
            proxy.stop().await;
        }
        self.payment.stop().await;
        self.inventory.stop().await;
        self.user.stop().await;
        for db in self.databases {
            db.cleanup().await;
        }
    }
}

pub use agora_proto::order::v1 as pb_order;

/// Binds a port and runs `serve(listener, stop)` on it.
async fn spawn_server<F, Fut>(serve: F) -> Server
where
    F: FnOnce(tokio::net::TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        Box::pin(async {
            let _ = stopped.await;
        }),
    ));
    Server::new(addr, stop, task)
}
