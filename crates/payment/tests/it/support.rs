//! A payment service for one test, with its typed client, the gateway
//! behind it (to count provider calls), the calls most scenarios need, and
//! the providers only these tests use. Starting it, tokens, error details
//! and the flaky provider come from `agora_testkit`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agora_payment::provider::{
    ChargeInstruction, ChargeOutcome, PaymentProvider, ProviderError, RefundInstruction,
    RefundOutcome, async_trait,
};
use agora_payment::{PaymentConfig, TestGateway};
use agora_proto::payment::v1 as pb;
use agora_proto::payment::v1::payment_service_client::PaymentServiceClient;
use agora_proto::r#type::v1::Money;
use agora_testkit::services::{self, PAYMENT};
use agora_testkit::{Keys, TestDatabase, TestServer, with_token};
use tonic::transport::Channel;

pub const SERVICE: &str = PAYMENT;

/// A running payment service.
pub struct TestApp {
    pub server: TestServer,
    pub client: PaymentServiceClient<Channel>,
    pub keys: Keys,
    /// The gateway the service's provider ends at.
    pub gateway: Arc<TestGateway>,
}

/// A gateway whose `tok_slow` takes half a second.
pub fn gateway() -> Arc<TestGateway> {
    Arc::new(TestGateway::new(Duration::from_millis(500)))
}

/// The service over a fresh test gateway, reconciler off.
pub async fn spawn_app(db: &TestDatabase) -> TestApp {
    let gateway = gateway();
    spawn_with(db, gateway.clone(), gateway, Keys::new(), |_| {}).await
}

/// The service with `provider` in front of `gateway`, trusting `keys`.
pub async fn spawn_with(
    db: &TestDatabase,
    gateway: Arc<TestGateway>,
    provider: Arc<dyn PaymentProvider>,
    keys: Keys,
    adjust: impl FnOnce(&mut PaymentConfig),
) -> TestApp {
    let server = services::start_payment(db, &keys, provider, adjust).await;
    TestApp {
        client: PaymentServiceClient::new(server.channel()),
        server,
        keys,
        gateway,
    }
}

impl TestApp {
    pub fn channel(&self) -> Channel {
        self.server.channel()
    }

    pub fn service_token(&self) -> String {
        self.keys.service_token()
    }

    pub fn admin_token(&self) -> String {
        self.keys.admin_token()
    }

    pub fn customer_token(&self, user_id: &str) -> String {
        self.keys.customer_token(user_id)
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
    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.shut_down().await
    }

    /// Kills the server where it stands, as a crash would: its future is
    /// dropped mid-call, nothing is drained or recorded.
    pub async fn crash(self) {
        self.server.crash().await;
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

// === providers that fail on purpose ===

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
