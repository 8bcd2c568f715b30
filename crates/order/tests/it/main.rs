//! The order service's integration tests: one binary, every scenario over
//! real gRPC against services started in-process (the lease rules also at
//! the store itself, in `lease`), on SQLite and (when
//! `AGORA_TEST_POSTGRES_URL` is set) PostgreSQL.

mod api;
mod crash;
mod e2e;
mod lease;
mod metrics;
mod page_tokens;
mod recovery;
mod suite;
mod support;
mod trace;
