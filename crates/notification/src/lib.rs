//! Agora's notification context: tells customers when their order is
//! confirmed, failed or cancelled and when money is refunded.
//!
//! It consumes the order and payment services' event feeds
//! (`agora.events.v1.EventFeedService`), each from the cursor it stored with
//! the last event it processed, and processes every event exactly once in
//! effect: an inbox keyed by event id drops redeliveries, and an event whose
//! notification keeps failing becomes a dead letter, visible and replayable
//! over gRPC. Built with the `nats` feature and given `AGORA_NATS_URL`, it
//! reads the producers' JetStream streams through a durable consumer
//! instead (acknowledging each event once recorded, and publishing a dead
//! letter to the `AGORA_NOTIFICATION_DLQ` stream too). Replicas on one
//! database take turns on each gRPC feed through a lease (see
//! [`consumer`]); on NATS they share the durable consumer.
//!
//! - [`domain`]: notifications, deliveries, dead letters.
//! - [`notifier`]: the [`notifier::Notifier`] trait and the shipped
//!   recording sink.
//! - [`consumer`]: the per-feed loop: dedup, retries, dead letters.
//! - [`store`]: cursors, inbox, notifications and dead letters.
//! - [`downstream`]: the feeds, called through the shared stack;
//!   [`events`]: the consumed events turned into deliveries.
//! - [`grpc`]: the `agora.notification.v1.NotificationService` adapter.
//! - [`config`]: flags and environment variables.
#![forbid(unsafe_code)]

pub mod config;
pub mod consumer;
pub mod domain;
pub mod downstream;
pub mod error;
pub mod events;
pub mod grpc;
pub mod notifier;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use agora_interceptors::auth::{ServiceKeys, TokenVerifier};
use agora_interceptors::binary::{ServiceBinary, Settings, Shutdown};
use agora_interceptors::client::{BearerSource, ServiceTokens};
use agora_interceptors::db::Migrations;
use agora_interceptors::outbox::RelaySettings;
use agora_interceptors::{ServiceHost, grpc_server};
use anyhow::Context;
use tokio::net::TcpListener;

pub use config::NotificationConfig;
pub use notifier::{LogNotifier, Notifier, NotifyError, RecordingNotifier};

/// The notification service's schema, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: sqlx::migrate!("../../migrations/notification/sqlite"),
    postgres: sqlx::migrate!("../../migrations/notification/postgres"),
};

/// The subject of the notification service's service tokens.
pub const SERVICE_SUBJECT: &str = "agora-notification";

/// The notification service's keys: public keys for incoming calls, and its
/// own key, signing the `service`-role tokens it sends the event feeds.
pub type NotificationKeys = ServiceKeys;

/// Serves the notification service with the logging notifier.
pub async fn serve(
    config: NotificationConfig,
    keys: NotificationKeys,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_with(config, keys, Arc::new(LogNotifier), listener, shutdown).await
}

/// Serves the notification service, sending through `notifier`, until
/// `shutdown`; its consumers run beside the server and stop with it.
pub async fn serve_with(
    config: NotificationConfig,
    keys: NotificationKeys,
    notifier: Arc<dyn Notifier>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let database = config.database.open("notification", &MIGRATIONS).await?;
    let token_settings = config.serve.token_settings();
    let verifier = TokenVerifier::new(keys.verifying, &token_settings);
    let credentials: Arc<dyn BearerSource> = Arc::new(
        ServiceTokens::new(
            &keys.service,
            token_settings,
            SERVICE_SUBJECT,
            config.service_token_ttl,
        )
        .context("service token settings")?,
    );
    let host = ServiceHost::new(config.serve.clone(), verifier);
    let metrics = host.grpc_metrics();
    let tls = config.downstream_tls.load()?;
    let order_feed = downstream::Feed::order(
        &config.order_url,
        credentials.clone(),
        tls.clone(),
        &metrics,
    )?;
    let payment_feed = downstream::Feed::payment(
        &config.payment_url,
        credentials.clone(),
        tls.clone(),
        &metrics,
    )?;
    let store = store::NotificationStore::new(database.clone());
    let consumer_metrics = consumer::ConsumerMetrics::register(&metrics);
    let settings = config.consumer_settings();
    let api = grpc::NotificationApi::new(store.clone(), notifier.clone());
    let (order_store, order_notifier, order_metrics) =
        (store.clone(), notifier.clone(), consumer_metrics.clone());
    let host = host
        .add_service(
            grpc_server!(grpc::Server::new(api), config.serve),
            &grpc::POLICY,
        )
        .database(database)
        .follow_user_service(credentials, tls)?;
    // From JetStream durable consumers when NATS is configured, else from
    // the services' gRPC feeds.
    if let Some(url) = config.serve.nats_url.clone() {
        let nats = RelaySettings {
            url,
            prefix: config.serve.nats_subject_prefix.clone(),
        };
        let order = downstream::JetStreamFeed::like(&order_feed, nats.clone());
        let payment = downstream::JetStreamFeed::like(&payment_feed, nats);
        return host
            .background("order events (JetStream)", move |stop| {
                consumer::run_jetstream(
                    order,
                    order_store,
                    order_notifier,
                    settings,
                    order_metrics,
                    stop,
                )
            })
            .background("payment events (JetStream)", move |stop| {
                consumer::run_jetstream(payment, store, notifier, settings, consumer_metrics, stop)
            })
            .serve(listener, shutdown)
            .await;
    }
    let host = host
        .background("order events", move |stop| {
            consumer::run(
                order_feed,
                order_store,
                order_notifier,
                settings,
                order_metrics,
                stop,
            )
        })
        .background("payment events", move |stop| {
            consumer::run(
                payment_feed,
                store,
                notifier,
                settings,
                consumer_metrics,
                stop,
            )
        });
    host.serve(listener, shutdown).await
}

impl ServiceBinary for NotificationConfig {
    const BINARY: &'static str = "agora-notification";
    const SERVICE: &'static str = "notification";

    const MIGRATIONS: &'static Migrations = &MIGRATIONS;

    fn settings(&self) -> Settings<'_> {
        Settings {
            listen: self.listen,
            serve: &self.serve,
            database: &self.database,
        }
    }

    async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let keys = self.service_key.load(
            Self::SERVICE,
            self.serve.key_set()?,
            "the user service and the order and payment feeds",
        )?;
        serve(self, keys, listener, shutdown).await
    }
}
