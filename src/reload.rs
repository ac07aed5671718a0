//! Policy reload without a restart: which settings a running frugal can take from a new
//! policy and which it holds from its start ([`effective`]), and the watch on the policy
//! file ([`Watch`]: a changed file, or SIGHUP, means load it again).
//!
//! A reload loads the file exactly as `serve` did at start ([`PolicySource::load`]: the
//! same `${ENV}` substitution and command-line overrides), validates it in full, and only
//! then swaps it in ([`crate::core::Core::apply_policy`]); the period's counters are never
//! touched. The task that polls the file and listens for SIGHUP lives in `app.rs`: this
//! module spawns nothing, and apart from [`PolicySource::read`] it does no I/O.

use std::path::PathBuf;

use crate::core::Core;
use crate::policy::{self, Overrides, Policy, PolicyError, Problem, UpstreamAuth};
use crate::units::format_size;

/// How often the policy file is looked at. A ConfigMap update reaches the pod's files
/// within the kubelet's sync period (about a minute); a second more does not matter, and
/// reading a small file once a second costs nothing.
pub const POLL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Where the running policy came from and how it was loaded: a reload loads the same way.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// The policy file as given on the command line (a ConfigMap's symlink is followed
    /// afresh at every read, so its `..data` swap is seen).
    pub path: PathBuf,
    /// The command line's overrides, applied again to every new version.
    pub overrides: Overrides,
}

impl PolicySource {
    /// The file's bytes now.
    pub fn read(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.path).map_err(|e| format!("cannot read the file: {e}"))
    }

    /// The error of a file that cannot be read, as the loader words it.
    pub fn unreadable(&self, message: String) -> PolicyError {
        PolicyError {
            source_name: self.path.display().to_string(),
            problems: vec![Problem {
                path: String::new(),
                message,
            }],
        }
    }

    /// Validates `text` in full, as `serve` did at start: the command line's overrides,
    /// then `${ENV}` from the process's environment.
    pub fn load(&self, text: &[u8]) -> Result<Policy, PolicyError> {
        let name = self.path.display().to_string();
        let text = std::str::from_utf8(text).map_err(|e| PolicyError {
            source_name: name.clone(),
            problems: vec![Problem {
                path: String::new(),
                message: format!("cannot read the file: not UTF-8 ({e})"),
            }],
        })?;
        policy::load_str(text, &name, &self.overrides, &|k| std::env::var(k).ok())
    }
}

/// Loads `text` as the new policy and puts it in force, or refuses it and keeps the
/// running one; logs either way (every problem with its path) and counts it in
/// `frugal_policy_reload_total`. Returns whether it is in force.
pub fn reload(core: &Core, source: &PolicySource, text: &[u8]) -> bool {
    let result = source.load(text).and_then(|p| {
        core.apply_policy(p).map_err(|problems| PolicyError {
            source_name: source.path.display().to_string(),
            problems,
        })
    });
    match result {
        Ok(held) => {
            crate::stats::inc(&core.stats.policy_reloads, &["ok"], 1);
            let p = core.policy();
            tracing::info!(policy = %p.source, "policy reloaded; in force from this recompute");
            if !held.is_empty() {
                tracing::warn!(
                    policy = %p.source,
                    settings = %held.join(", "),
                    "the new policy changes settings a running frugal holds from its start; they keep their old values until frugal restarts"
                );
            }
            true
        }
        Err(e) => {
            refused(core, &e);
            false
        }
    }
}

/// Logs a refused policy, every problem with its path, and counts it.
pub fn refused(core: &Core, e: &PolicyError) {
    crate::stats::inc(&core.stats.policy_reloads, &["error"], 1);
    for p in &e.problems {
        tracing::error!(policy = %e.source_name, path = %p.path, problem = %p.message, "policy problem");
    }
    tracing::error!(
        policy = %e.source_name,
        problems = e.problems.len(),
        "the new policy is refused; the running one stays in force"
    );
}

