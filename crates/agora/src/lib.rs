//! The `agora` binary's parts: the one-process suite behind `cargo run` and
//! the developer subcommands (token, health, migrate, demo, load, events tail).
#![forbid(unsafe_code)]

pub mod banner;
pub mod cli;
pub mod demo;
pub mod dev_accounts;
pub mod dev_keys;
pub mod events;
pub mod load;
pub mod migrate;
pub mod postgres;
pub mod probe;
pub mod suite;
