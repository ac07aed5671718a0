//! Protobuf messages frugal declares itself, with prost's derive, from their published
//! field numbers: messages no maintained crate carries for the prost version in use.
//! Receivers decode them and the forwarder encodes them; nothing here does I/O.
//!
//! - [`rpc`]: `google.rpc.Status` and `google.rpc.RetryInfo`, the bodies of OTLP error
//!   responses (HTTP and gRPC).

pub mod rpc;