/// What to do after one look at the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing changed (and no SIGHUP): nothing to do.
    Nothing,
    /// Load this text (the file changed, or SIGHUP asked).
    Load(Vec<u8>),
    /// The file cannot be read (said once, until it changes or SIGHUP asks again).
    Unreadable(String),
}

/// What the watcher last saw of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Text(Vec<u8>),
    Unreadable(String),
}

/// The watcher's memory: the file's contents when last looked at, so a file is loaded
/// (or a refusal reported) once per change, not once per look.
#[derive(Debug)]
pub struct Watch {
    last: Seen,
}

impl Watch {
    /// A watch on a file that held `loaded` when the running policy was loaded from it.
    pub fn new(loaded: Vec<u8>) -> Self {
        Watch {
            last: Seen::Text(loaded),
        }
    }

    /// One look: `read` is the file now, `forced` says SIGHUP asked for a reload whatever
    /// the file holds.
    pub fn look(&mut self, read: Result<Vec<u8>, String>, forced: bool) -> Step {
        let now = match read {
            Ok(t) => Seen::Text(t),
            Err(e) => Seen::Unreadable(e),
        };
        let changed = now != self.last;
        self.last = now.clone();
        if !changed && !forced {
            return Step::Nothing;
        }
        match now {
            Seen::Text(t) => Step::Load(t),
            Seen::Unreadable(e) => Step::Unreadable(e),
        }
    }
}

/// The policy a reload puts in force: `new`, except for what a running frugal holds from
/// its start, which keeps the values of `old` (the running policy). Returns the names of
/// the settings `new` changes that way (they take effect at the next restart), or every
/// problem when the settings taken and those kept do not fit together.
///
/// Held from the start, because something is built from them once:
/// - `listen.*`: the listeners are bound, their connection caps fitted to the open-files
///   limit;
/// - `store.*`: the store is open at the data dir with its cache; the flusher and the
///   series keeper run at `flush_interval`;
/// - `period`: the ledger counts in the period it opened (a new layout would change what
///   the counters mean);
/// - `upstream.*`: the forwarder's clients are built with their endpoints and credentials;
/// - `ingest.max_in_flight`: the in-flight budget is sized once;
/// - `pacing.recompute_every`: the pacer's task and its forecast windows;
/// - `metrics.billing_window`, `metrics.admission_window`, `metrics.min_sample_interval`:
///   the series tracker's windows and the thinner's state;
/// - `alerts`: the notifier and its webhooks.
///
/// Everything else is read from the policy in force at each request or recompute
/// (budgets, targets, `at_limit`, `pacing.enabled`, `shadow`, the rules and sampling of
/// traces, logs and metrics, `ingest`'s sizes and credential), or rebuilt by the core on
/// a change (`budgets.*.max_rate`'s rate gates, `logs.stream_limit`'s stream gates).
pub fn effective(old: &Policy, new: Policy) -> Result<(Policy, Vec<&'static str>), Vec<Problem>> {
    let held = restart_only(old, &new);
    let mut p = new;
    p.listen = old.listen.clone();
    p.store = old.store.clone();
    p.period = old.period.clone();
    p.upstream = old.upstream.clone();
    p.ingest.max_in_flight_bytes = old.ingest.max_in_flight_bytes;
    p.pacing.recompute_every = old.pacing.recompute_every;
    p.metrics.billing_window = old.metrics.billing_window;
    p.metrics.admission_window = old.metrics.admission_window;
    p.metrics.min_sample_interval = old.metrics.min_sample_interval;
    p.alerts = old.alerts.clone();
    p.traces.tail = old.traces.tail.clone();
    let problems = conflicts(&p);
    if problems.is_empty() {
        Ok((p, held))
    } else {
        Err(problems)
    }
}

