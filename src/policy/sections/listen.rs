//! The `listen` section: the addresses frugal serves OTLP/HTTP, OTLP/gRPC and its admin
//! API on.

use std::net::SocketAddr;

use serde_json::Value;

use crate::policy::Listen;
use crate::policy::defaults::{DEFAULT_LISTEN_ADMIN, DEFAULT_LISTEN_GRPC, DEFAULT_LISTEN_HTTP};
use crate::policy::tree::{Node, with};

/// Words that turn OTLP/gRPC off (as does `false`).
const GRPC_OFF: [&str; 2] = ["off", "disabled"];

/// Reads `listen`; `None` when it is not a mapping.
pub(in crate::policy) fn build(n: Node<'_>) -> Option<Listen> {
    let mut o = n.map()?;
    // A wrong address has been reported; the default only stands in for it.
    let http = with(&mut o, "http", addr).unwrap_or(DEFAULT_LISTEN_HTTP);
    let grpc = with(&mut o, "grpc", |n| match n.value {
        Value::String(s) if GRPC_OFF.contains(&s.as_str()) => Some(None),
        Value::Bool(false) => Some(None),
        _ => addr(n).map(Some),
    })
    .unwrap_or(Some(DEFAULT_LISTEN_GRPC));
    let admin = with(&mut o, "admin", addr).unwrap_or(DEFAULT_LISTEN_ADMIN);
    o.finish();
    Some(Listen { http, grpc, admin })
}

fn addr(n: Node<'_>) -> Option<SocketAddr> {
    n.parse(|s| {
        s.parse::<SocketAddr>()
            .map_err(|_| format!("{s:?} is not an address (try 0.0.0.0:4318 or 127.0.0.1:4318)"))
    })
}
