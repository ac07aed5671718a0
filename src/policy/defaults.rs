//! Every default and bound of the policy, in one place: what frugal does where the file is
//! silent, and the range a written value must stay in. The sections read these; none of
//! them spells a number of its own.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;

use super::{AtLimit, Compression, Connections, MaxPerRequest, Retry, SamplingMode, Threshold};

// listen

/// `listen.http`: OTLP/HTTP on its standard port, on every interface.
pub const DEFAULT_LISTEN_HTTP: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4318));

/// `listen.grpc`: OTLP/gRPC on its standard port, on every interface (`off` turns it off).
pub const DEFAULT_LISTEN_GRPC: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4317));

/// `listen.admin`: metrics, the usage API and the status page, next to the OTLP ports.
pub const DEFAULT_LISTEN_ADMIN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4319));

/// `listen.connections.max`: open connections per OTLP port. Room for every pod of a
/// few-hundred-pod cluster sending straight from its SDK; agents (Alloy, the Collector)
/// need a few each. frugal lowers it at start when the open-files limit cannot hold both
/// OTLP ports, the admin port and its own files.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;

/// `listen.connections.admin_max`: open connections on the admin port (probes, scrapes,
/// the CLI), counted apart from the OTLP ports'.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: u32 = 64;

/// The `listen.connections.max` and `admin_max` accepted.
pub const MAX_CONNECTIONS_RANGE: RangeInclusive<u64> = 1..=1_000_000;

/// `listen.connections.header_timeout`: a request's headers arrive within this (a client
/// sends them in one write; only a stalled or hostile one takes seconds).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `listen.connections.request_timeout`: a request's body arrives within this after its
/// headers. The clients' own export timeouts (10 s for the SDKs, 30 s for Alloy and the
/// Collector) have expired by then, so a body still arriving is one nobody waits for.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `listen.connections.idle_timeout`: a connection with no request in flight is closed
/// after this. Longer than the Go HTTP client's 90 s idle timeout (Alloy, the
/// Collector), so those clients close first and never race frugal's close.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The `listen.connections.*_timeout` accepted.
pub const CONNECTION_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// `listen.connections.max_streams`: concurrent HTTP/2 streams per connection (gRPC
/// exporters use one per queue consumer: 10 by default in the Collector).
pub const DEFAULT_MAX_STREAMS: u32 = 32;

/// The `listen.connections.max_streams` accepted.
pub const MAX_STREAMS_RANGE: RangeInclusive<u64> = 1..=1000;

/// `listen.connections` when it is not written.
pub const DEFAULT_CONNECTIONS: Connections = Connections {
    max: DEFAULT_MAX_CONNECTIONS,
    admin_max: DEFAULT_ADMIN_MAX_CONNECTIONS,
    header_timeout: DEFAULT_HEADER_TIMEOUT,
    request_timeout: DEFAULT_REQUEST_TIMEOUT,
    idle_timeout: DEFAULT_IDLE_TIMEOUT,
    max_streams: DEFAULT_MAX_STREAMS,
};

// ingest

/// `ingest.max_request_size`: the largest request body accepted, after decompression.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;

/// The shortest `ingest.auth.bearer_token` or `ingest.auth.basic_auth.password` accepted,
/// in characters: the ingest credential is a machine's secret (`openssl rand -hex 16` makes
/// 32 characters), and anyone who reaches the port may try to guess it.
pub const MIN_INGEST_SECRET_CHARS: usize = 16;

/// `ingest.max_in_flight`: what all requests in flight may hold together (bodies as
/// received and decompressed, and the estimated size of the decoded messages; while
/// upstream answers, only the body sent), past which new requests are answered 503 with
/// `Retry-After`. The largest (16 MiB) protobuf request of real telemetry holds 100–125 MiB
/// (its body, and a decoded form 5 to 7 times its size); a collector's usual batch (8,192
/// spans, 3 MB) about 20 MiB. 256 MiB takes the largest request beside several usual ones,
/// or a dozen usual ones being decoded at once. Under a flood of the largest requests
/// frugal's resident set peaked at 613–745 MB with it (the allocator holds freed large
/// buffers a while: BENCHMARKS.md), so a memory limit of this plus 512 MiB holds; 128 MiB
/// would refuse a largest metrics request outright.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: u64 = 256 * 1024 * 1024;

/// The `ingest.max_in_flight` accepted, as a multiple of `ingest.max_request_size`: a
/// largest body and its decompressed form must fit.
pub const MIN_IN_FLIGHT_PER_REQUEST_SIZE: u64 = 2;

