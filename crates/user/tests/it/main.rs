//! The user service's integration tests: one binary, every scenario over a real
//! gRPC connection to a server on an ephemeral port, against SQLite and (when
//! `AGORA_TEST_POSTGRES_URL` is set) PostgreSQL.

mod accounts;
mod authz;
mod listing;
mod revocation;
mod serving;
mod support;
