//! Deciding the entries of a Loki push as OTLP log records are decided: each entry is
//! seen as a record (its line the body, its stream's labels and its structured metadata
//! the attributes, its severity detected as Loki's `detected_level` would say it, its
//! trace ID from structured metadata or the line) and judged by [`logs::decide`], so the
//! logs rules (`severity_at_least`, `body_matches`, ...), pacing and trace-following apply
//! to Loki pushes exactly as to OTLP logs. A kept, sampled entry carries its threshold as
//! structured metadata `sampling_threshold` (billed as sent).

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::logs::{self, LogDecision, THRESHOLD_ATTRIBUTE, TraceSide};
use super::memory::Session;
use crate::budget::streams::StreamGates;
use crate::metering::Weight;
use crate::model::{Class, DropReason};
use crate::policy::LogPolicy;
use crate::proto::loki::{Entry, LabelPair, PushRequest, Stream};
use crate::sampling::{Account, ClassProbabilities, Fate};

/// The structured-metadata name of a kept entry's threshold (Loki's names are label-like:
/// no dots).
pub const THRESHOLD_METADATA: &str = "sampling_threshold";

/// Loki's `detected_level` names, and the OTLP severity number each starts at.
const LEVELS: [(&str, i32); 10] = [
    ("trace", 1),
    ("debug", 5),
    ("info", 9),
    ("information", 9),
    ("notice", 10),
    ("warn", 13),
    ("warning", 13),
    ("error", 17),
    ("critical", 21),
    ("fatal", 21),
];

fn level_number(word: &str) -> Option<i32> {
    let w = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    match w.to_ascii_lowercase().as_str() {
        "err" | "eror" | "e" => Some(17),
        "wrn" | "w" => Some(13),
        "inf" | "i" => Some(9),
        "dbg" | "d" => Some(5),
        "crit" | "f" => Some(21),
        lower => LEVELS.iter().find(|(n, _)| *n == lower).map(|(_, s)| *s),
    }
}

/// The severity number of an entry, as Loki's `detected_level` would find it: a `level`,
/// `detected_level`, `severity` or `lvl` in structured metadata or the stream's labels;
/// else in the line: logfmt `level=error`, JSON `"level":"warn"`, Ruby Logger's
/// `E, [2026-11-25T10:00:00.000000 #1] ERROR -- :`, Sidekiq's `INFO: `; else 0 (unknown).
pub fn severity(line: &str, metadata: &[LabelPair], labels: &[(String, String)]) -> i32 {
    const KEYS: [&str; 4] = ["level", "detected_level", "severity", "lvl"];
    let from_pairs = metadata
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .chain(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .find(|(k, _)| KEYS.contains(&k.to_ascii_lowercase().as_str()))
        .and_then(|(_, v)| level_number(v));
    if let Some(s) = from_pairs {
        return s;
    }
    let head = &line[..floor_char_boundary(line, 4096)];
    // logfmt and JSON: `level=error`, `"level":"warn"`, `"severity": "ERROR"`.
    for key in KEYS {
        for pattern in [format!("{key}="), format!("\"{key}\":")] {
            if let Some(at) = find_key(head, &pattern) {
                let rest = head[at + pattern.len()..]
                    .trim_start()
                    .trim_start_matches('"');
                let word: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                if let Some(s) = level_number(&word) {
                    return s;
                }
            }
        }
    }
    // Ruby's Logger: `E, [2026-11-25T10:00:00.000000 #1] ERROR -- : message`.
    if let Some(close) = head.find("] ")
        && head.as_bytes().get(1) == Some(&b',')
        && let Some(word) = head[close + 2..].split_whitespace().next()
        && head[close + 2..].contains(" -- ")
        && let Some(s) = level_number(word)
    {
        return s;
    }
    // Sidekiq and others: a level word in capitals followed by `:` or standing alone.
    for word in head.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
        let w = word.trim_end_matches(':');
        if w.len() >= 4
            && w.chars().all(|c| c.is_ascii_uppercase())
            && let Some(s) = level_number(w)
        {
            return s;
        }
    }
    0
}

