//! Loki's push API: `logproto.PushRequest` and the messages in it, declared from the field
//! numbers Loki publishes (`pkg/push/push.proto`), structured metadata included: prost
//! drops undeclared fields silently, and frugal forwards its own encoding of what it
//! decoded.

/// `logproto.PushRequest`: the body of `POST /loki/api/v1/push` (a snappy block).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// The streams and their entries.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<Stream>,
}

/// `logproto.StreamAdapter`: a stream's label set (as text, `{app="web"}`) and entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Stream {
    /// The labels, in Prometheus's text form.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// The entries.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<Entry>,
    /// A hash of the labels some clients set (Loki ignores it on push).
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`: one log line.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// When it happened.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The line.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Structured metadata: name-value pairs billed with the line, not indexed.
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPair>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LabelPair {
    /// The name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// Nanoseconds since the Unix epoch (0 before it or past `u64`).
    pub fn unix_nanos(&self) -> u64 {
        u64::try_from(self.seconds)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .and_then(|n| n.checked_add(u64::try_from(self.nanos).unwrap_or(0)))
            .unwrap_or(0)
    }

    /// From nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(n: u64) -> Timestamp {
        Timestamp {
            seconds: i64::try_from(n / 1_000_000_000).unwrap_or(i64::MAX),
            nanos: (n % 1_000_000_000) as i32,
        }
    }
}
