//! One builder call makes a client channel to a downstream.
//!
//! ```text
//! let inventory = Downstream::builder("inventory", "http://inventory:50054")
//!     .retryable(&["/agora.inventory.v1.InventoryService/ReserveStock"])
//!     .build()?;
//! let client = InventoryServiceClient::new(inventory);
//! ```
//!
//! The server half, [`DeadlineLayer`], gives every served call a deadline and a
//! request id ([`current_deadline`], [`current_request_id`]) that the client half
//! hands on to every downstream call the handler makes.

mod breaker;
mod builder;
mod context;
mod credentials;
mod discovery;
pub mod grpc_timeout;
mod outgoing;
mod retry;
mod server;

pub use breaker::CIRCUIT_OPEN;
pub use builder::{Downstream, DownstreamBuilder, DownstreamChannel};
pub use context::{
    CallContext, CallDeadline, REQUEST_ID, current_deadline, current_request_id, new_request_id,
    with_call_ids,
};
pub use credentials::{BearerSource, CredentialsLayer, ServiceTokens, StaticBearer};
pub use server::{DeadlineLayer, DeadlineService};

/// The error every client layer returns; tonic's clients accept it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
