//! What the OTLP targets share: the receiver's path from a body to a request ready to be
//! forwarded (decompress, decode, check IDs, canonicalise, weigh, sample), and the
//! invariants that must hold along it whatever the input.

use std::sync::LazyLock;

use bytes::Bytes;
use frugal::ingest::{IngestError, Payload};
use frugal::metering::{Weight, loki, mimir, tempo};
use frugal::model::Class;
use frugal::policy::{Overrides, Policy, load_str};
use frugal::receivers::Validate;
use frugal::receivers::codec::{self, Format};
use frugal::receivers::scan;
use frugal::receivers::status::http_status;
use frugal::sampling::{self, ClassProbabilities, Fate, logs::TraceSide};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};

/// The decompressed-size limit: small, so a compression bomb costs little per run.
pub const LIMIT: u64 = 1 << 20;

/// Undoes a `Content-Encoding` chosen by the first byte (most inputs are plain, so the
/// fuzzer spends its time on the decoders rather than on checksums). Errors must be the
/// client's (4xx), never a panic.
pub fn decompress(data: &[u8]) -> Option<(u8, Bytes)> {
    let (&selector, body) = data.split_first()?;
    let encoding = match selector >> 4 {
        0..=10 => None,
        11 => Some("gzip"),
        12 => Some("zstd"),
        13 => Some("deflate"),
        14 => Some("identity"),
        _ => Some("br"),
    };
    match codec::decompress(encoding, Bytes::copy_from_slice(body), LIMIT, |_| Ok(())) {
        Ok(out) => {
            assert!(out.len() as u64 <= LIMIT, "decompressed past the limit");
            if encoding.is_none() {
                assert_eq!(&out[..], body, "an unencoded body is taken as it is");
            }
            Some((selector, out))
        }
        Err(e) => {
            client_error(&e);
            None
        }
    }
}

/// An error the client caused: a 4xx with a message.
pub fn client_error(e: &IngestError) {
    let status = http_status(e).as_u16();
    assert!(
        matches!(status, 400 | 413 | 415),
        "{status} for a bad body: {e}"
    );
    assert!(!e.to_string().is_empty());
}

/// Runs a body through the path for the signal `selector` picks.
pub fn exercise(selector: u8, format: Format, body: &[u8]) {
    match selector % 3 {
        0 => exercise_as::<ExportTraceServiceRequest>(format, body),
        1 => exercise_as::<ExportLogsServiceRequest>(format, body),
        _ => exercise_as::<ExportMetricsServiceRequest>(format, body),
    }
}

/// One OTLP export request type, with what its weight must satisfy and how it is sampled.
pub trait Otlp:
    Payload + Validate + PartialEq + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned
{
    /// Resources, scopes and items (spans, log records, data points) as decoded.
    fn containers(&self) -> (u64, u64, u64);
    /// Resources without scopes, scopes without items (and metrics without points).
    fn empty_containers(&self) -> u64;
    /// Checks a weight against the request it was computed on.
    fn check_weight(&self, w: Weight, encoded_len: usize);
    /// Decides and applies sampling under the example policy; checks the accounting.
    fn sample(&mut self);
}

