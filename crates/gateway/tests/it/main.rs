//! The gateway's integration tests: one binary, every scenario over real
//! HTTP (hyper's client) against a gateway in front of the four services
//! started in-process on SQLite (the gateway has no storage of its own).

mod errors;
mod protocols;
mod support;
mod trace;
mod walkthrough;
