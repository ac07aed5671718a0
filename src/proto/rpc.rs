//! `google.rpc.Status` and `google.rpc.RetryInfo` (googleapis `google/rpc/status.proto`,
//! `error_details.proto`): what OTLP servers answer errors with, and how an OTLP client
//! learns when to retry.

use std::time::Duration;

use prost::Message as _;

/// `google.rpc.Status`, the body of OTLP error responses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// A `google.rpc.Code` value.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// A message for the developer.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details, such as [`RetryInfo`].
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`: how long a client should wait before retrying.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    /// The wait.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<prost_types::Duration>,
}

/// The type URL of [`RetryInfo`] inside a `google.protobuf.Any`.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// gRPC's `UNAVAILABLE` code.
pub const UNAVAILABLE: i32 = 14;

impl Status {
    /// A status without details.
    pub fn new(code: i32, message: &str) -> Status {
        Status {
            code,
            message: message.to_string(),
            details: Vec::new(),
        }
    }

    /// An UNAVAILABLE status saying when to retry, as OTLP clients read it.
    pub fn unavailable(message: &str, retry_after: Duration) -> Status {
        let info = RetryInfo {
            retry_delay: Some(prost_types::Duration {
                seconds: i64::try_from(retry_after.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(retry_after.subsec_nanos()).unwrap_or(0),
            }),
        };
        Status {
            code: UNAVAILABLE,
            message: message.to_string(),
            details: vec![prost_types::Any {
                type_url: RETRY_INFO_TYPE.into(),
                value: info.encode_to_vec(),
            }],
        }
    }

    /// The wait a [`RetryInfo`] detail asks for, if there is one.
    pub fn retry_delay(&self) -> Option<Duration> {
        let any = self
            .details
            .iter()
            .find(|d| d.type_url == RETRY_INFO_TYPE)?;
        let d = RetryInfo::decode(&any.value[..]).ok()?.retry_delay?;
        Some(Duration::new(
            u64::try_from(d.seconds).ok()?,
            u32::try_from(d.nanos).ok()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_info_round_trips() {
        let s = Status::unavailable("later", Duration::from_millis(2500));
        let back = Status::decode(&s.encode_to_vec()[..]).unwrap();
        assert_eq!(back.code, UNAVAILABLE);
        assert_eq!(back.retry_delay(), Some(Duration::from_millis(2500)));
        assert_eq!(Status::new(3, "bad").retry_delay(), None);
    }
}
