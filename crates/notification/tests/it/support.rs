//! What the notification tests share: the suite plus a notification service,
//! notifiers that are slow or fail on demand, and the calls the tests make.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agora_notification::domain::Notification;
use agora_notification::{Notifier, NotifyError, RecordingNotifier};
use agora_proto::notification::v1 as pb;
use agora_proto::notification::v1::notification_service_client::NotificationServiceClient;
use agora_proto::order::v1 as order_pb;
use agora_proto::order::v1::order_service_client::OrderServiceClient;
pub use agora_testkit::suite::{SuiteOptions, TestSuite};
pub use agora_testkit::{TestDatabase, TestServer};
use agora_testkit::{services, sign_up, with_token};
use futures::future::BoxFuture;
use tonic::transport::Channel;

/// A recording notifier that takes `delay` per message and fails every
/// message for `failing_user` while `failing` is set.
#[derive(Clone, Default)]
pub struct TestNotifier {
    pub recorded: RecordingNotifier,
    pub delay: Duration,
    pub failing_user: Arc<std::sync::Mutex<String>>,
    pub failing: Arc<AtomicBool>,
}

impl Notifier for TestNotifier {
    fn send<'a>(
        &'a self,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            if self.failing.load(Ordering::SeqCst)
                && *self.failing_user.lock().unwrap() == notification.user_id
            {
                return Err(NotifyError("the mail server refused it".into()));
            }
            self.recorded.send(notification).await
        })
    }
}

/// The notification service beside `suite`, on `db`.
pub async fn start_notification(
    suite: &TestSuite,
    db: &TestDatabase,
    notifier: TestNotifier,
    max_attempts: u32,
) -> TestServer {
    services::start_notification(
        db,
        &suite.keys,
        suite.order.as_ref().unwrap().addr(),
        suite.payment.addr(),
        Arc::new(notifier),
        |config| {
            config.notify_max_attempts = max_attempts;
            agora_testkit::suite::follow_revocations(&mut config.serve, suite.user.addr());
        },
    )
    .await
}

/// Registers a customer: (user id, token).
pub async fn customer(suite: &TestSuite, email: &str) -> (String, String) {
    let (user, token) = sign_up(suite.user.channel(), email).await;
    (user.user_id, token)
}

/// Places an order for one `sku` paid with `card`; waits for its outcome.
pub async fn place(suite: &TestSuite, token: &str, sku: &str, card: &str) -> order_pb::Order {
    let request = order_pb::PlaceOrderRequest {
        lines: vec![order_pb::OrderLine {
            sku: sku.into(),
            quantity: 1,
            unit_price: None,
        }],
        payment_method_token: card.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    suite
        .orders()
        .place_order(with_token(request, token))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

/// Cancels a confirmed order and waits until it is CANCELLED.
pub async fn cancel(suite: &TestSuite, token: &str, order_id: &str) {
    let mut orders: OrderServiceClient<Channel> = suite.orders();
    orders
        .cancel_order(with_token(
            order_pb::CancelOrderRequest {
                order_id: order_id.into(),
                reason: "not needed".into(),
            },
            token,
        ))
        .await
        .unwrap();
    agora_testkit::eventually("the order to be cancelled", Duration::from_secs(30), || {
        let mut orders = orders.clone();
        async move {
            let order = orders
                .get_order(with_token(
                    order_pb::GetOrderRequest {
                        order_id: order_id.into(),
                    },
                    token,
                ))
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap();
            (order.state() == order_pb::OrderState::Cancelled).then_some(())
        }
    })
    .await;
}

/// Every notification `token` may see (all pages).
pub async fn notifications(
    server: &TestServer,
    token: &str,
    user_id: &str,
) -> Vec<pb::Notification> {
    let mut client = NotificationServiceClient::new(server.channel());
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_notifications(with_token(
                pb::ListNotificationsRequest {
                    page_size: 2,
                    page_token: page_token.clone(),
                    user_id: user_id.into(),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        all.extend(page.notifications);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Waits until `token` sees exactly `n` notifications; returns them.
pub async fn wait_for_notifications(
    server: &TestServer,
    token: &str,
    n: usize,
) -> Vec<pb::Notification> {
    agora_testkit::eventually(
        &format!("{n} notifications"),
        Duration::from_secs(30),
        || async move {
            let got = notifications(server, token, "").await;
            assert!(got.len() <= n, "more notifications than events: {got:#?}");
            (got.len() == n).then_some(got)
        },
    )
    .await
}

/// The dead letters (first page), as an admin with `admin_token` sees them.
pub async fn dead_letters(server: &TestServer, admin_token: &str) -> Vec<pb::DeadLetter> {
    NotificationServiceClient::new(server.channel())
        .list_dead_letters(with_token(
            pb::ListDeadLettersRequest::default(),
            admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}
