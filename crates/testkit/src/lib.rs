//! Helpers for Agora's integration tests, so every test brings services up,
//! mints tokens and reads errors the same way.
//!
//! Every scenario runs against a real database: a fresh SQLite file always, and a
//! fresh PostgreSQL database too when `AGORA_TEST_POSTGRES_URL` points at a server
//! (for example `postgres://postgres@127.0.0.1:5432/test`). [`backend_test!`]
//! writes one scenario once and gets a test per backend.
//!
//! - [`database`]: [`TestDatabase`] and [`backend_test!`].
//! - [`keys`]: [`TestKeys`] and [`with_token`].
//! - [`server`]: [`TestServer`], a server on a free port, stopped cleanly or
//!   crashed; [`wait_until_serving`].
//! - [`services`]: each Agora service started that way, the scenario's
//!   [`Keys`], and [`sign_up`].
//! - [`suite`]: the four services of a scenario together ([`TestSuite`]),
//!   and [`providers`]: payment providers that fail on purpose.
//! - [`status`]: the google.rpc details of a refused call.
//! - [`poll`]: [`eventually`], waiting without fixed sleeps.
//! - [`metrics`]: scraping a `/metrics` endpoint; [`logs`]: capturing log
//!   lines; [`pki`]: test certificates.
//! - [`otlp`]: an in-process OTLP collector for trace assertions.
//! - [`nats`]: whether the broker tests' nats-server answers.
#![forbid(unsafe_code)]

pub mod database;
pub mod keys;
pub mod logs;
pub mod metrics;
pub mod nats;
pub mod otlp;
pub mod pki;
pub mod poll;
pub mod providers;
pub mod server;
pub mod services;
pub mod status;
pub mod suite;

pub use database::{DATABASE_PREFIX, POSTGRES_ENV, TestDatabase};
pub use keys::{TestKeys, with_token};
pub use metrics::{http_get, sample};
pub use poll::eventually;
pub use server::{TestServer, assert_served, channel, wait_until_serving};
pub use services::{Keys, PASSWORD, sign_up};
pub use suite::{SuiteOptions, TestSuite};
