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
