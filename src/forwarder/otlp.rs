//! The OTLP/HTTP wire: `<endpoint>/v1/<signal>`, protobuf, gzip as the policy says, and
//! the `partial_success` of OTLP export responses.

use std::io::Write as _;

use bytes::Bytes;
use prost::Message as _;

use super::Wire;
use super::retry::BillsAt;
use crate::model::{Destination, Signal};
use crate::policy::Compression;

/// OTLP/HTTP protobuf for one signal.
pub struct OtlpWire {
    signal: Signal,
}

impl OtlpWire {
    /// The wire of `signal`'s OTLP destination.
    pub fn new(signal: Signal) -> Self {
        Self { signal }
    }
}

impl Wire for OtlpWire {
    fn destination(&self) -> Destination {
        Destination::otlp(self.signal)
    }

    fn url(&self, endpoint: &str) -> String {
        format!("{endpoint}{}", self.signal.otlp_path())
    }

    fn content_type(&self) -> &'static str {
        "application/x-protobuf"
    }

    fn encode(&self, body: Bytes, compression: Compression) -> (Bytes, Option<&'static str>) {
        match compression {
            Compression::Gzip => match gzip(&body) {
                Ok(b) => (b, Some("gzip")),
                Err(_) => (body, None),
            },
            Compression::None => (body, None),
        }
    }

    /// Grafana's OTLP gateway hands traces to Tempo (bills after its checks) and logs to
    /// Loki (bills while parsing); metrics go to Mimir, which counts what it ingests.
    fn bills_at(&self) -> BillsAt {
        match self.signal {
            Signal::Logs => BillsAt::WhileParsing,
            Signal::Traces | Signal::Metrics => BillsAt::AfterChecks,
        }
    }

    fn partial_success(&self, body: &[u8], json: bool) -> Option<(u64, String)> {
        partial_success(self.signal, body, json)
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    Ok(Bytes::from(enc.finish()?))
}

/// Reads a partial success (rejected count and message) from an export response.
fn partial_success(signal: Signal, body: &[u8], json: bool) -> Option<(u64, String)> {
    use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
    if body.is_empty() {
        return None;
    }
    if json {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let ps = v.get("partialSuccess")?;
        let key = match signal {
            Signal::Traces => "rejectedSpans",
            Signal::Logs => "rejectedLogRecords",
            Signal::Metrics => "rejectedDataPoints",
        };
        let n = match ps.get(key)? {
            serde_json::Value::Number(n) => n.as_u64()?,
            serde_json::Value::String(s) => s.parse().ok()?,
            _ => return None,
        };
        let msg = ps
            .get("errorMessage")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        return Some((n, msg.to_string()));
    }
    let (n, msg) = match signal {
        Signal::Traces => {
            let r = trace::v1::ExportTraceServiceResponse::decode(body).ok()?;
            let p = r.partial_success?;
            (p.rejected_spans.max(0) as u64, p.error_message)
        }
        Signal::Logs => {
            let r = logs::v1::ExportLogsServiceResponse::decode(body).ok()?;
            let p = r.partial_success?;
            (p.rejected_log_records.max(0) as u64, p.error_message)
        }
        Signal::Metrics => {
            let r = metrics::v1::ExportMetricsServiceResponse::decode(body).ok()?;
            let p = r.partial_success?;
            (p.rejected_data_points.max(0) as u64, p.error_message)
        }
    };
    Some((n, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };

    #[test]
    fn partial_successes_in_protobuf_and_json() {
        let w = OtlpWire::new(Signal::Traces);
        let body = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(w.partial_success(&body, false), Some((3, "too old".into())));
        let json = br#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"x"}}"#;
        assert_eq!(w.partial_success(json, true), Some((2, "x".into())));
        assert_eq!(w.partial_success(b"", false), None);
        assert_eq!(w.url("https://g/otlp"), "https://g/otlp/v1/traces");
        assert_eq!(
            OtlpWire::new(Signal::Logs).bills_at(),
            BillsAt::WhileParsing
        );
    }
}
