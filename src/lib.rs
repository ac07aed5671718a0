//! frugal: a usage-aware sampling proxy that keeps a Grafana Cloud stack inside its
//! monthly quotas.
//!
//! Data flows receivers -> ingest (classify, sample, meter) -> forwarder, with the budget
//! controller pacing the keep probabilities and the usage ledger persisting what was spent.
//! See ARCHITECTURE.md for the map.

#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod auth;
pub mod budget;
pub mod clock;
pub mod core;
pub mod fingerprint;
pub mod forwarder;
pub mod history;
pub mod ingest;
pub mod ledger;
pub mod metering;
pub mod model;
pub mod notifier;
pub mod period;
pub mod pipeline;
pub mod policy;
pub mod proto;
pub mod receivers;
pub mod reload;
pub mod sampling;
pub mod simulate;
pub mod stats;
pub mod status;
pub mod store;
pub mod table;
/// Tail sampling: buffering whole traces and judging them by the `traces.tail` policies.
pub mod tail;
#[cfg(test)]
pub(crate) mod testkit;
pub mod units;
