//! The `listen` section: the addresses frugal serves OTLP/HTTP, OTLP/gRPC and its admin
//! API on, and the caps and deadlines of their connections.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde_json::Value;

use crate::policy::defaults::{
    CONNECTION_TIMEOUT_RANGE, DEFAULT_ADMIN_MAX_CONNECTIONS, DEFAULT_CONNECTIONS,
    DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN_ADMIN, DEFAULT_LISTEN_GRPC,
    DEFAULT_LISTEN_HTTP, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_STREAMS, DEFAULT_REQUEST_TIMEOUT,
    MAX_CONNECTIONS_RANGE, MAX_STREAMS_RANGE,
};
use crate::policy::problem::must_be_between;
use crate::policy::tree::{Node, Obj, with};
use crate::policy::{Connections, Listen};
use crate::units::parse_duration;

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
    let connections = with(&mut o, "connections", connections).unwrap_or(DEFAULT_CONNECTIONS);
    o.finish();
    Some(Listen {
        http,
        grpc,
        admin,
        connections,
    })
}

/// `listen.connections`: each key within its range (a wrong one has been reported, and
/// its default stands in).
fn connections(n: Node<'_>) -> Option<Connections> {
    let mut o = n.map()?;
    let max = count(&mut o, "max", &MAX_CONNECTIONS_RANGE).unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let admin_max =
        count(&mut o, "admin_max", &MAX_CONNECTIONS_RANGE).unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS);
    let header_timeout = timeout(&mut o, "header_timeout").unwrap_or(DEFAULT_HEADER_TIMEOUT);
    let request_timeout = timeout(&mut o, "request_timeout").unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    let idle_timeout = timeout(&mut o, "idle_timeout").unwrap_or(DEFAULT_IDLE_TIMEOUT);
    let max_streams =
        count(&mut o, "max_streams", &MAX_STREAMS_RANGE).unwrap_or(DEFAULT_MAX_STREAMS);
    o.finish();
    Some(Connections {
        max,
        admin_max,
        header_timeout,
        request_timeout,
        idle_timeout,
        max_streams,
    })
}

/// A whole number in `range`, or a problem.
fn count(o: &mut Obj<'_>, key: &'static str, range: &RangeInclusive<u64>) -> Option<u32> {
    with(o, key, |n| {
        let v = n.u64()?;
        if range.contains(&v) {
            u32::try_from(v).ok()
        } else {
            n.problem(format!(
                "must be between {} and {}",
                range.start(),
                range.end()
            ));
            None
        }
    })
}

/// A duration in [`CONNECTION_TIMEOUT_RANGE`], or a problem.
fn timeout(o: &mut Obj<'_>, key: &'static str) -> Option<Duration> {
    with(o, key, |n| {
        let d = n.parse(parse_duration)?;
        if CONNECTION_TIMEOUT_RANGE.contains(&d) {
            Some(d)
        } else {
            n.problem(must_be_between(&CONNECTION_TIMEOUT_RANGE));
            None
        }
    })
}

fn addr(n: Node<'_>) -> Option<SocketAddr> {
    n.parse(|s| {
        s.parse::<SocketAddr>()
            .map_err(|_| format!("{s:?} is not an address (try 0.0.0.0:4318 or 127.0.0.1:4318)"))
    })
}
