//! Metric data points. Grafana bills metrics by active series (and data points per
//! minute); series counting arrives with the metrics issue. Until then frugal meters the
//! OTLP data points it forwards.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};

use super::Weight;

/// Data points of a metrics request (items and units alike).
pub fn weigh(req: &ExportMetricsServiceRequest) -> Weight {
    let points: u64 = req
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(data_points)
        .sum();
    Weight {
        items: points,
        units: points,
    }
}

/// Data points of one metric, whatever its type.
pub fn data_points(m: &Metric) -> u64 {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len() as u64,
        Some(metric::Data::Sum(s)) => s.data_points.len() as u64,
        Some(metric::Data::Histogram(h)) => h.data_points.len() as u64,
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len() as u64,
        Some(metric::Data::Summary(s)) => s.data_points.len() as u64,
        None => 0,
    }
}