/// Where `key` starts in `s` at a key boundary (start, or after a space, `{`, `,`).
fn find_key(s: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(key) {
        let at = from + i;
        let before = s[..at].chars().next_back();
        if matches!(before, None | Some(' ' | '{' | ',' | '\t')) {
            return Some(at);
        }
        from = at + key.len();
    }
    None
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A trace ID from structured metadata (`trace_id`, `traceID`, `traceId`) or a
/// `trace_id=<32 hex>` / `traceID=` in the line.
pub fn trace_id(line: &str, metadata: &[LabelPair]) -> Option<[u8; 16]> {
    let parse = |hex: &str| -> Option<[u8; 16]> {
        let hex = hex.get(..32)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        (out != [0; 16]).then_some(out)
    };
    for p in metadata {
        if matches!(
            p.name.as_str(),
            "trace_id" | "traceID" | "traceId" | "traceid"
        ) {
            return parse(&p.value);
        }
    }
    for key in ["trace_id=", "traceID=", "traceId="] {
        if let Some(at) = find_key(line, key) {
            return parse(line[at + key.len()..].trim_start_matches('"'));
        }
    }
    None
}

/// Loki's longest label name and value (its `max_label_name_length`,
/// `max_label_value_length` defaults).
pub const MAX_LABEL_NAME: usize = 1024;
/// See [`MAX_LABEL_NAME`].
pub const MAX_LABEL_VALUE: usize = 2048;

/// A stream's labels parsed from their text form (`{app="web", level="info"}`): only
/// `name="value"` pairs (Go's escapes in the value), as Loki takes them. Refused, as Loki
/// refuses them: no labels, another operator, a metric name before `{`, a name twice, a
/// name that is not a label name, a name or value over Loki's lengths. No regular
/// expression is ever compiled.
pub fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let shown = || {
        let t: String = text.chars().take(200).collect();
        if t.len() < text.len() {
            format!("{t}…")
        } else {
            t
        }
    };
    let bad = |why: &str| Err(format!("stream labels {:?} {why}", shown()));
    let t = text.trim();
    let Some(inner) = t.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else {
        return bad("are not a label set {name=\"value\", ...}");
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let name_len = rest
            .char_indices()
            .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
            .map_or(rest.len(), |(i, _)| i);
        if name_len == 0 {
            return bad("have something that is not a label name");
        }
        let name = &rest[..name_len];
        if name.len() > MAX_LABEL_NAME {
            return bad("have a label name longer than 1024 bytes");
        }
        rest = rest[name_len..].trim_start();
        let Some(r) = rest.strip_prefix('=') else {
            return bad("may only use `=` (name=\"value\")");
        };
        rest = r.trim_start();
        if rest.starts_with('~') {
            return bad("may only use `=` (name=\"value\")");
        }
        let Some(r) = rest.strip_prefix('"') else {
            return bad("need double-quoted values");
        };
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                None => return bad("have a value whose quote is not closed"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    _ => return bad("have an unknown escape"),
                },
                Some((_, c)) => value.push(c),
            }
            if value.len() > MAX_LABEL_VALUE {
                return bad("have a label value longer than 2048 bytes");
            }
        };
        if out.iter().any(|(n, _)| n == name) {
            return bad(&format!("name {name} twice"));
        }
        out.push((name.to_string(), value));
        rest = r[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return bad("need a comma between labels");
        }
    }
    if out.is_empty() {
        return bad("are empty: Loki needs at least one label");
    }
    Ok(out)
}

fn string_kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

