//! The event feeds this service consumes (`agora.events.v1.EventFeedService`
//! of the order and payment services), called through the shared calling
//! stack with this service's `service`-role credentials. Generated types
//! stop here and in [`crate::events`]: a feed yields [`Delivery`] values.

use std::sync::Arc;
use std::time::Duration;

use agora_interceptors::client::{BearerSource, Downstream, DownstreamChannel};
use agora_interceptors::metrics::GrpcMetrics;
use agora_proto::events::v1 as pb;
use agora_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use futures::{Stream, StreamExt};
use tonic::Code;
use tonic_types::StatusExt;

use crate::domain::Delivery;
use crate::events;

/// How long one Subscribe stream may stay open; the consumer then
/// reconnects from its cursor, which loses and repeats nothing.
const STREAM_DEADLINE: Duration = Duration::from_secs(600);

/// Why a feed did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The cursor is older than the producer's retention: events were
    /// pruned unseen. Resuming from `oldest` is possible.
    #[error("the cursor is past the feed's retention; the oldest cursor is {oldest}")]
    Expired {
        /// The oldest cursor the feed still serves.
        oldest: String,
    },
    /// Anything else (the producer is down, a network error): try again.
    #[error("{0}")]
    Unavailable(String),
}

/// One producer's feed, filtered to the types this service consumes.
#[derive(Clone, Debug)]
pub struct Feed {
    /// The producer's CloudEvents source, e.g. `agora/order` (the key of
    /// its stored cursor).
    pub source: &'static str,
    client: EventFeedServiceClient<DownstreamChannel>,
    types: &'static [&'static str],
}

impl Feed {
    /// The order service's feed at `url`.
    pub fn order(
        url: &str,
        credentials: Arc<dyn BearerSource>,
        tls: Option<tonic::transport::ClientTlsConfig>,
        metrics: &GrpcMetrics,
    ) -> anyhow::Result<Self> {
        Self::connect(
            "agora/order",
            url,
            events::ORDER_TYPES,
            credentials,
            tls,
            metrics,
        )
    }

    /// The payment service's feed at `url`.
    pub fn payment(
        url: &str,
        credentials: Arc<dyn BearerSource>,
        tls: Option<tonic::transport::ClientTlsConfig>,
        metrics: &GrpcMetrics,
    ) -> anyhow::Result<Self> {
        Self::connect(
            "agora/payment",
            url,
            events::PAYMENT_TYPES,
            credentials,
            tls,
            metrics,
        )
    }

    fn connect(
        source: &'static str,
        url: &str,
        types: &'static [&'static str],
        credentials: Arc<dyn BearerSource>,
        tls: Option<tonic::transport::ClientTlsConfig>,
        metrics: &GrpcMetrics,
    ) -> anyhow::Result<Self> {
        let channel = Downstream::builder(source.trim_start_matches("agora/"), url)
            .default_deadline(STREAM_DEADLINE)
            .tls(tls)
            .bearer(credentials)
            .metrics(metrics)
            .build()?;
        Ok(Self {
            source,
            client: EventFeedServiceClient::new(channel),
            types,
        })
    }

    /// The events after `cursor` (from the oldest kept when empty), then new
    /// ones as they commit, until the stream ends or fails.
    pub async fn subscribe(
        &self,
        cursor: &str,
    ) -> Result<impl Stream<Item = Result<Delivery, FeedError>> + Send + use<>, FeedError> {
        let request = pb::SubscribeRequest {
            cursor: cursor.to_owned(),
            types: self.types.iter().map(|t| (*t).to_owned()).collect(),
        };
        let stream = self
            .client
            .clone()
            .subscribe(request)
            .await
            .map_err(feed_error)?
            .into_inner();
        Ok(stream.map(|message| {
            let message = message.map_err(feed_error)?;
            let event = message
                .event
                .ok_or_else(|| FeedError::Unavailable("a feed message without an event".into()))?;
            Ok(events::delivery(event, message.cursor))
        }))
    }
}

fn feed_error(status: tonic::Status) -> FeedError {
    if status.code() == Code::OutOfRange
        && let Some(info) = status.get_details_error_info()
        && let Some(oldest) = info.metadata.get("oldest_cursor")
    {
        return FeedError::Expired {
            oldest: oldest.clone(),
        };
    }
    FeedError::Unavailable(format!("{:?}: {}", status.code(), status.message()))
}

pub use jetstream::{
    ACK_WAIT, DLQ_SOURCE, JetStreamDelivery, JetStreamFeed, LEGACY_DURABLE, dead_letter_subject,
    durable_name,
};

/// The producers' JetStream streams.
mod jetstream {
    use std::time::Duration;

    use agora_proto::events::v1 as pb;
    use futures::{Stream, StreamExt};
    use prost::Message;

    use agora_interceptors::outbox::relay::RelaySettings;

