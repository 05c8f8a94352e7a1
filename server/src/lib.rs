//! Anneal: a self-hosted machine-learning engine (train, version, predict) compatible with the
//! Cloud ML Engine `ml` v1 REST API.
//!
//! The modules follow the architecture in `ARCHITECTURE.md`: the surfaces ([`api`], [`console`],
//! [`cli`]) call use cases in [`control`], which use [`store`] (all SQL), [`storage`] (files) and
//! [`serving`] (the only user of libtorch). [`server`] wires them together and owns start-up and
//! shutdown.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod control;
pub mod error;
pub mod executor;
pub mod http;
pub mod jobs;
pub mod local;
pub mod names;
pub mod sandbox;
pub mod server;
pub mod serving;
pub mod storage;
pub mod store;
pub mod tasks;
pub mod telemetry;

pub use error::{Error, Result};

/// Anneal's version, as reported by `anneal --version`, `/metrics` and the console.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
