//! The user context's domain events in their wire form (`agora.events.v1`),
//! appended to the outbox by [`crate::store`] in the transaction of the
//! change: UserRegistered when an account is created, UserDeleted when it
//! is deleted.

use agora_interceptors::outbox::NewEvent;
use agora_proto::events::v1 as pb;
use agora_proto::events::v1::event::Payload;

use crate::domain::{User, UserId};

/// UserRegistered.
pub fn registered(user: &User) -> NewEvent {
    NewEvent::new(
        user.id.to_string(),
        Payload::UserRegistered(pb::UserRegistered {
            user_id: user.id.to_string(),
            email: user.email.as_str().to_owned(),
        }),
    )
}

/// UserDeleted.
pub fn deleted(id: UserId) -> NewEvent {
    NewEvent::new(
        id.to_string(),
        Payload::UserDeleted(pb::UserDeleted {
            user_id: id.to_string(),
        }),
    )
}
