//! The Loki push wire: the policy's full push URL (Grafana Cloud's
//! `.../loki/api/v1/push`), `logproto.PushRequest` in a snappy block. Loki counts a push's
//! bytes while parsing it, before validating or rate limiting: a 400, 422 or 429 may have
//! been billed ([`BillsAt::WhileParsing`]). Success is 204, no body.

use bytes::Bytes;

use super::Wire;
use super::retry::BillsAt;
use crate::model::Destination;
use crate::policy::Compression;

/// Loki's push API, protobuf.
pub struct LokiWire;

impl Wire for LokiWire {
    fn destination(&self) -> Destination {
        Destination::Loki
    }

    fn url(&self, endpoint: &str) -> String {
        endpoint.to_string()
    }

    fn content_type(&self) -> &'static str {
        "application/x-protobuf"
    }

    /// Always a snappy block (no `Content-Encoding`: Loki reads protobuf pushes as snappy
    /// by their content type).
    fn encode(&self, body: Bytes, _compression: Compression) -> (Bytes, Option<&'static str>) {
        match snap::raw::Encoder::new().compress_vec(&body) {
            Ok(b) => (Bytes::from(b), None),
            Err(_) => (body, None),
        }
    }

    fn bills_at(&self) -> BillsAt {
        BillsAt::WhileParsing
    }

    fn partial_success(&self, _body: &[u8], _json: bool) -> Option<(u64, String)> {
        None
    }
}
