//! Prometheus remote write 1.0: `prometheus.WriteRequest` and the messages it carries,
//! declared from the field numbers the Prometheus project publishes (`prompb/remote.proto`,
//! `prompb/types.proto`). Every field is declared, exemplars, native histograms and
//! metadata included: prost drops undeclared fields silently, and frugal forwards its own
//! encoding of what it decoded, so an undeclared field would vanish on the way upstream.
//!
//! Not declared: field 2 of `WriteRequest`, reserved by Prometheus (Cortex and Mimir use it
//! for a `source` enum that senders do not set), and Mimir's private field 1000.

/// `prometheus.WriteRequest`: the body of a remote-write 1.0 request (snappy block format).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series and their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric metadata (type, help, unit); Prometheus sends it in requests of its own,
    /// once a minute by default.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`: one series (its label set) and what it carries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// The label set, sorted by name, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native histogram samples.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    /// The name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: a float sample.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// The exemplar's own labels (e.g. `trace_id`).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.Histogram`: one native histogram sample (integer or float counts).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// The count of observations: integer or float.
    #[prost(oneof = "histogram::Count", tags = "1, 2")]
    pub count: Option<histogram::Count>,
    /// The sum of observations.
    #[prost(double, tag = "3")]
    pub sum: f64,
    /// The bucket schema (resolution).
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    /// The zero bucket's width.
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    /// The zero bucket's count: integer or float.
    #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
    pub zero_count: Option<histogram::ZeroCount>,
    /// Spans of negative buckets.
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    /// Negative buckets' counts as deltas (integer histograms).
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    /// Negative buckets' absolute counts (float histograms).
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    /// Spans of positive buckets.
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    /// Positive buckets' counts as deltas (integer histograms).
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// Positive buckets' absolute counts (float histograms).
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    /// Whether a counter reset happened (`histogram::ResetHint`).
    #[prost(enumeration = "histogram::ResetHint", tag = "14")]
    pub reset_hint: i32,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    /// Custom bucket bounds (schema -53).
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
}

/// The oneofs and enum of [`Histogram`].
pub mod histogram {
    /// The count of observations.
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum Count {
        /// An integer histogram's count.
        #[prost(uint64, tag = "1")]
        CountInt(u64),
        /// A float histogram's count.
        #[prost(double, tag = "2")]
        CountFloat(f64),
    }

    /// The zero bucket's count.
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum ZeroCount {
        /// An integer histogram's.
        #[prost(uint64, tag = "6")]
        ZeroCountInt(u64),
        /// A float histogram's.
        #[prost(double, tag = "7")]
        ZeroCountFloat(f64),
    }

    /// Whether a counter reset happened before this sample.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ResetHint {
        /// Unknown: test for a reset.
        Unknown = 0,
        /// The first histogram after a reset.
        Yes = 1,
        /// No reset since the previous histogram.
        No = 2,
        /// A gauge histogram: resets do not apply.
        Gauge = 3,
    }
}

/// `prometheus.BucketSpan`: a run of consecutive buckets.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct BucketSpan {
    /// Gap to the previous span (or the first bucket's index).
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// How many consecutive buckets.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// The metric type (`metric_metadata::MetricType`).
    #[prost(enumeration = "metric_metadata::MetricType", tag = "1")]
    pub r#type: i32,
    /// The metric family's name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// The help text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// The unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// The enum of [`MetricMetadata`].
pub mod metric_metadata {
    /// A metric family's type.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        /// Unknown.
        Unknown = 0,
        /// Counter.
        Counter = 1,
        /// Gauge.
        Gauge = 2,
        /// Histogram (classic or native).
        Histogram = 3,
        /// Gauge histogram.
        Gaugehistogram = 4,
        /// Summary.
        Summary = 5,
        /// Info.
        Info = 6,
        /// State set.
        Stateset = 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// A request with every field set, so a field declared with the wrong number or type
    /// shows as a changed byte below.
    fn everything() -> WriteRequest {
        let l = |n: &str, v: &str| Label {
            name: n.into(),
            value: v.into(),
        };
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![l("__name__", "http_requests_total"), l("job", "web")],
                samples: vec![Sample {
                    value: 1.5,
                    timestamp: 1_764_633_600_000,
                }],
                exemplars: vec![Exemplar {
                    labels: vec![l("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")],
                    value: 0.25,
                    timestamp: 1_764_633_600_001,
                }],
                histograms: vec![Histogram {
                    count: Some(histogram::Count::CountInt(7)),
                    sum: 12.5,
                    schema: -1,
                    zero_threshold: 0.001,
                    zero_count: Some(histogram::ZeroCount::ZeroCountInt(1)),
                    negative_spans: vec![BucketSpan {
                        offset: -2,
                        length: 1,
                    }],
                    negative_deltas: vec![-1],
                    negative_counts: vec![],
                    positive_spans: vec![BucketSpan {
                        offset: 0,
                        length: 2,
                    }],
                    positive_deltas: vec![2, -1],
                    positive_counts: vec![],
                    reset_hint: histogram::ResetHint::No as i32,
                    timestamp: 1_764_633_600_002,
                    custom_values: vec![0.5],
                }],
            }],
            metadata: vec![MetricMetadata {
                r#type: metric_metadata::MetricType::Counter as i32,
                metric_family_name: "http_requests_total".into(),
                help: "Requests.".into(),
                unit: "".into(),
            }],
        }
    }

    #[test]
    fn the_field_numbers_and_wire_types_are_prometheus_s() {
        // Hand-assembled wire bytes of a few fields, as protoc would lay them out for
        // prompb: WriteRequest.timeseries (1, LEN) holding TimeSeries.labels (1, LEN) and
        // samples (2, LEN: value 1 fixed64, timestamp 2 varint); metadata (3, LEN) with
        // type (1, varint), name (2), help (4), unit (5).
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "a".into(),
                    value: "b".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 5,
                }],
                exemplars: vec![],
                histograms: vec![],
            }],
            metadata: vec![MetricMetadata {
                r#type: 2,
                metric_family_name: "m".into(),
                help: "h".into(),
                unit: "u".into(),
            }],
        };
        let mut want = vec![0x0a, 21];
        want.extend([0x0a, 6, 0x0a, 1, b'a', 0x12, 1, b'b']);
        want.extend([0x12, 11, 0x09]);
        want.extend(1.0f64.to_le_bytes());
        want.extend([0x10, 5]);
        want.extend([
            0x1a, 11, 0x08, 2, 0x12, 1, b'm', 0x22, 1, b'h', 0x2a, 1, b'u',
        ]);
        assert_eq!(req.encode_to_vec(), want);
    }

    #[test]
    fn every_field_survives_decoding_and_encoding_again() {
        let bytes = everything().encode_to_vec();
        let back = WriteRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, everything());
        assert_eq!(back.encode_to_vec(), bytes);
        // Signed fields are zigzag (sint32/sint64) as declared: -1 is one byte, 0x01.
        let span = BucketSpan {
            offset: -1,
            length: 3,
        };
        assert_eq!(span.encode_to_vec(), vec![0x08, 0x01, 0x10, 0x03]);
    }
}