    use super::FeedError;
    use crate::domain::Delivery;
    use crate::events;

    /// The JetStream durable consumer this service reads an event type
    /// with: `agora-notification-<EventName>` (`agora-notification-
    /// OrderConfirmed` for `agora.order.OrderConfirmed`), filtered to that
    /// type's subject, so the broker never sends the events it would skip
    /// (OrderPlaced, PaymentCaptured: most of each stream). One consumer per
    /// type because nats-server before 2.10 filters a consumer by one
    /// subject only.
    pub fn durable_name(event_type: &str) -> String {
        let name = event_type.rsplit('.').next().unwrap_or(event_type);
        format!("agora-notification-{name}")
    }

    /// The one durable consumer per stream that earlier versions read
    /// every event of the stream with. When it exists, the per-type
    /// consumers start after its acknowledged floor (the inbox drops what
    /// it had already processed past it), and it is deleted.
    pub const LEGACY_DURABLE: &str = "agora-notification";

    /// How long JetStream waits for a message's acknowledgement before it
    /// redelivers it; a message still being tried says it is in progress
    /// every third of this.
    pub const ACK_WAIT: Duration = Duration::from_secs(30);

    /// What names the dead-letter stream: `<prefix>AGORA_NOTIFICATION_DLQ`
    /// through [`RelaySettings::stream_name`].
    pub const DLQ_SOURCE: &str = "agora/notification-dlq";

    /// The subject a dead letter of `event_type` is published on:
    /// `<prefix>agora.notification.dead_letter.<event_type>`.
    pub fn dead_letter_subject(settings: &RelaySettings, event_type: &str) -> String {
        settings.subject(&format!("agora.notification.dead_letter.{event_type}"))
    }

    /// Creates the dead-letter stream if missing: the subjects of
    /// [`dead_letter_subject`], file storage, one replica, the relay's
    /// duplicate window (a dead letter published again is dropped by its
    /// `Nats-Msg-Id`, the event id) and retention.
    async fn dead_letter_stream(
        js: &async_nats::jetstream::Context,
        settings: &RelaySettings,
    ) -> Result<(), FeedError> {
        use agora_interceptors::outbox::relay::{DUPLICATE_WINDOW, STREAM_MAX_AGE};
        use async_nats::jetstream::stream;
        js.get_or_create_stream(stream::Config {
            name: settings.stream_name(DLQ_SOURCE),
            subjects: vec![dead_letter_subject(settings, ">")],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: STREAM_MAX_AGE,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| FeedError::Unavailable(format!("creating the dead-letter stream: {e}")))?;
        Ok(())
    }

    /// One message of a JetStream durable consumer, to acknowledge once it is
    /// recorded.
    pub struct JetStreamDelivery {
        /// The event.
        pub delivery: Delivery,
        message: async_nats::jetstream::Message,
        dead_letter_subject: String,
    }

    impl std::fmt::Debug for JetStreamDelivery {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("JetStreamDelivery")
                .field("event_id", &self.delivery.event_id)
                .finish_non_exhaustive()
        }
    }

    impl JetStreamDelivery {
        /// Tells JetStream the event is processed: it is not redelivered.
        pub async fn ack(&self) -> Result<(), FeedError> {
            self.message
                .ack()
                .await
                .map_err(|e| FeedError::Unavailable(format!("acknowledging: {e}")))
        }

        /// Tells JetStream the message is still being worked on (its tries
        /// outlast [`ACK_WAIT`]), so it is not redelivered meanwhile.
        pub async fn in_progress(&self) -> Result<(), FeedError> {
            self.message
                .ack_with(async_nats::jetstream::AckKind::Progress)
                .await
                .map_err(|e| FeedError::Unavailable(format!("extending the ack wait: {e}")))
        }

        /// Publishes the event, given up on after `attempts` tries with
        /// `error`, to the dead-letter stream (payload: the event as
        /// received; headers `Nats-Msg-Id` = the event id,
        /// `Agora-Event-Source`, `Agora-Event-Type`, `Agora-Attempts`,
        /// `Agora-Error`), waits for its PubAck, then terminates the message
        /// so JetStream stops redelivering it.
        pub async fn dead_letter(&self, attempts: i64, error: &str) -> Result<(), FeedError> {
            use async_nats::jetstream::AckKind;
            use async_nats::jetstream::context::Publish;
            let unavailable = |what: &str, e: &dyn std::fmt::Display| {
                FeedError::Unavailable(format!("{what}: {e}"))
            };
            // A header value is one line.
            let error: String = error
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(500)
                .collect();
            let publish = Publish::build()
                .message_id(&self.delivery.event_id)
                .header("Agora-Event-Source", self.delivery.source.as_str())
                .header("Agora-Event-Type", self.delivery.event_type.as_str())
                .header("Agora-Attempts", attempts.to_string().as_str())
                .header("Agora-Error", error.as_str())
                .payload(self.delivery.encoded.clone().into());
            self.message
                .context
                .send_publish(self.dead_letter_subject.clone(), publish)
                .await
                .map_err(|e| unavailable("publishing the dead letter", &e))?
                .await
                .map_err(|e| unavailable("the dead letter's PubAck", &e))?;
            self.message
                .ack_with(AckKind::Term)
                .await
                .map_err(|e| unavailable("terminating the dead letter", &e))
        }
    }