fn exercise_as<P: Otlp>(format: Format, body: &[u8]) {
    // What the body holds is counted on its encoding before it is decoded: the count must
    // never be less than what decoding gives (the limits would be dodged), and a body the
    // count finds malformed must not decode.
    let limits = &frugal::policy::defaults::DEFAULT_MAX_PER_REQUEST;
    let census = match format {
        Format::Protobuf => scan::protobuf(P::SIGNAL, body, limits),
        Format::Json => scan::json(P::SIGNAL, body, limits),
    };
    let req = codec::decode::<P>(format, body);
    let census = match (census, &req) {
        (Err(e), Ok(_)) => {
            client_error(&e);
            assert!(
                e.to_string().contains("max_per_request.depth"),
                "the count refuses what decodes: {e}"
            );
            None
        }
        (Err(e), Err(_)) => {
            client_error(&e);
            None
        }
        (Ok(c), _) => Some(c),
    };
    let req: P = match req {
        Ok(r) => r,
        Err(e) => {
            say(|| format!("refused: {e}"));
            client_error(&e);
            return;
        }
    };
    if let Some(c) = census {
        let (resources, scopes, items) = req.containers();
        say(|| format!("counted {c:?}; decoded {resources} {scopes} {items}"));
        assert!(c.resources >= resources, "{c:?} vs {resources} resources");
        assert!(c.scopes >= scopes, "{c:?} vs {scopes} scopes");
        assert!(c.items >= items, "{c:?} vs {items} items");
        if format == Format::Protobuf && P::SIGNAL != frugal::model::Signal::Metrics {
            // Nothing in a trace or logs request is in a oneof down to its items.
            assert_eq!((c.resources, c.scopes, c.items), (resources, scopes, items));
        }
    }

    // Containers without items go before anything is weighed: afterwards there are none,
    // the items are all there, and pruning again changes nothing.
    let mut pruned = req.clone();
    pruned.prune();
    assert!(!pruned.clone().prune(), "pruning is idempotent");
    assert_eq!(pruned.weigh().items, req.weigh().items);
    let (_, _, before) = req.containers();
    let (r, s, after) = pruned.containers();
    assert_eq!(before, after);
    assert_eq!(
        pruned.empty_containers(),
        0,
        "no container without items is left"
    );
    assert!(
        r <= s && s <= after,
        "{r} resources, {s} scopes, {after} items"
    );
    say(|| format!("decoded, weighs {:?}", req.clone().weigh()));
    if let Err(e) = req.check_ids() {
        client_error(&e);
    }

    // The protobuf form is what is forwarded: it must decode to the same request and
    // encode to the same bytes again (compared as bytes: a NaN is not equal to itself).
    let wire = req.encode_to_vec();
    assert_eq!(wire.len(), req.encoded_len());
    let back = P::decode(&wire[..]).expect("frugal's own encoding decodes");
    assert_eq!(back.encode_to_vec(), wire, "encoding is stable");

    // The canonical form (what is metered and forwarded) is stable, survives the wire,
    // and weighs the same however it is computed.
    let mut canonical = req.clone();
    let changed = canonical.canonicalize();
    if !changed {
        assert_eq!(canonical.encode_to_vec(), wire, "unchanged means unchanged");
    }
    assert!(
        !canonical.clone().canonicalize(),
        "canonical form is stable"
    );
    let (w, len) = canonical.weigh_encoded();
    assert_eq!(len, canonical.encoded_len());
    assert_eq!(w, canonical.weigh());
    canonical.check_weight(w, len);
    let wired = P::decode(&canonical.encode_to_vec()[..]).expect("decodes");
    let mut rewired = wired.clone();
    assert!(!rewired.canonicalize(), "canonical form survives the wire");
    assert_eq!(wired.weigh(), w, "weight survives the wire");
    assert_eq!(canonical.is_empty(), req.is_empty());

    // Sampling: decide and apply under a policy with rules of every kind.
    canonical.sample();

    // The JSON mapping of what was decoded reads back to the same request.
    if format == Format::Json {
        let json = codec::encode(Format::Json, &req);
        let again: P = codec::decode(Format::Json, &json)
            .unwrap_or_else(|e| panic!("frugal's own JSON does not decode: {e}"));
        assert_eq!(again.encode_to_vec(), wire, "JSON round trip");
    }
}

/// With `FUZZ_VERBOSE` set (running single inputs, e.g. to check the seeds), says what
/// happened to each.
fn say(what: impl FnOnce() -> String) {
    static VERBOSE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_VERBOSE").is_some());
    if *VERBOSE {
        eprintln!("{}", what());
    }
}

/// The example Mastodon policy (rules on names, attributes, services, status, latency,
/// severity and bodies), loaded once.
static POLICY: LazyLock<Policy> = LazyLock::new(|| {
    let text = include_str!("../../../policies/mastodon.yaml");
    let env = |k: &str| match k {
        "GRAFANA_CLOUD_OTLP_ENDPOINT" => Some("https://otlp.example.net/otlp".to_string()),
        "GRAFANA_CLOUD_INSTANCE_ID" => Some("123456".to_string()),
        "GRAFANA_CLOUD_API_TOKEN" => Some("glc_fuzzing_token_0123456789".to_string()),
        _ => None,
    };
    load_str(text, "mastodon.yaml", &Overrides::default(), &env)
        .unwrap_or_else(|e| panic!("the example policy loads: {e}"))
});

/// Keep probabilities that keep some of every class and drop some.
const PROBABILITIES: ClassProbabilities = frugal::model::PerClass::new([1.0, 0.5, 0.25]);

impl Otlp for ExportTraceServiceRequest {
    fn containers(&self) -> (u64, u64, u64) {
        let rs = &self.resource_spans;
        let scopes = rs.iter().flat_map(|r| &r.scope_spans);
        (
            rs.len() as u64,
            scopes.clone().count() as u64,
            scopes.map(|s| s.spans.len() as u64).sum(),
        )
    }

    fn empty_containers(&self) -> u64 {
        let rs = &self.resource_spans;
        let r = rs.iter().filter(|r| r.scope_spans.is_empty()).count();
        let s = rs
            .iter()
            .flat_map(|r| &r.scope_spans)
            .filter(|s| s.spans.is_empty())
            .count();
        (r + s) as u64
    }

    fn check_weight(&self, w: Weight, encoded_len: usize) {
        assert_eq!(w.items, tempo::span_count(self));
        assert!(
            w.units >= encoded_len as u64,
            "billed at least what is sent"
        );
    }

