//! Billable sizes, counted the way Grafana Cloud's engines count them.
//!
//! - traces: [`tempo`] — the canonical OTLP protobuf size of what is forwarded;
//! - logs: [`loki`] — log line plus structured-metadata bytes, as Loki's distributor bills;
//! - metrics: [`mimir`] — data points (series counting arrives with the metrics issue);
//!   [`series`] — the Prometheus series Grafana makes of OTLP metrics.
//!
//! Pure functions of the data; no I/O, no clock.

pub mod loki;
pub mod mimir;
pub mod series;
pub mod tempo;

/// What a batch weighs: items and billable units (bytes, or data points for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Weight {
    /// Spans, log records or data points.
    pub items: u64,
    /// Billable units: bytes (traces, logs) or data points (metrics).
    pub units: u64,
}

impl Weight {
    /// Adds another weight (saturating).
    pub fn add(&mut self, other: Weight) {
        self.items = self.items.saturating_add(other.items);
        self.units = self.units.saturating_add(other.units);
    }

    /// Whether it weighs nothing.
    pub fn is_zero(&self) -> bool {
        self.items == 0 && self.units == 0
    }
}

/// Length of a varint, as protobuf encodes lengths.
pub(crate) fn varint_len(v: u64) -> u64 {
    prost::encoding::encoded_len_varint(v) as u64
}
