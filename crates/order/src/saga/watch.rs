//! WatchOrder's follow loop: an order's versions as a stream, from the one
//! read when the watch opens until the order settles or the service shuts
//! down.

use std::time::Duration;

use futures::Stream;
use tokio_util::sync::CancellationToken;

use crate::domain::OrderId;
use crate::error::OrderError;
use crate::store::{OrderChanges, OrderRecord, OrderStore};

use super::Saga;

/// Why a watch ended early.
#[derive(Debug)]
pub enum WatchError {
    /// This process is shutting down: watch again (another replica, or this
    /// one once restarted, will answer).
    ShuttingDown,
    /// The order could not be read.
    Order(OrderError),
}

/// A watch on one order, open and read once: the caller checks
/// [`OrderWatch::order`] (who may see it) before following it.
#[derive(Debug)]
pub struct OrderWatch {
    store: OrderStore,
    stop: CancellationToken,
    changes: OrderChanges,
    order: OrderRecord,
}

impl Saga {
    /// Opens a watch on order `id`: subscribes to its changes, then reads it
    /// (in that order, so no change falls in between). NOT_FOUND when there
    /// is no such order.
    pub async fn watch(&self, id: OrderId) -> Result<OrderWatch, OrderError> {
        let store = self.inner.store.clone();
        let changes = store.changes_of(id);
        let order = store.order(id).await?;
        Ok(OrderWatch {
            store,
            stop: self.inner.stop.clone(),
            changes,
            order,
        })
    }
}

impl OrderWatch {
    /// The order as read when the watch opened.
    pub fn order(&self) -> &OrderRecord {
        &self.order
    }

    /// The order as read when the watch opened, then each new version, until
    /// one is settled (the stream then ends) or shutdown begins (it ends with
    /// [`WatchError::ShuttingDown`]). Changes committed by this process are
    /// seen at once; those of other processes by re-reading every `poll`.
    pub fn follow(
        self,
        poll: Duration,
    ) -> impl Stream<Item = Result<OrderRecord, WatchError>> + Send + 'static {
        let follower = Follower {
            last_version: self.order.version,
            first: Some(self.order),
            store: self.store,
            stop: self.stop,
            changes: self.changes,
            poll,
            over: false,
        };
        futures::stream::unfold(follower, |mut follower| async move {
            let item = follower.next().await?;
            Some((item, follower))
        })
    }
}

/// The state of one [`OrderWatch::follow`] stream.
struct Follower {
    store: OrderStore,
    stop: CancellationToken,
    changes: OrderChanges,
    poll: Duration,
    /// The version read when the watch opened, until it is sent.
    first: Option<OrderRecord>,
    /// The version sent last.
    last_version: i64,
    /// A settled version or an error was sent: nothing follows.
    over: bool,
}

impl Follower {
    /// The next item of the stream; `None` ends it.
    async fn next(&mut self) -> Option<Result<OrderRecord, WatchError>> {
        if self.over {
            return None;
        }
        if let Some(order) = self.first.take() {
            self.over = !order.state.is_in_flight();
            return Some(Ok(order));
        }
        loop {
            tokio::select! {
                () = self.stop.cancelled() => {
                    self.over = true;
                    return Some(Err(WatchError::ShuttingDown));
                }
                more = self.changes.changed() => if !more { return None },
                // Changes made by other processes are only seen by polling.
                () = tokio::time::sleep(self.poll) => {}
            }
            let order = match self.store.get(self.changes.id()).await {
                Ok(Some(order)) => order,
                Ok(None) => return None,
                Err(error) => {
                    self.over = true;
                    return Some(Err(WatchError::Order(error)));
                }
            };
            if order.version == self.last_version {
                continue;
            }
            self.last_version = order.version;
            self.over = !order.state.is_in_flight();
            return Some(Ok(order));
        }
    }
}
