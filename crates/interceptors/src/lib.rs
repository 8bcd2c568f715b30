//! The one way an Agora service is served and a downstream is called.
//!
//! A service builds a [`serve::ServiceHost`], adds its tonic service with the
//! access rules it declares ([`auth::ServicePolicy`]), points readiness at its
//! [`db::Database`], and serves. Health, reflection, authentication, graceful
//! shutdown and the wire conventions ([`api`]) come with it, identical in every
//! service.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod binary;
pub mod client;
pub mod config;
pub mod connections;
pub mod db;
pub mod framing;
pub mod health;
pub mod limits;
pub mod log_ids;
pub mod memory;
pub mod message_size;
pub mod metrics;
pub mod observe;
pub mod reflection;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod transport;

pub use config::ServeArgs;
pub use serve::ServiceHost;