/// An entry seen as an OTLP record, for the logs rules and sampler.
fn record_of(labels: &[(String, String)], e: &Entry) -> LogRecord {
    let mut attributes: Vec<KeyValue> = labels.iter().map(|(k, v)| string_kv(k, v)).collect();
    for p in &e.structured_metadata {
        let key = if p.name == THRESHOLD_METADATA {
            THRESHOLD_ATTRIBUTE
        } else {
            p.name.as_str()
        };
        attributes.push(string_kv(key, &p.value));
    }
    let number = severity(&e.line, &e.structured_metadata, labels);
    LogRecord {
        time_unix_nano: e.timestamp.map_or(0, |t| t.unix_nanos()),
        severity_number: number,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(e.line.clone())),
        }),
        attributes,
        trace_id: trace_id(&e.line, &e.structured_metadata)
            .map(|t| t.to_vec())
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// The resource a stream stands for: `service.name` from its `service_name`, `service`,
/// `app` or `job` label (in that order).
fn resource_of(labels: &[(String, String)]) -> Resource {
    let service = ["service_name", "service", "app", "job"]
        .iter()
        .find_map(|k| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()));
    Resource {
        attributes: service
            .map(|s| vec![string_kv("service.name", s)])
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// Billable bytes of an entry as Loki counts them: the line and each structured-metadata
/// name and value (the stream's labels are not billed).
pub fn entry_bytes(e: &Entry) -> u64 {
    e.line.len() as u64
        + e.structured_metadata
            .iter()
            .map(|p| (p.name.len() + p.value.len()) as u64)
            .sum::<u64>()
}

/// Entries and billable bytes of a push.
pub fn weigh(req: &PushRequest) -> Weight {
    let mut w = Weight::default();
    for e in req.streams.iter().flat_map(|s| &s.entries) {
        w.add(Weight {
            items: 1,
            units: entry_bytes(e),
        });
    }
    w
}

/// Decides every entry of a push (in stream order) and accounts for them.
pub fn decide_all(
    policy: &LogPolicy,
    probs: &ClassProbabilities,
    traces: &TraceSide,
    mut memory: Option<&mut Session<'_>>,
    gates: Option<(&StreamGates, i64)>,
    req: &PushRequest,
) -> (Vec<LogDecision>, Account) {
    let mut decisions = Vec::new();
    let mut account = Account::default();
    for s in &req.streams {
        // Streams were checked by the receiver; one that does not parse has no labels here.
        let labels = parse_labels(&s.labels).unwrap_or_default();
        let resource = resource_of(&labels);
        let service = super::rules::service_name(Some(&resource)).to_string();
        let stream = crate::budget::streams::key(&s.labels);
        let mut cut = 0;
        for e in &s.entries {
            let r = record_of(&labels, e);
            let mut d = logs::decide(
                policy,
                probs,
                traces,
                memory.as_deref_mut(),
                Some(&resource),
                &service,
                &r,
            );
            let w = Weight {
                items: 1,
                units: entry_bytes(e),
            };
            // A stream over its share loses its non-priority entries first.
            if let Some((g, now_ns)) = gates
                && d.fate == Fate::Keep
                && d.class != Some(Class::Priority)
                && !g.take(stream, w.units, now_ns)
            {
                d.fate = Fate::Drop(DropReason::StreamLimit);
                d.threshold = None;
                cut += 1;
            }
            account.record(d.class, &d.fate, w, d.threshold.is_some());
            decisions.push(d);
        }
        if let (Some((g, _)), true) = (gates, cut > 0) {
            g.dropped(&s.labels, cut);
        }
    }
    (decisions, account)
}

fn each_entry(
    req: &mut PushRequest,
    decisions: &[LogDecision],
    mut keep: impl FnMut(&mut Entry, &LogDecision) -> bool,
) {
    let mut i = 0;
    for s in &mut req.streams {
        s.entries.retain_mut(|e| {
            let k = decisions.get(i).is_none_or(|d| keep(e, d));
            i += 1;
            k
        });
    }
    req.streams.retain(|s: &Stream| !s.entries.is_empty());
}

/// Removes dropped entries (and streams left empty); writes the threshold on kept,
/// sampled ones.
pub fn apply(req: &mut PushRequest, decisions: &[LogDecision]) {
    each_entry(req, decisions, |e, d| {
        if d.fate != Fate::Keep {
            return false;
        }
        if let Some(th) = &d.threshold {
            e.structured_metadata
                .retain(|p| p.name != THRESHOLD_METADATA);
            e.structured_metadata.push(LabelPair {
                name: THRESHOLD_METADATA.into(),
                value: th.clone(),
            });
        }
        true
    });
}

/// Keeps only the kept entries of `class` (a push [`apply`] has been through: its
/// entries are the kept ones, in order).
pub fn retain_class(req: &mut PushRequest, decisions: &[LogDecision], class: Class) {
    let kept: Vec<&LogDecision> = decisions.iter().filter(|d| d.fate == Fate::Keep).collect();
    let mut i = 0;
    for s in &mut req.streams {
        s.entries.retain(|_| {
            let k = kept.get(i).is_some_and(|d| d.class == Some(class));
            i += 1;
            k
        });
    }
    req.streams.retain(|s| !s.entries.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(n: &str, v: &str) -> LabelPair {
        LabelPair {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn levels_are_found_where_loki_finds_them() {
        let none: &[LabelPair] = &[];
        let labels = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(severity("x", &[pair("level", "warn")], &[]), 13);
        assert_eq!(severity("x", none, &labels("detected_level", "error")), 17);
        assert_eq!(severity("ts=1 level=error msg=boom", none, &[]), 17);
        assert_eq!(severity(r#"{"msg":"x","level":"warn"}"#, none, &[]), 13);
        assert_eq!(severity(r#"{"severity": "DEBUG"}"#, none, &[]), 5);
        assert_eq!(
            severity(
                "E, [2026-11-25T10:00:00.000000 #1] ERROR -- : ActiveRecord failed",
                none,
                &[]
            ),
            17
        );
        assert_eq!(
            severity(
                "I, [2026-11-25T10:00:00.000000 #1]  INFO -- : [abc] Started GET",
                none,
                &[]
            ),
            9
        );
        assert_eq!(
            severity(
                "2026-11-25T10:00:00.000Z pid=7 tid=abc class=Job WARN: retrying",
                none,
                &[]
            ),
            13
        );
        assert_eq!(severity("GET /health 200", none, &[]), 0);
        assert_eq!(
            severity("mylevel=error", none, &[]),
            0,
            "not a key boundary"
        );
    }

    #[test]
    fn trace_ids_come_from_metadata_or_the_line() {
        let id = "0af7651916cd43dd8448eb211c80319c";
        let want = [
            0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80,
            0x31, 0x9c,
        ];
        assert_eq!(trace_id("x", &[pair("trace_id", id)]), Some(want));
        assert_eq!(trace_id(&format!("a trace_id={id} b"), &[]), Some(want));
        assert_eq!(trace_id("trace_id=xyz", &[]), None);
        assert_eq!(trace_id("x", &[pair("traceID", &"0".repeat(32))]), None);
    }

    #[test]
    fn labels_parse_and_what_is_billed_is_line_and_metadata() {
        assert_eq!(
            parse_labels(r#"{app="web", level="info"}"#).unwrap(),
            vec![
                ("app".to_string(), "web".to_string()),
                ("level".to_string(), "info".to_string())
            ]
        );
        for bad in [
            r#"{app=~"w.*"}"#,
            r#"{a!="x"}"#,
            "not labels",
            "{}",
            "",
            r#"up{a="b"}"#,
            r#"{a="b", a="c"}"#,
            r#"{a="b" c="d"}"#,
            r#"{1a="b"}"#,
            r#"{a="b}"#,
        ] {
            assert!(parse_labels(bad).is_err(), "{bad}");
        }
        assert!(parse_labels(&format!("{{a=\"{}\"}}", "v".repeat(3000))).is_err());
        assert_eq!(
            parse_labels(r#"{ a = "x\"y\\z" ,b="" }"#).unwrap(),
            vec![
                ("a".to_string(), "x\"y\\z".to_string()),
                ("b".to_string(), String::new())
            ]
        );
        let e = Entry {
            timestamp: None,
            line: "hello".into(),
            structured_metadata: vec![pair("trace_id", "abc")],
        };
        assert_eq!(entry_bytes(&e), 5 + 8 + 3);
    }
}