/// The largest `ingest.max_in_flight` accepted (the budget counts KiB in 32 bits).
pub const MAX_IN_FLIGHT_BYTES: u64 = 1 << 40;

/// `ingest.max_per_request`: what one request may hold. Collectors and Alloy batch 8,192
/// items by default (a single large request passes through whole), SDKs 512: these are
/// tens of times more than any real batch and thousands of times less than a 16 MiB body
/// of empty messages holds (8.3 million).
pub const DEFAULT_MAX_PER_REQUEST: MaxPerRequest = MaxPerRequest {
    resources: 50_000,
    scopes: 100_000,
    items: 200_000,
    attributes: 2_000_000,
    depth: 24,
};

/// The deepest `ingest.max_per_request.depth` accepted: a map nested deeper than this
/// passes the protobuf decoder's own limit of 100 nested messages.
pub const MAX_VALUE_DEPTH: u64 = 30;

// upstream.otlp

/// `upstream.otlp.compression`: requests to the upstream are gzipped.
pub const DEFAULT_COMPRESSION: Compression = Compression::Gzip;

/// `upstream.otlp.timeout`: how long one attempt may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `upstream.otlp.timeout` accepted, as problems word it. Below, only zero is refused:
/// a sub-millisecond timeout still loads, as it always has.
pub const TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(60);

/// `upstream.otlp.retry.initial_backoff`: the wait before the first retry.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// The shortest `upstream.otlp.retry.initial_backoff` accepted.
pub const MIN_INITIAL_BACKOFF: Duration = Duration::from_millis(10);

/// `upstream.otlp.retry.max_backoff`: the longest wait between two attempts.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// `upstream.otlp.retry.max_elapsed`: all retries of a request end within this, under the
/// SDKs' 10 s export timeout.
pub const DEFAULT_MAX_ELAPSED: Duration = Duration::from_secs(8);

/// The `upstream.otlp.retry.max_elapsed` accepted: long enough for one backoff, short
/// enough to stay under the clients' own timeouts so they never resend what frugal is
/// still delivering.
pub const MAX_ELAPSED_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(500)..=Duration::from_secs(20);

/// `upstream.otlp.retry` when it is not written.
pub const DEFAULT_RETRY: Retry = Retry {
    initial_backoff: DEFAULT_INITIAL_BACKOFF,
    max_backoff: DEFAULT_MAX_BACKOFF,
    max_elapsed: DEFAULT_MAX_ELAPSED,
};

// period

/// `period.reset_day`: Grafana Cloud's billing month starts on the 1st.
pub const DEFAULT_RESET_DAY: i8 = 1;

/// The `period.reset_day` accepted: a day of the month (clamped to the month's last day).
pub const RESET_DAY_RANGE: RangeInclusive<u64> = 1..=31;

/// `period.timezone`: Grafana Cloud bills the UTC calendar month.
pub const DEFAULT_TIMEZONE: TimeZone = TimeZone::UTC;

/// `period.weekday` of a weekly period.
pub const DEFAULT_WEEKDAY: Weekday = Weekday::Monday;

/// `period.start` of a fixed-length period: periods are counted from the Unix epoch.
pub const DEFAULT_PERIOD_START: Timestamp = Timestamp::UNIX_EPOCH;

/// The shortest fixed-length `period.every` accepted.
pub const MIN_PERIOD: Duration = Duration::from_secs(1);

// store

/// `store.data_dir`, relative to the working directory (`--data-dir` overrides).
pub const DEFAULT_DATA_DIR: &str = "frugal-data";

/// `store.flush_interval`: at most this much metering is lost on a crash.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The `store.flush_interval` accepted.
pub const FLUSH_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(60);

/// The counters must be flushed at least this many times in the shortest period, or a
/// crash loses a noticeable part of it.
pub const MIN_FLUSHES_PER_PERIOD: u32 = 10;

/// `store.cache_size`: sled's page cache (its own default is 1 GiB; a pod wants far less).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

// budgets

/// `budgets.<signal>.target`: the fraction of the budget pacing aims to end the period at.
pub const DEFAULT_TARGET: f64 = 0.95;

/// `budgets.<signal>.reserved`: by default nothing else sends to the same stack.
pub const DEFAULT_RESERVED: u64 = 0;

/// `budgets.<signal>.at_limit`: past the target, keep sending priority items.
pub const DEFAULT_AT_LIMIT: AtLimit = AtLimit::KeepPriority;