    /// A producer's JetStream stream (`AGORA_<CONTEXT>`, created by its relay),
    /// read with one durable pull consumer per consumed type
    /// ([`durable_name`]): JetStream keeps their positions, and redelivers
    /// what was not acknowledged.
    #[derive(Clone, Debug)]
    pub struct JetStreamFeed {
        /// The producer's CloudEvents source, e.g. `agora/order`.
        pub source: &'static str,
        types: &'static [&'static str],
        settings: RelaySettings,
    }

    impl JetStreamFeed {
        /// The same events as the gRPC `feed` (its source and types), from
        /// the NATS server of `settings`.
        pub fn like(feed: &super::Feed, settings: RelaySettings) -> Self {
            Self {
                source: feed.source,
                types: feed.types,
                settings,
            }
        }

        /// The durable consumers' messages, merged; each consumer's oldest
        /// unacknowledged first.
        pub async fn messages(
            &self,
        ) -> Result<
            impl Stream<Item = Result<JetStreamDelivery, FeedError>> + Send + use<>,
            FeedError,
        > {
            use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
            let unavailable = |what: &str, e: &dyn std::fmt::Display| {
                FeedError::Unavailable(format!("{what}: {e}"))
            };
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect(self.settings.url.as_str())
                .await
                .map_err(|e| unavailable("connecting to NATS", &e))?;
            let js = async_nats::jetstream::new(client);
            dead_letter_stream(&js, &self.settings).await?;
            let stream = js
                .get_stream(self.settings.stream_name(self.source))
                .await
                .map_err(|e| unavailable("finding the stream", &e))?;
            // Upgrading from the one consumer of every type: go on after
            // what it acknowledged.
            use async_nats::jetstream::context::ConsumerInfoErrorKind;
            let legacy = match stream.consumer_info(LEGACY_DURABLE).await {
                Ok(info) => Some(info.ack_floor.stream_sequence + 1),
                Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => None,
                // Not knowing would start the new consumers from the
                // stream's beginning: retry instead.
                Err(error) => {
                    return Err(unavailable("reading the earlier durable consumer", &error));
                }
            };
            let deliver_policy = match legacy {
                Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
                None => DeliverPolicy::All,
            };
            let mut all = Vec::with_capacity(self.types.len());
            for event_type in self.types {
                let durable = durable_name(event_type);
                let consumer = stream
                    .get_or_create_consumer(
                        &durable,
                        pull::Config {
                            durable_name: Some(durable.clone()),
                            deliver_policy,
                            ack_policy: AckPolicy::Explicit,
                            ack_wait: ACK_WAIT,
                            filter_subject: self.settings.subject(event_type),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| unavailable("creating the durable consumer", &e))?;
                all.push(
                    consumer
                        .messages()
                        .await
                        .map_err(|e| unavailable("reading the durable consumer", &e))?,
                );
            }
            if legacy.is_some() {
                // Another replica may have deleted it first.
                if let Err(error) = stream.delete_consumer(LEGACY_DURABLE).await {
                    tracing::debug!(%error, "the earlier durable consumer is gone already");
                }
                tracing::info!(
                    source = self.source,
                    "replaced the durable consumer of every event type with one per consumed type"
                );
            }
            let messages = futures::stream::select_all(all);
            let source = self.source;
            let settings = self.settings.clone();
            Ok(messages.map(move |message| {
                let message =
                    message.map_err(|e| FeedError::Unavailable(format!("JetStream: {e}")))?;
                let delivery = match pb::Event::decode(message.payload.as_ref()) {
                    Ok(event) => events::delivery(event, String::new()),
                    // Not an event: a dead letter, so it cannot stall the stream.
                    Err(error) => Delivery {
                        event_id: message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                            .map(|id| id.to_string())
                            .unwrap_or_else(|| format!("{}:{}", message.subject, message.length)),
                        source: source.to_owned(),
                        event_type: message.subject.to_string(),
                        cursor: String::new(),
                        encoded: message.payload.to_vec(),
                        notification: Err(format!("undecodable event: {error}")),
                    },
                };
                let dead_letter_subject = dead_letter_subject(&settings, &delivery.event_type);
                Ok(JetStreamDelivery {
                    delivery,
                    message,
                    dead_letter_subject,
                })
            }))
        }
    }
}