/// The settings `new` changes that a running frugal holds from its start (see
/// [`effective`]), by their YAML path.
pub fn restart_only(old: &Policy, new: &Policy) -> Vec<&'static str> {
    let (o, n) = (old, new);
    let (ol, nl) = (&o.listen, &n.listen);
    let (ou, nu) = (&o.upstream, &n.upstream);
    let (om, nm) = (&o.metrics, &n.metrics);
    [
        (ol.http != nl.http, "listen.http"),
        (ol.grpc != nl.grpc, "listen.grpc"),
        (ol.admin != nl.admin, "listen.admin"),
        (ol.connections != nl.connections, "listen.connections"),
        (o.store.data_dir != n.store.data_dir, "store.data_dir"),
        (
            o.store.flush_interval != n.store.flush_interval,
            "store.flush_interval",
        ),
        (
            o.store.cache_bytes != n.store.cache_bytes,
            "store.cache_size",
        ),
        (o.period != n.period, "period"),
        // The tail sampler's buffer, spool and policies are built at start (its regexes
        // have no equality: compared as written).
        (
            format!("{:?}", o.traces.tail) != format!("{:?}", n.traces.tail),
            "traces.tail",
        ),
        (ou.otlp != nu.otlp, "upstream.otlp"),
        (ou.remote_write != nu.remote_write, "upstream.remote_write"),
        (ou.loki != nu.loki, "upstream.loki"),
        (
            o.ingest.max_in_flight_bytes != n.ingest.max_in_flight_bytes,
            "ingest.max_in_flight",
        ),
        (
            o.pacing.recompute_every != n.pacing.recompute_every,
            "pacing.recompute_every",
        ),
        (
            om.billing_window != nm.billing_window,
            "metrics.billing_window",
        ),
        (
            om.admission_window != nm.admission_window,
            "metrics.admission_window",
        ),
        (
            om.min_sample_interval != nm.min_sample_interval,
            "metrics.min_sample_interval",
        ),
        (o.alerts != n.alerts, "alerts"),
    ]
    .into_iter()
    .filter_map(|(changed, name)| changed.then_some(name))
    .collect()
}

