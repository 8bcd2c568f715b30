//! The inventory service's integration tests: one binary, every scenario over
//! a real gRPC connection to a server on an ephemeral port, against SQLite and
//! (when `AGORA_TEST_POSTGRES_URL` is set) PostgreSQL.

mod catalog;
mod events;
mod expiry;
mod logs;
mod metrics;
mod race;
mod reservations;
mod serving;
mod stock;
mod support;
