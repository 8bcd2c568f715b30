//! The `agora` binary's parts: the one-process suite behind `cargo run` and
//! the developer subcommands (token, health, migrate, demo, events tail).
#![forbid(unsafe_code)]

pub mod banner;
pub mod cli;
pub mod demo;
pub mod dev_accounts;
pub mod dev_keys;
pub mod events;
pub mod migrate;
pub mod probe;
pub mod suite;
