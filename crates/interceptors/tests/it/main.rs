//! The serving and calling stack's integration tests: one binary, every layer
//! exercised over real gRPC connections on ephemeral ports.

mod auth;
mod client;
mod compression;
mod limits;
mod metrics;
mod probe;
mod readiness;
mod reflection;
mod shutdown;
mod tls;
mod trace;