/// `logs.stream_limit.max_streams`: streams tracked apart by the per-stream limit.
pub const DEFAULT_MAX_LOKI_STREAMS: usize = 10_000;

// metrics: active series

/// The shortest `metrics.billing_window` / `admission_window`: the tracker counts whole
/// minutes.
pub const MIN_SERIES_WINDOW: Duration = Duration::from_secs(60);

/// The longest `metrics.billing_window` / `admission_window`: the tracker keeps a slot
/// per minute of the admission window.
pub const MAX_SERIES_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// New `drop_first` series are admitted only while the series in memory are below this
/// share of the normal cap (`target × active_series`): they are refused first.
pub const BULK_SERIES_SHARE: f64 = 0.9;

/// How many metric names the cost report (`/api/v1/series`) and the refused counts keep;
/// names past it are counted under `other`.
pub const MAX_METRIC_NAMES: usize = 10_000;

/// The billing window: Grafana Cloud counts a series active while it has had a sample in
/// the last 20 minutes.
pub const DEFAULT_SERIES_BILLING_WINDOW: Duration = Duration::from_secs(20 * 60);

/// The admission window: Mimir holds a series in its head, and counts it against the
/// series limit, until head compaction, up to about three hours after its last sample.
pub const DEFAULT_SERIES_ADMISSION_WINDOW: Duration = Duration::from_secs(3 * 60 * 60);

/// How far a series' last-seen time may run ahead of the stored one before the tracker
/// writes it again: one write per series per 5 minutes at most (about 3,300 writes a
/// second for 1,000,000 steady series). After a restart a series counts as seen up to
/// this much later than it was (never earlier).
pub const DEFAULT_SERIES_REFRESH: Duration = Duration::from_secs(5 * 60);

// pacing

/// `pacing.enabled`: spread the budget over the period.
pub const DEFAULT_PACING_ENABLED: bool = true;

/// `pacing.recompute_every` for periods of a few hours and more; shorter periods
/// recompute every [`DEFAULT_RECOMPUTES_PER_PERIOD`]th of their length, but never more
/// often than [`MIN_RECOMPUTE_EVERY`].
pub const DEFAULT_RECOMPUTE_EVERY: Duration = Duration::from_secs(10);

/// The shortest `pacing.recompute_every` accepted, and the shortest default.
pub const MIN_RECOMPUTE_EVERY: Duration = Duration::from_millis(100);

/// How many recomputes fit in the shortest period when `pacing.recompute_every` is not
/// written (within [`MIN_RECOMPUTE_EVERY`] and [`DEFAULT_RECOMPUTE_EVERY`]).
pub const DEFAULT_RECOMPUTES_PER_PERIOD: u32 = 1000;

/// A written `pacing.recompute_every` must fit at least this many times in the shortest
/// period, or pacing cannot follow the traffic.
pub const MIN_RECOMPUTES_PER_PERIOD: u32 = 100;

// traces

/// `traces.sampling.mode`: OpenTelemetry consistent probability sampling.
pub const DEFAULT_SAMPLING_MODE: SamplingMode = SamplingMode::Proportional;

/// `traces.sampling.precision`: hex digits of `th` on kept spans.
pub const DEFAULT_PRECISION: u8 = 4;

/// The `traces.sampling.precision` accepted: `th` has at most 14 hex digits.
pub const PRECISION_RANGE: RangeInclusive<u64> = 1..=14;

/// `traces.sampling.min_probability`: pacing may go as low as it needs.
pub const DEFAULT_MIN_PROBABILITY: f64 = 0.0;

/// `traces.sampling.fail_closed`: in hash_seed mode, drop spans that already carry an
/// earlier sampling decision.
pub const DEFAULT_FAIL_CLOSED: bool = true;

// logs

/// `logs.follow_traces`: a kept trace keeps its logs; a dropped one drops them.
pub const DEFAULT_FOLLOW_TRACES: bool = true;

// traces.tail

/// `traces.tail.decision_wait`: how long a trace is held after its first span before it
/// is decided (Grafana's Adaptive Traces waits about as long; the collector 30 s).
pub const DEFAULT_TAIL_DECISION_WAIT: Duration = Duration::from_secs(10);

/// The `traces.tail.decision_wait` accepted.
pub const TAIL_DECISION_WAIT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(600);

