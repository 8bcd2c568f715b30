//! The notification service's integration tests: one binary, every scenario
//! over real gRPC against the whole suite started in-process, on SQLite and
//! (when `AGORA_TEST_POSTGRES_URL` is set) PostgreSQL.

mod consume;
mod jetstream;
mod outage;
mod revocation;
mod support;
