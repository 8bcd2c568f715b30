//! `agora events tail` against the in-memory suite: one line per event, from
//! every producing service, filtered by type; and the notification service,
//! part of the suite, notifying the customer of the demo's orders.

use std::time::Duration;

use agora::suite::{Service, Storage};
use agora_proto::notification::v1 as pb;
use agora_testkit::with_token;
use tokio::sync::mpsc;

use crate::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_prints_each_event_and_notification_follows_the_orders() {
    let suite = start(Storage::Ephemeral).await;
    let (lines, mut received) = mpsc::unbounded_channel();
    let producers = agora::events::producers(|service| suite.addr(service));
    let token = suite.admin.token.clone();
    let tail = tokio::spawn(async move {
        agora::events::tail(producers, Vec::new(), None, &token, move |line| {
            let _ = lines.send(line);
        })
        .await
    });

    // The two seeded accounts were registered; the demo catalogue stocked.
    let mut seen = Vec::new();
    while !(seen
        .iter()
        .filter(|l: &&String| l.contains("agora.user.UserRegistered"))
        .count()
        == 2
        && seen
            .iter()
            .any(|l: &String| l.contains("agora.inventory.StockAdjusted")))
    {
        let line = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .unwrap_or_else(|_| panic!("no more lines; got {seen:#?}"))
            .unwrap();
        seen.push(line);
    }
    assert!(seen.iter().all(|l| l.contains(" #")), "{seen:#?}");

    // The demo orders twice (confirmed, then declined): the order feed says
    // so, and the notification service tells the customer.
    let mut say = |_: &str| {};
    agora::demo::run(
        agora::demo::Targets {
            user: suite.addr(Service::User),
            order: suite.addr(Service::Order),
            inventory: suite.addr(Service::Inventory),
        },
        &mut say,
    )
    .await
    .unwrap();
    let mut confirmed = false;
    while !confirmed {
        let line = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("an OrderConfirmed line")
            .unwrap();
        confirmed = line.contains("agora.order.OrderConfirmed");
    }
    let admin = suite.admin.token.clone();
    let client = pb::notification_service_client::NotificationServiceClient::new(
        agora::suite::channel_to(suite.addr(Service::Notification)),
    );
    agora_testkit::eventually("the demo's notifications", Duration::from_secs(20), || {
        let mut client = client.clone();
        let admin = admin.clone();
        async move {
            let listed = client
                .list_notifications(with_token(pb::ListNotificationsRequest::default(), &admin))
                .await
                .ok()?
                .into_inner()
                .notifications;
            let kinds: Vec<_> = listed.iter().map(|n| n.kind()).collect();
            (kinds.contains(&pb::NotificationKind::OrderConfirmed)
                && kinds.contains(&pb::NotificationKind::OrderFailed))
            .then_some(())
        }
    })
    .await;
    tail.abort();
    suite.stop().await.expect("a clean stop");
}