/// `traces.tail.root_grace`: a trace is decided this long after its root span (the one
/// without a parent) arrived, if that is sooner than `decision_wait`.
pub const DEFAULT_TAIL_ROOT_GRACE: Duration = Duration::from_secs(1);

/// `traces.tail.max_buffer`: bytes all traces waiting for a decision may hold together.
pub const DEFAULT_TAIL_MAX_BUFFER: u64 = 256_000_000;

/// The `traces.tail.max_buffer` accepted.
pub const TAIL_MAX_BUFFER_RANGE: RangeInclusive<u64> = 1_000_000..=1_000_000_000_000;

/// `traces.tail.max_trace_size`: a trace that grows past it is decided at once, so one
/// huge trace cannot starve the others.
pub const DEFAULT_TAIL_MAX_TRACE_SIZE: u64 = 8_000_000;

/// The smallest `traces.tail.max_trace_size` accepted (the largest is `max_buffer`).
pub const TAIL_MIN_TRACE_SIZE: u64 = 1_000;

/// `traces.tail.decision_cache`: traces whose decision is remembered, so late spans follow
/// it.
pub const DEFAULT_TAIL_DECISION_CACHE: usize = 500_000;

/// The largest `traces.tail.decision_cache` accepted.
pub const TAIL_MAX_DECISION_CACHE: u64 = 50_000_000;

/// `traces.tail.decision_ttl`: how long a decision is remembered; longer than
/// `decision_wait`.
pub const DEFAULT_TAIL_DECISION_TTL: Duration = Duration::from_secs(600);

/// The longest `traces.tail.decision_ttl` accepted.
pub const TAIL_MAX_DECISION_TTL: Duration = Duration::from_secs(86_400);

/// Compiled size limit of one `string_attribute` regular expression (the regex crate's
/// own default is ten times larger): a policy cannot make frugal build a huge automaton.
pub const TAIL_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// `rate_limiting.burst_capacity` and `bytes_limiting.burst_capacity`: as in the
/// collector, twice the rate per second.
pub const TAIL_BURST_PER_RATE: u64 = 2;

// Every default obeys its own bounds: a change that breaks this does not compile.
const _: () = {
    assert!(within(DEFAULT_FLUSH_INTERVAL, &FLUSH_INTERVAL_RANGE));
    assert!(within(DEFAULT_MAX_ELAPSED, &MAX_ELAPSED_RANGE));
    assert!(within(DEFAULT_TIMEOUT, &TIMEOUT_RANGE));
    assert!(DEFAULT_INITIAL_BACKOFF.as_nanos() >= MIN_INITIAL_BACKOFF.as_nanos());
    assert!(DEFAULT_MAX_BACKOFF.as_nanos() >= DEFAULT_INITIAL_BACKOFF.as_nanos());
    assert!(DEFAULT_RECOMPUTE_EVERY.as_nanos() >= MIN_RECOMPUTE_EVERY.as_nanos());
    assert!(DEFAULT_RECOMPUTES_PER_PERIOD >= MIN_RECOMPUTES_PER_PERIOD);
    assert!(
        DEFAULT_MAX_IN_FLIGHT_BYTES >= MIN_IN_FLIGHT_PER_REQUEST_SIZE * DEFAULT_MAX_REQUEST_BYTES
    );
    assert!(DEFAULT_MAX_IN_FLIGHT_BYTES <= MAX_IN_FLIGHT_BYTES);
    assert!(DEFAULT_MAX_PER_REQUEST.depth as u64 <= MAX_VALUE_DEPTH);
    assert!(
        *PRECISION_RANGE.start() <= DEFAULT_PRECISION as u64
            && DEFAULT_PRECISION as u64 <= *PRECISION_RANGE.end()
    );
    assert!(
        *RESET_DAY_RANGE.start() <= DEFAULT_RESET_DAY as u64
            && DEFAULT_RESET_DAY as u64 <= *RESET_DAY_RANGE.end()
    );
    assert!(within(
        DEFAULT_TAIL_DECISION_WAIT,
        &TAIL_DECISION_WAIT_RANGE
    ));
    assert!(DEFAULT_TAIL_ROOT_GRACE.as_nanos() <= DEFAULT_TAIL_DECISION_WAIT.as_nanos());
    assert!(DEFAULT_TAIL_DECISION_TTL.as_nanos() > DEFAULT_TAIL_DECISION_WAIT.as_nanos());
    assert!(DEFAULT_TAIL_DECISION_TTL.as_nanos() <= TAIL_MAX_DECISION_TTL.as_nanos());
    assert!(
        *TAIL_MAX_BUFFER_RANGE.start() <= DEFAULT_TAIL_MAX_BUFFER
            && DEFAULT_TAIL_MAX_BUFFER <= *TAIL_MAX_BUFFER_RANGE.end()
    );
    assert!(
        TAIL_MIN_TRACE_SIZE <= DEFAULT_TAIL_MAX_TRACE_SIZE
            && DEFAULT_TAIL_MAX_TRACE_SIZE <= DEFAULT_TAIL_MAX_BUFFER
    );
    assert!(DEFAULT_TAIL_DECISION_CACHE as u64 <= TAIL_MAX_DECISION_CACHE);
};

