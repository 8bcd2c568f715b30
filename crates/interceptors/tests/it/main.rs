//! The serving and calling stack's integration tests: one binary, every layer
//! exercised over real gRPC connections on ephemeral ports.

mod auth;
mod client;
mod compression;
mod limits;
mod memory;
mod metrics;
mod probe;
mod raw_h2;
mod readiness;
mod reflection;
mod revocation;
mod shutdown;
mod tls;
mod trace;
