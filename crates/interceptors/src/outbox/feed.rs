//! `agora.events.v1.EventFeedService`: a service's outbox as a gRPC stream.
//! Replays from the caller's cursor in commit order, then follows new
//! commits; filters by type; refuses a cursor older than retention with
//! OUT_OF_RANGE naming the oldest cursor still valid.

use std::pin::Pin;

use agora_proto::events::v1 as pb;
use agora_proto::events::v1::event_feed_service_server::{
    EventFeedService, EventFeedServiceServer,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

use super::{Batch, Cursor, FOLLOW_FALLBACK, Outbox};
use crate::api::errors::{invalid_field, unavailable, with_reason};
use crate::auth::{Access, Role, ServicePolicy};

/// Who may read a service's events: other services and admins.
pub const FEED_POLICY: ServicePolicy = ServicePolicy {
    service: "agora.events.v1.EventFeedService",
    methods: &[("Subscribe", Access::Roles(&[Role::Service, Role::Admin]))],
};

/// The generated server around [`EventFeed`].
pub type FeedServer = EventFeedServiceServer<EventFeed>;

/// Events read per query while replaying.
const BATCH: u32 = 256;

/// The feed of one outbox. Streams end when `closing` is cancelled
/// (shutdown), so they do not hold the drain open.
#[derive(Clone, Debug)]
pub struct EventFeed {
    outbox: Outbox,
    closing: CancellationToken,
}

impl EventFeed {
    /// The feed of `outbox`; its streams end when `closing` is cancelled.
    pub fn new(outbox: Outbox, closing: CancellationToken) -> Self {
        Self { outbox, closing }
    }

    /// The tonic server.
    pub fn server(self) -> FeedServer {
        EventFeedServiceServer::new(self)
    }
}

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventFeedService for EventFeed {
    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let cursor = if request.cursor.is_empty() {
            None
        } else {
            Some(
                request
                    .cursor
                    .parse::<Cursor>()
                    .map_err(|()| invalid_field("cursor", "not a cursor from this feed"))?,
            )
        };
        let types = request.types;
        let commits = self.outbox.commits();
        // The first batch is read here, so a bad or expired cursor fails the
        // call itself rather than the stream's first message.
        let first = read(&self.outbox, cursor).await?;
        let (sender, receiver) = mpsc::channel(BATCH as usize);
        let outbox = self.outbox.clone();
        let closing = self.closing.clone();
        tokio::spawn(async move {
            let result = follow(outbox, commits, cursor, first, &types, &sender, closing).await;
            if let Err(status) = result {
                let _ = sender.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// One batch after `cursor`, or the status that ends the stream.
async fn read(outbox: &Outbox, cursor: Option<Cursor>) -> Result<Vec<super::StoredEvent>, Status> {
    match outbox.read_after(cursor, BATCH).await {
        Ok(Batch::Events(events)) => Ok(events),
        Ok(Batch::Expired { oldest }) => Err(with_reason(
            Code::OutOfRange,
            "CURSOR_EXPIRED",
            format!(
                "events after this cursor are past retention and were deleted; \
                 the oldest cursor still available is {oldest}"
            ),
            [("oldest_cursor", oldest.to_string())],
        )),
        Ok(Batch::Unknown) => Err(invalid_field("cursor", "not a cursor from this feed")),
        Err(error) => Err(unavailable("reading the outbox", &error)),
    }
}

/// Sends `first`, then every later batch, waking on local commits (and every
/// [`FOLLOW_FALLBACK`] for other replicas'), until the caller goes away or
/// the service shuts down.
async fn follow(
    outbox: Outbox,
    mut commits: tokio::sync::watch::Receiver<u64>,
    mut cursor: Option<Cursor>,
    first: Vec<super::StoredEvent>,
    types: &[String],
    sender: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    closing: CancellationToken,
) -> Result<(), Status> {
    let mut batch = first;
    let mut last_read = std::time::Instant::now();
    loop {
        let full = batch.len() == BATCH as usize;
        for stored in batch {
            cursor = Some(Cursor(stored.position));
            if !types.is_empty() && !types.contains(&stored.event.r#type) {
                continue;
            }
            let response = pb::SubscribeResponse {
                cursor: stored.cursor(),
                event: Some(stored.event),
            };
            if sender.send(Ok(response)).await.is_err() {
                return Ok(());
            }
        }
        if !full {
            tokio::select! {
                () = closing.cancelled() => return Ok(()),
                () = sender.closed() => return Ok(()),
                _ = commits.changed() => super::linger(last_read, super::FOLLOW_LINGER, &closing).await,
                () = tokio::time::sleep(FOLLOW_FALLBACK) => {}
            }
        }
        commits.borrow_and_update();
        last_read = std::time::Instant::now();
        batch = read(&outbox, cursor).await?;
    }
}