/// What the loader checks across sections, again for the mix of settings taken and kept.
fn conflicts(p: &Policy) -> Vec<Problem> {
    let mut problems = Vec::new();
    let least = p
        .ingest
        .max_request_bytes
        .saturating_mul(policy::defaults::MIN_IN_FLIGHT_PER_REQUEST_SIZE);
    if p.ingest.max_in_flight_bytes < least {
        problems.push(Problem {
            path: "ingest.max_request_size".into(),
            message: format!(
                "needs ingest.max_in_flight of at least {} (twice max_request_size), but the running frugal holds {} until it restarts",
                format_size(least),
                format_size(p.ingest.max_in_flight_bytes)
            ),
        });
    }
    if p.ingest.auth.is_some() && matches!(p.upstream.otlp.auth, UpstreamAuth::PassThrough) {
        problems.push(Problem {
            path: "ingest.auth".into(),
            message: "cannot be combined with upstream.otlp.pass_through_auth, which the running frugal holds until it restarts".into(),
        });
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::policy;

    fn text(s: &str) -> Result<Vec<u8>, String> {
        Ok(s.as_bytes().to_vec())
    }

    #[test]
    fn a_file_is_loaded_once_per_change_and_again_on_sighup() {
        let mut w = Watch::new(b"a".to_vec());
        // (what the file holds, SIGHUP?) -> what to do
        let script: [(Result<Vec<u8>, String>, bool, Step); 9] = [
            (text("a"), false, Step::Nothing),
            (text("a"), true, Step::Load(b"a".to_vec())),
            (text("b"), false, Step::Load(b"b".to_vec())),
            (text("b"), false, Step::Nothing),
            (Err("gone".into()), false, Step::Unreadable("gone".into())),
            (Err("gone".into()), false, Step::Nothing),
            (Err("gone".into()), true, Step::Unreadable("gone".into())),
            // Back to what runs: loaded again (a no-op reload, reported ok).
            (text("b"), false, Step::Load(b"b".to_vec())),
            (text("c"), true, Step::Load(b"c".to_vec())),
        ];
        for (i, (read, hup, want)) in script.into_iter().enumerate() {
            assert_eq!(w.look(read, hup), want, "step {i}");
        }
    }

    #[test]
    fn live_settings_are_taken_and_restart_only_ones_kept_and_named() {
        let old = policy(
            "budgets: {traces: {limit: 1GB, max_rate: 1MB/s}}\nstore: {data_dir: /data}\nlisten: {http: 127.0.0.1:4318}",
        );
        let new = policy(
            "budgets: {traces: {limit: 2GB, target: 90%}}\nstore: {data_dir: /elsewhere}\nlisten: {http: 127.0.0.1:9999}\ntraces: {priority: [{name: errors, status_code: ERROR}]}\npacing: {recompute_every: 2s}",
        );
        let (p, held) = effective(&old, new).unwrap();
        assert_eq!(
            held,
            ["listen.http", "store.data_dir", "pacing.recompute_every"]
        );
        let b = p.budgets.traces.as_ref().unwrap();
        assert_eq!((b.limit, b.target, b.max_rate), (2_000_000_000, 0.9, None));
        assert_eq!(p.traces.rules.priority.len(), 1);
        assert_eq!(p.store.data_dir, old.store.data_dir);
        assert_eq!(p.listen.http, old.listen.http);
        assert_eq!(p.pacing.recompute_every, old.pacing.recompute_every);
    }

    #[test]
    fn the_same_policy_holds_nothing_back() {
        let p = policy("budgets: {traces: {limit: 1GB}}\nalerts: {thresholds: [50%]}");
        assert!(restart_only(&p, &p.clone()).is_empty());
    }

    #[test]
    fn each_restart_only_setting_is_named() {
        let old = policy("");
        let check = |yaml: &str, want: &[&str]| {
            assert_eq!(restart_only(&old, &policy(yaml)), want, "{yaml}");
        };
        check("listen: {grpc: 'off'}", &["listen.grpc"]);
        check("listen: {admin: 127.0.0.1:1}", &["listen.admin"]);
        check("listen: {connections: {max: 10}}", &["listen.connections"]);
        check("store: {flush_interval: 2s}", &["store.flush_interval"]);
        check("store: {cache_size: 1MiB}", &["store.cache_size"]);
        check("period: {every: day}", &["period"]);
        check(
            "upstream: {otlp: {endpoint: http://127.0.0.1:1}}",
            &["upstream.otlp"],
        );
        check("ingest: {max_in_flight: 512MiB}", &["ingest.max_in_flight"]);
        check(
            "metrics: {min_sample_interval: 60s}",
            &["metrics.min_sample_interval"],
        );
        check(
            "metrics: {billing_window: 10m}",
            &["metrics.billing_window"],
        );
        check("alerts: {}", &["alerts"]);
        // Live settings are not named.
        check(
            "budgets: {logs: {limit: 1GB, max_rate: 1MB/s}}\nshadow: true\ningest: {max_request_size: 1MiB}\nlogs: {stream_limit: {max_rate: 1kB/s}}",
            &[],
        );
    }

    #[test]
    fn a_new_request_size_the_kept_in_flight_budget_cannot_hold_is_refused() {
        let old = policy("ingest: {max_request_size: 16MiB, max_in_flight: 64MiB}");
        let new = policy("ingest: {max_request_size: 64MiB, max_in_flight: 256MiB}");
        let problems = effective(&old, new).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "ingest.max_request_size");
        // 2 × 64 MiB needed, 64 MiB held (sizes decimal, as the loader writes them).
        assert!(
            problems[0].message.contains("134.22MB")
                && problems[0]
                    .message
                    .contains("holds 67.11MB until it restarts"),
            "{:?}",
            problems[0]
        );
    }
}
