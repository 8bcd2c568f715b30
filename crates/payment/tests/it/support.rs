//! Starts a payment service for one test and hands back typed clients, the
//! gateway behind it (to count provider calls), and test providers that fail
//! on purpose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use agora_interceptors::auth::Role;
use agora_payment::provider::{
    ChargeInstruction, ChargeOutcome, PaymentProvider, ProviderError, RefundInstruction,
    RefundOutcome, async_trait,
};
use agora_payment::{PaymentConfig, TestGateway};
use agora_proto::payment::v1 as pb;
use agora_proto::payment::v1::payment_service_client::PaymentServiceClient;
use agora_proto::r#type::v1::Money;
use agora_testkit::{TestDatabase, TestKeys, channel, wait_until_serving, with_token};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const SERVICE: &str = "agora.payment.v1.PaymentService";

/// A running payment service.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: PaymentServiceClient<Channel>,
    pub keys: TestKeys,
    /// The gateway the service's provider ends at.
    pub gateway: Arc<TestGateway>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A gateway whose `tok_slow` takes half a second.
pub fn gateway() -> Arc<TestGateway> {
    Arc::new(TestGateway::new(Duration::from_millis(500)))
}

/// The service over a fresh test gateway, reconciler off.
pub async fn spawn_app(db: &TestDatabase) -> TestApp {
    let gateway = gateway();
    spawn_with(db, gateway.clone(), gateway, TestKeys::new(), |_| {}).await
}

