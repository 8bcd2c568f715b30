//! The `agora.notification.v1.NotificationService` adapter and its access
//! policy: customers list their own notifications, admins everyone's and the
//! dead letters, which they may replay.

use std::sync::Arc;

use agora_interceptors::api::errors::invalid_field;
use agora_interceptors::api::pagination::PageRequest;
use agora_interceptors::api::time::timestamp_from_micros;
use agora_interceptors::auth::{Access, Principal, Role, ServicePolicy};
use agora_proto::notification::v1 as pb;
use pb::notification_service_server::NotificationService;
use tonic::{Request, Response, Status};

use crate::domain::{DeadLetter, Kind, Notification, Sent};
use crate::error::NotificationError;
use crate::events;
use crate::notifier::Notifier;
use crate::store::NotificationStore;

/// Who may call which method.
pub const POLICY: ServicePolicy = ServicePolicy {
    service: "agora.notification.v1.NotificationService",
    methods: &[
        // Own notifications for customers; everyone's for admins.
        (
            "ListNotifications",
            Access::Roles(&[Role::Customer, Role::Admin]),
        ),
        ("ListDeadLetters", Access::Roles(&[Role::Admin])),
        ("ReplayDeadLetter", Access::Roles(&[Role::Admin])),
    ],
};

/// The generated tonic server around [`NotificationApi`].
pub type Server = pb::notification_service_server::NotificationServiceServer<NotificationApi>;

/// The NotificationService implementation.
#[derive(Clone)]
pub struct NotificationApi {
    store: NotificationStore,
    notifier: Arc<dyn Notifier>,
}

impl std::fmt::Debug for NotificationApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationApi").finish_non_exhaustive()
    }
}

impl NotificationApi {
    /// The API over `store`; replays send through `notifier`.
    pub fn new(store: NotificationStore, notifier: Arc<dyn Notifier>) -> Self {
        Self { store, notifier }
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.into_inner();
        let user = match principal.role {
            Role::Admin | Role::Service => (!body.user_id.is_empty()).then(|| body.user_id.clone()),
            Role::Customer => {
                if !body.user_id.is_empty() && body.user_id != principal.subject {
                    return Err(NotificationError::Forbidden(
                        "customers may only list their own notifications",
                    )
                    .into());
                }
                Some(principal.subject.clone())
            }
        };
        let page = PageRequest::parse(
            "agora.notification.v1.NotificationService/ListNotifications",
            body.page_size,
            &body.page_token,
            user.clone().unwrap_or_default(),
        )?;
        let rows = self
            .store
            .notifications(user.as_deref(), page.after(), page.fetch_limit())
            .await?;
        let (rows, next_page_token) = page.split(rows, |sent| sent.notification.event_id.clone());
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.iter().map(sent_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let body = request.into_inner();
        let page = PageRequest::parse(
            "agora.notification.v1.NotificationService/ListDeadLetters",
            body.page_size,
            &body.page_token,
            "",
        )?;
        let rows = self
            .store
            .dead_letters(page.after(), page.fetch_limit())
            .await?;
        let (rows, next_page_token) = page.split(rows, |dead| dead.event_id.clone());
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: rows.iter().map(dead_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<pb::ReplayDeadLetterRequest>,
    ) -> Result<Response<pb::ReplayDeadLetterResponse>, Status> {
        let event_id = request.into_inner().event_id;
        if event_id.is_empty() {
            return Err(invalid_field("event_id", "is required"));
        }
        let dead = self
            .store
            .dead_letter(&event_id)
            .await?
            .ok_or_else(|| NotificationError::DeadLetterNotFound(event_id.clone()))?;
        let failed = |error: String| NotificationError::ReplayFailed {
            event_id: event_id.clone(),
            error,
        };
        let delivery = events::decode(&dead.encoded).map_err(failed)?;
        let notification = delivery
            .notification
            .map_err(failed)?
            .ok_or_else(|| failed("the event notifies nobody".into()))?;
        self.notifier
            .send(&notification)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !self.store.record_replayed(&notification).await? {
            return Err(NotificationError::DeadLetterNotFound(event_id).into());
        }
        Ok(Response::new(pb::ReplayDeadLetterResponse {
            notification: Some(notification_to_proto(&notification, None)),
        }))
    }
}

fn kind_to_proto(kind: Kind) -> pb::NotificationKind {
    match kind {
        Kind::OrderConfirmed => pb::NotificationKind::OrderConfirmed,
        Kind::OrderFailed => pb::NotificationKind::OrderFailed,
        Kind::OrderCancelled => pb::NotificationKind::OrderCancelled,
        Kind::PaymentRefunded => pb::NotificationKind::PaymentRefunded,
    }
}

fn notification_to_proto(notification: &Notification, sent_at: Option<i64>) -> pb::Notification {
    pb::Notification {
        event_id: notification.event_id.clone(),
        user_id: notification.user_id.clone(),
        kind: kind_to_proto(notification.kind).into(),
        order_id: notification.order_id.clone(),
        message: notification.message.clone(),
        send_time: sent_at.map(timestamp_from_micros),
    }
}

fn sent_to_proto(sent: &Sent) -> pb::Notification {
    notification_to_proto(&sent.notification, Some(sent.sent_at))
}

fn dead_to_proto(dead: &DeadLetter) -> pb::DeadLetter {
    pb::DeadLetter {
        event_id: dead.event_id.clone(),
        event_type: dead.event_type.clone(),
        source: dead.source.clone(),
        attempts: i32::try_from(dead.attempts).unwrap_or(i32::MAX),
        last_error: dead.last_error.clone(),
        dead_time: Some(timestamp_from_micros(dead.dead_at)),
    }
}
