//! The Prometheus remote-write 1.0 wire: the policy's full push URL (Grafana Cloud's
//! `.../api/prom/push`), protobuf in a snappy block, the protocol's version header.
//! Mimir answers 200 with an empty body on success; a 400 may be a partial acceptance
//! (some series stored, the bad ones named in the message), so a 400 counts as possibly
//! arrived ([`BillsAt::WhileParsing`]): usage is never under-counted.

use bytes::Bytes;

use super::Wire;
use super::retry::BillsAt;
use crate::model::Destination;
use crate::policy::Compression;

/// Prometheus remote write 1.0.
pub struct RemoteWriteWire;

impl Wire for RemoteWriteWire {
    fn destination(&self) -> Destination {
        Destination::RemoteWrite
    }

    fn url(&self, endpoint: &str) -> String {
        endpoint.to_string()
    }

    fn content_type(&self) -> &'static str {
        "application/x-protobuf"
    }

    fn headers(&self) -> &'static [(&'static str, &'static str)] {
        &[("x-prometheus-remote-write-version", "0.1.0")]
    }

    /// Always a snappy block, whatever the policy's compression (remote write has one).
    fn encode(&self, body: Bytes, _compression: Compression) -> (Bytes, Option<&'static str>) {
        match snap::raw::Encoder::new().compress_vec(&body) {
            Ok(b) => (Bytes::from(b), Some("snappy")),
            // Only a body over snappy's 4 GiB limit fails; the request limit is far below.
            Err(_) => (body, None),
        }
    }

    fn bills_at(&self) -> BillsAt {
        BillsAt::WhileParsing
    }

    /// Mimir has no partial success in a 2xx answer.
    fn partial_success(&self, _body: &[u8], _json: bool) -> Option<(u64, String)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snappy_body_full_url_and_a_400_may_have_arrived() {
        let w = RemoteWriteWire;
        let body = Bytes::from(vec![7u8; 1000]);
        let (sent, enc) = w.encode(body.clone(), Compression::Gzip);
        assert_eq!(enc, Some("snappy"));
        assert_eq!(
            snap::raw::Decoder::new().decompress_vec(&sent).unwrap(),
            body
        );
        assert_eq!(
            w.url("https://prometheus-prod-01-eu-west-0.grafana.net/api/prom/push"),
            "https://prometheus-prod-01-eu-west-0.grafana.net/api/prom/push"
        );
        assert!(
            super::super::retry::Attempt::from_status(400, None).may_have_arrived(w.bills_at())
        );
    }
}
