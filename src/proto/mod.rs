//! Protobuf messages frugal declares itself, with prost's derive, from their published
//! field numbers: messages no maintained crate carries for the prost version in use.
//! Receivers decode them and the forwarder encodes them; nothing here does I/O.
//!
//! - [`rpc`]: `google.rpc.Status` and `google.rpc.RetryInfo`, the bodies of OTLP error
//!   responses (HTTP and gRPC).
//! - [`loki`]: Loki's push API (`logproto.PushRequest`), structured metadata included.
//! - [`remote_write`]: Prometheus remote write 1.0 (`prometheus.WriteRequest`), every
//!   field, for the remote-write receiver and destination.

pub mod loki;
pub mod remote_write;
pub mod rpc;
