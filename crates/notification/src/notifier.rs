//! Where notifications go: the [`Notifier`] trait; the shipped
//! [`LogNotifier`], which logs each message (the service records every
//! notification in its own table, served by `ListNotifications`); and
//! [`RecordingNotifier`], which also keeps them in memory, for tests. An
//! SMTP or webhook notifier plugs in behind the same trait; it receives each
//! notification at least once (a crash between sending and recording sends
//! again: what was sent in the last [`crate::consumer::RECORD_WITHIN`] or
//! so, since sends are recorded in batches) and can deduplicate by
//! `event_id`, which never changes.

use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;

use crate::domain::Notification;

/// Why a notification was not sent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(pub String);

/// Sends notifications to customers.
pub trait Notifier: Send + Sync + 'static {
    /// Sends `notification`; an error is retried, then dead-lettered.
    fn send<'a>(&'a self, notification: &'a Notification)
    -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// Logs every notification: what the service sends with no other notifier
/// configured. It keeps nothing, so memory does not grow with the traffic.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogNotifier;

impl LogNotifier {
    fn log(notification: &Notification) {
        tracing::info!(
            user_id = %notification.user_id,
            order_id = %notification.order_id,
            kind = notification.kind.as_str(),
            event_id = %notification.event_id,
            "notification: {}",
            notification.message
        );
    }
}

impl Notifier for LogNotifier {
    fn send<'a>(
        &'a self,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            Self::log(notification);
            Ok(())
        })
    }
}

/// Logs every notification and keeps it in memory (without bound), for
/// tests.
#[derive(Clone, Debug, Default)]
pub struct RecordingNotifier {
    sent: Arc<Mutex<Vec<Notification>>>,
}

impl RecordingNotifier {
    /// A notifier that has sent nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything sent so far, in order.
    pub fn sent(&self) -> Vec<Notification> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Notifier for RecordingNotifier {
    fn send<'a>(
        &'a self,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            LogNotifier::log(notification);
            self.sent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(notification.clone());
            Ok(())
        })
    }
}