const fn within(d: Duration, range: &RangeInclusive<Duration>) -> bool {
    range.start().as_nanos() <= d.as_nanos() && d.as_nanos() <= range.end().as_nanos()
}

// alerts

/// `alerts.thresholds`: half, 80% and 95% of the limit, as the Prometheus rules in
/// `dashboards/frugal-alerts.yaml` have them.
pub const DEFAULT_ALERT_THRESHOLDS: [Threshold; 3] =
    [Threshold(5_000), Threshold(8_000), Threshold(9_500)];

/// `alerts.projected_overage`: notify when the projection reaches the limit.
pub const DEFAULT_PROJECTED_OVERAGE: bool = true;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::PeriodSpec;
    use crate::policy::{Overrides, UpstreamAuth, load_str};

    #[test]
    fn a_minimal_policy_gets_the_defaults() {
        let text = "upstream: {otlp: {endpoint: 'http://127.0.0.1:4318'}}\n";
        let p = load_str(text, "t", &Overrides::default(), &|_| None).unwrap();

        assert_eq!(p.listen.http, DEFAULT_LISTEN_HTTP);
        assert_eq!(p.listen.grpc, Some(DEFAULT_LISTEN_GRPC));
        assert_eq!(p.listen.admin, DEFAULT_LISTEN_ADMIN);

        assert_eq!(p.ingest.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(p.ingest.max_in_flight_bytes, DEFAULT_MAX_IN_FLIGHT_BYTES);
        assert_eq!(p.ingest.max_per_request, DEFAULT_MAX_PER_REQUEST);
        assert!(p.ingest.auth.is_none());

        let otlp = &p.upstream.otlp;
        assert!(matches!(otlp.auth, UpstreamAuth::None));
        assert!(otlp.headers.is_empty());
        assert_eq!(otlp.compression, DEFAULT_COMPRESSION);
        assert_eq!(otlp.timeout, DEFAULT_TIMEOUT);
        assert_eq!(otlp.retry.initial_backoff, DEFAULT_INITIAL_BACKOFF);
        assert_eq!(otlp.retry.max_backoff, DEFAULT_MAX_BACKOFF);
        assert_eq!(otlp.retry.max_elapsed, DEFAULT_MAX_ELAPSED);

        assert!(matches!(
            p.period,
            PeriodSpec::Monthly { reset_day: DEFAULT_RESET_DAY, ref tz } if *tz == DEFAULT_TIMEZONE
        ));

        assert_eq!(p.store.data_dir, std::path::Path::new(DEFAULT_DATA_DIR));
        assert_eq!(p.store.flush_interval, DEFAULT_FLUSH_INTERVAL);
        assert_eq!(p.store.cache_bytes, DEFAULT_CACHE_BYTES);

        assert!(p.budgets.traces.is_none());
        assert!(p.budgets.logs.is_none());
        assert!(p.budgets.metrics.is_none());

        // A month is long enough for the longest default.
        assert_eq!(p.pacing.enabled, DEFAULT_PACING_ENABLED);
        assert_eq!(p.pacing.recompute_every, DEFAULT_RECOMPUTE_EVERY);

        let s = &p.traces.sampling;
        assert_eq!(s.mode, DEFAULT_SAMPLING_MODE);
        assert_eq!(s.precision, DEFAULT_PRECISION);
        assert_eq!(s.min_probability, DEFAULT_MIN_PROBABILITY);
        assert_eq!(s.fail_closed, DEFAULT_FAIL_CLOSED);
        assert!(s.multiplier_attribute.is_none());
        assert!(p.traces.rules.is_empty());

        assert_eq!(p.logs.follow_traces, DEFAULT_FOLLOW_TRACES);
        assert!(p.logs.hash_attribute.is_none());
        assert!(p.logs.rules.is_empty());

        assert!(!p.shadow);
    }
}