/// The service with `provider` in front of `gateway`, trusting `keys`.
pub async fn spawn_with(
    db: &TestDatabase,
    gateway: Arc<TestGateway>,
    provider: Arc<dyn PaymentProvider>,
    keys: TestKeys,
    adjust: impl FnOnce(&mut PaymentConfig),
) -> TestApp {
    let mut config = PaymentConfig::defaults();
    config.database.database_url = Some(db.url().to_owned());
    config.reconcile_interval = Duration::ZERO;
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(agora_payment::serve_with_provider(
        config,
        keys.key_set.clone(),
        provider,
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let channel = channel(addr);
    wait_until_serving(channel.clone(), SERVICE).await;
    TestApp {
        addr,
        client: PaymentServiceClient::new(channel),
        keys,
        gateway,
        stop: Some(stop),
        task,
    }
}

impl TestApp {
    pub fn channel(&self) -> Channel {
        channel(self.addr)
    }

    pub fn service_token(&self) -> String {
        self.keys.token("agora-order", Role::Service)
    }

    pub fn admin_token(&self) -> String {
        self.keys
            .token(&uuid::Uuid::now_v7().to_string(), Role::Admin)
    }

    pub fn customer_token(&self, user_id: &str) -> String {
        self.keys.token(user_id, Role::Customer)
    }

    /// Charge as the order service.
    pub async fn charge(&self, request: pb::ChargeRequest) -> Result<pb::Payment, tonic::Status> {
        self.client
            .clone()
            .charge(with_token(request, &self.service_token()))
            .await
            .map(|r| r.into_inner().payment.expect("payment"))
    }

    /// Refund as the order service.
    pub async fn refund(
        &self,
        request: pb::RefundRequest,
    ) -> Result<pb::RefundResponse, tonic::Status> {
        self.client
            .clone()
            .refund(with_token(request, &self.service_token()))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get(&self, payment_id: &str, token: &str) -> Result<pb::Payment, tonic::Status> {
        self.client
            .clone()
            .get_payment(with_token(
                pb::GetPaymentRequest {
                    payment_id: payment_id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().payment.expect("payment"))
    }

    /// Every payment of an order, as an admin sees them.
    pub async fn order_payments(&self, order_id: &str) -> Vec<pb::Payment> {
        self.client
            .clone()
            .list_payments(with_token(
                pb::ListPaymentsRequest {
                    order_id: order_id.into(),
                    ..Default::default()
                },
                &self.admin_token(),
            ))
            .await
            .expect("list payments")
            .into_inner()
            .payments
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }

    /// Kills the server where it stands, as a crash would: its future is
    /// dropped mid-call, nothing is drained or recorded.
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A fresh UUIDv7, as ids are.
pub fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn usd(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "USD".into(),
        amount_minor,
    })
}

/// A charge of `amount` cents for a new order and user.
pub fn charge_request(token: &str, amount: i64) -> pb::ChargeRequest {
    pb::ChargeRequest {
        order_id: id(),
        user_id: id(),
        amount: usd(amount),
        payment_method_token: token.into(),
        idempotency_key: format!("charge-{}", id()),
    }
}

pub fn refund_request(payment_id: &str, amount: i64) -> pb::RefundRequest {
    pb::RefundRequest {
        payment_id: payment_id.into(),
        amount: usd(amount),
        reason: "customer returned the goods".into(),
        idempotency_key: format!("refund-{}", id()),
    }
}

pub fn state(payment: &pb::Payment) -> pb::PaymentState {
    pb::PaymentState::try_from(payment.state).expect("known state")
}

pub fn history(payment: &pb::Payment) -> Vec<pb::PaymentState> {
    payment
        .history
        .iter()
        .map(|t| pb::PaymentState::try_from(t.state).expect("known state"))
        .collect()
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

/// Polls `check` every 20 ms until it is true, for at most `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === providers that fail on purpose ===

/// Fails the first `failures` charge and refund calls with UNAVAILABLE before
/// they reach the gateway (nothing happens there), then passes calls
/// through. Records every provider key it is given.
#[derive(Debug)]
pub struct Flaky {
    pub gateway: Arc<TestGateway>,
    failures_left: AtomicU32,
    pub charge_keys: Mutex<Vec<String>>,
    pub refund_keys: Mutex<Vec<String>>,
}

impl Flaky {
    pub fn new(gateway: Arc<TestGateway>, failures: u32) -> Self {
        Self {
            gateway,
            failures_left: AtomicU32::new(failures),
            charge_keys: Mutex::default(),
            refund_keys: Mutex::default(),
        }
    }

    fn fail_now(&self) -> bool {
        self.failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[async_trait]
impl PaymentProvider for Flaky {
    async fn charge(
        &self,
        instruction: &ChargeInstruction,
    ) -> Result<ChargeOutcome, ProviderError> {
        self.charge_keys
            .lock()
            .unwrap()
            .push(instruction.idempotency_key.clone());
        if self.fail_now() {
            return Err(ProviderError::Unavailable("flaky: connection reset".into()));
        }
        self.gateway.charge(instruction).await
    }

    async fn refund(
        &self,
        instruction: &RefundInstruction,
    ) -> Result<RefundOutcome, ProviderError> {
        self.refund_keys
            .lock()
            .unwrap()
            .push(instruction.idempotency_key.clone());
        if self.fail_now() {
            return Err(ProviderError::Unavailable("flaky: connection reset".into()));
        }
        self.gateway.refund(instruction).await
    }
}

/// Passes the first charge and refund through to the gateway (money moves)
/// and then loses the answer: the service sees UNAVAILABLE, as when a
/// response is lost on the way back. Later calls pass through untouched.
#[derive(Debug)]
pub struct LosesFirstAnswer {
    pub gateway: Arc<TestGateway>,
    charge_lost: AtomicBool,
    refund_lost: AtomicBool,
}

impl LosesFirstAnswer {
    pub fn new(gateway: Arc<TestGateway>) -> Self {
        Self {
            gateway,
            charge_lost: AtomicBool::new(false),
            refund_lost: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl PaymentProvider for LosesFirstAnswer {
    async fn charge(
        &self,
        instruction: &ChargeInstruction,
    ) -> Result<ChargeOutcome, ProviderError> {
        let answer = self.gateway.charge(instruction).await;
        if !self.charge_lost.swap(true, Ordering::SeqCst) {
            return Err(ProviderError::Unavailable("answer lost".into()));
        }
        answer
    }

    async fn refund(
        &self,
        instruction: &RefundInstruction,
    ) -> Result<RefundOutcome, ProviderError> {
        let answer = self.gateway.refund(instruction).await;
        if !self.refund_lost.swap(true, Ordering::SeqCst) {
            return Err(ProviderError::Unavailable("answer lost".into()));
        }
        answer
    }
}

/// Charges at the gateway and then never answers: the process holding the
/// call is about to crash. Refunds pass through.
#[derive(Debug)]
pub struct ChargesThenHangs {
    pub gateway: Arc<TestGateway>,
}

#[async_trait]
impl PaymentProvider for ChargesThenHangs {
    async fn charge(
        &self,
        instruction: &ChargeInstruction,
    ) -> Result<ChargeOutcome, ProviderError> {
        let _ = self.gateway.charge(instruction).await;
        std::future::pending().await
    }

    async fn refund(
        &self,
        instruction: &RefundInstruction,
    ) -> Result<RefundOutcome, ProviderError> {
        self.gateway.refund(instruction).await
    }
}
