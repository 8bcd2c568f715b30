//! The payment service's integration tests: one binary, every scenario over a
//! real gRPC connection to a server on an ephemeral port, against SQLite and
//! (when `AGORA_TEST_POSTGRES_URL` is set) PostgreSQL.

mod charges;
mod logs;
mod metrics;
mod reading;
mod recovery;
mod refunds;
mod serving;
mod support;