    fn sample(&mut self) {
        let policy = &*POLICY;
        let (decisions, account) =
            sampling::traces::decide_all(&policy.traces, &PROBABILITIES, None, self);
        assert_eq!(decisions.len() as u64, tempo::span_count(self));
        let kept = decisions.iter().filter(|d| d.fate == Fate::Keep).count() as u64;
        assert_eq!(account.kept_total().items, kept);
        let mut priority = self.clone();
        sampling::traces::retain_class(&mut priority, &decisions, Class::Priority);
        sampling::traces::apply(
            self,
            &decisions,
            policy.traces.sampling.multiplier_attribute.as_deref(),
        );
        assert_eq!(tempo::span_count(self), kept);
        assert!(
            !self.canonicalize(),
            "sampling keeps the canonical form (what is billed is what is sent)"
        );
        assert_eq!(self.is_empty(), kept == 0);
        assert!(tempo::span_count(&priority) <= kept);
    }
}

impl Otlp for ExportLogsServiceRequest {
    fn containers(&self) -> (u64, u64, u64) {
        let rl = &self.resource_logs;
        let scopes = rl.iter().flat_map(|r| &r.scope_logs);
        let items = scopes.clone().map(|s| s.log_records.len() as u64).sum();
        (rl.len() as u64, scopes.count() as u64, items)
    }

    fn empty_containers(&self) -> u64 {
        let rl = &self.resource_logs;
        let r = rl.iter().filter(|r| r.scope_logs.is_empty()).count();
        let s = rl
            .iter()
            .flat_map(|r| &r.scope_logs)
            .filter(|s| s.log_records.is_empty())
            .count();
        (r + s) as u64
    }

    fn check_weight(&self, w: Weight, _encoded_len: usize) {
        let records: usize = self
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len())
            .sum();
        assert_eq!(w.items, records as u64);
        let parts: u64 = self
            .resource_logs
            .iter()
            .map(|rl| {
                loki::resource_bytes(rl.resource.as_ref())
                    + rl.scope_logs
                        .iter()
                        .map(|sl| {
                            loki::scope_bytes(sl.scope.as_ref())
                                + sl.log_records.iter().map(loki::record_bytes).sum::<u64>()
                        })
                        .sum::<u64>()
            })
            .sum();
        assert_eq!(w.units, parts, "a request weighs what its parts weigh");
        let attributes = self.resource_logs.iter().flat_map(|rl| {
            let resource = rl.resource.iter().flat_map(|r| &r.attributes);
            let scopes = rl.scope_logs.iter().flat_map(|sl| {
                let scope = sl.scope.iter().flat_map(|s| &s.attributes);
                scope.chain(sl.log_records.iter().flat_map(|r| &r.attributes))
            });
            resource.chain(scopes)
        });
        for kv in attributes {
            let name = loki::normalize_label(&kv.key);
            assert_eq!(
                loki::attribute_bytes(kv),
                written_out(&name, kv.value.as_ref()),
                "flattened names are measured as Loki writes them"
            );
        }
    }

    fn sample(&mut self) {
        let policy = &*POLICY;
        let side = TraceSide {
            probabilities: PROBABILITIES,
            follow_bulk: !policy.traces.rules.drop_first.is_empty(),
            mode: policy.traces.sampling.mode,
            precision: policy.traces.sampling.precision,
        };
        let (decisions, account) =
            sampling::logs::decide_all(&policy.logs, &PROBABILITIES, &side, None, self);
        let before = self.weigh().items;
        assert_eq!(decisions.len() as u64, before);
        let kept = decisions.iter().filter(|d| d.fate == Fate::Keep).count() as u64;
        assert_eq!(account.kept_total().items, kept);
        sampling::logs::apply(self, &decisions);
        assert_eq!(self.weigh().items, kept);
    }
}

/// Structured-metadata bytes of an attribute, every flattened name written out (as Loki
/// does; frugal measures them without writing them).
fn written_out(name: &str, value: Option<&AnyValue>) -> u64 {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::KvlistValue(kv)) => kv
            .values
            .iter()
            .map(|c| {
                let child = loki::normalize_label(&format!("{name}_{}", c.key));
                written_out(&child, c.value.as_ref())
            })
            .sum(),
        _ if name == "detected_level" => 0,
        _ => (name.len() + loki::as_string(value).len()) as u64,
    }
}

impl Otlp for ExportMetricsServiceRequest {
    fn containers(&self) -> (u64, u64, u64) {
        let rm = &self.resource_metrics;
        let scopes = rm.iter().flat_map(|r| &r.scope_metrics);
        let items = scopes
            .clone()
            .flat_map(|s| &s.metrics)
            .map(mimir::data_points)
            .sum();
        (rm.len() as u64, scopes.count() as u64, items)
    }

    fn empty_containers(&self) -> u64 {
        let rm = &self.resource_metrics;
        let r = rm.iter().filter(|r| r.scope_metrics.is_empty()).count();
        let scopes = rm.iter().flat_map(|r| &r.scope_metrics);
        let s = scopes.clone().filter(|s| s.metrics.is_empty()).count();
        let m = scopes
            .flat_map(|s| &s.metrics)
            .filter(|m| mimir::data_points(m) == 0)
            .count();
        (r + s + m) as u64
    }

    fn check_weight(&self, w: Weight, _encoded_len: usize) {
        assert_eq!(w.items, w.units);
        let points: u64 = self
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(mimir::data_points)
            .sum();
        assert_eq!(w.items, points);
    }

    fn sample(&mut self) {}
}
