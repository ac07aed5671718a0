//! frugal's own Prometheus metrics: the request-path counters and histograms, registered
//! in a registry that is passed down (never global). The period and pacing gauges are
//! filled from the ledger and the pacer when `/metrics` is scraped (see `admin`).
//!
//! Names follow `frugal_<name>_<unit>_total`; every label has a small, fixed set of values.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// frugal's own metrics, all in one registry that `/metrics` renders.
pub struct Stats {
    /// The registry every metric here is registered in.
    pub registry: Registry,
    /// Requests answered, by signal, transport (http, grpc) and status code.
    pub requests: IntCounterVec,
    /// Time from receiving a client request to answering it, in seconds, by signal and
    /// transport (`frugal_request_duration_seconds`).
    pub request_duration: HistogramVec,
    /// Items received before sampling, by signal (`frugal_received_items_total`).
    pub received_items: IntCounterVec,
    /// Billable bytes received before sampling, by signal (`frugal_received_bytes_total`).
    pub received_bytes: IntCounterVec,
    /// Items frugal dropped itself, by signal and reason (`frugal_dropped_items_total`).
    pub dropped_items: IntCounterVec,
    /// Items of the priority class frugal dropped (sampled away at the limit, or past
    /// it), by signal (`frugal_priority_dropped_items_total`).
    pub priority_dropped_items: IntCounterVec,
    /// Billable bytes frugal dropped, by signal and reason (`frugal_dropped_bytes_total`).
    pub dropped_bytes: IntCounterVec,
    /// Items sent upstream, each attempt that may have arrived counted, by signal
    /// (`frugal_sent_items_total`).
    pub sent_items: IntCounterVec,
    /// Billable bytes sent upstream, every attempt counted, by signal
    /// (`frugal_sent_bytes_total`).
    pub sent_bytes: IntCounterVec,
    /// Items upstream acknowledged, by signal (`frugal_acknowledged_items_total`).
    pub acked_items: IntCounterVec,
    /// Items upstream refused, by signal and reason (`frugal_rejected_items_total`).
    pub rejected_items: IntCounterVec,
    /// Upstream attempts by destination and outcome (`frugal_upstream_attempts_total`).
    pub upstream_attempts: IntCounterVec,
    /// Latency of each attempt to send upstream, in seconds, by destination
    /// (`frugal_upstream_request_duration_seconds`).
    pub upstream_duration: HistogramVec,
    /// Client requests that got a 503 because upstream could not take the data in time.
    pub upstream_unavailable: IntCounterVec,
    /// Client requests answered 503 because the requests in flight held all of
    /// `ingest.max_in_flight`, by signal and transport (`frugal_requests_shed_total`).
    pub requests_shed: IntCounterVec,
    /// Loki lines over Grafana Cloud's 256 KB, truncated to it
    /// (`frugal_loki_truncated_lines_total`).
    pub loki_truncated_lines: IntCounterVec,
    /// Bytes the requests in flight hold of `ingest.max_in_flight` (bodies, decompressed
    /// bodies, decoded estimates) (`frugal_ingest_in_flight_bytes`).
    pub in_flight_bytes: IntGauge,
    /// `ingest.max_in_flight` (`frugal_ingest_in_flight_limit_bytes`).
    pub in_flight_limit_bytes: IntGauge,
    /// Flushes of the usage counters to disk, by result: `ok`, `error`
    /// (`frugal_store_flushes_total`).
    pub store_flushes: IntCounterVec,
    /// Policy reloads (a changed file or SIGHUP), by result: `ok`, `error`
    /// (`frugal_policy_reload_total`).
    pub policy_reloads: IntCounterVec,
    /// When the usage counters were last flushed to disk, in Unix seconds
    /// (`frugal_store_last_flush_timestamp_seconds`).
    pub store_last_flush: Gauge,
    /// Connections open, by port: http, grpc, admin (`frugal_connections_open`).
    pub connections_open: IntGaugeVec,
    /// Connections closed at once because their port was at its cap, by port
    /// (`frugal_connections_refused_total`).
    pub connections_refused: IntCounterVec,
    /// Failed `accept`s (out of file descriptors, mostly), by port
    /// (`frugal_accept_errors_total`).
    pub accept_errors: IntCounterVec,
    /// Notification POSTs to the policy's webhooks, by format (generic, slack,
    /// alertmanager) and outcome: `delivered`, `retried` (an attempt failed and another
    /// follows), `failed` (every attempt failed; tried again later)
    /// (`frugal_notifications_total`).
    pub notifications: IntCounterVec,
    /// 1 when frugal accepts data, else 0 (`frugal_ready`).
    pub ready: IntGauge,
    /// Always 1; the version is a label (`frugal_build_info`).
    pub build_info: IntGauge,
    /// Gauges refreshed at scrape time from the ledger and the pacer.
    pub period: PeriodGauges,
}

/// The period and pacing gauges, set from the ledger and the pacer each time `/metrics` is
/// scraped.
pub struct PeriodGauges {
    /// Start of the current budget period, in Unix seconds
    /// (`frugal_period_start_timestamp_seconds`).
    pub start: Gauge,
    /// End of the current budget period, in Unix seconds
    /// (`frugal_period_end_timestamp_seconds`).
    pub end: Gauge,
    /// Billable bytes used this period (sent, less definite rejections, plus adjustments), by
    /// signal (`frugal_period_usage_bytes`).
    pub usage_bytes: GaugeVec,
    /// Metric data points sent this period (`frugal_period_usage_data_points`).
    pub usage_data_points: GaugeVec,
    /// The period's limit in bytes, less what is reserved for other senders, by signal
    /// (`frugal_budget_limit_bytes`).
    pub limit_bytes: GaugeVec,
    /// Where pacing aims to end the period, in bytes, by signal (`frugal_budget_target_bytes`).
    pub target_bytes: GaugeVec,
    /// Usage as a fraction of the limit, by signal (`frugal_budget_usage_ratio`).
    pub usage_ratio: GaugeVec,
    /// Usage expected at the end of the period at the current keep probabilities, in bytes,
    /// by signal (`frugal_budget_projected_usage_bytes`).
    pub projected_usage_bytes: GaugeVec,
    /// Projected end-of-period usage as a fraction of the limit, by signal
    /// (`frugal_budget_projected_usage_ratio`).
    pub projected_usage_ratio: GaugeVec,
    /// Bytes received this period before sampling, by signal and priority class
    /// (`frugal_period_offered_bytes`).
    pub offered_bytes: GaugeVec,
    /// Bytes frugal dropped this period, by signal and reason (`frugal_period_dropped_bytes`).
    pub dropped_bytes: GaugeVec,
    /// Current keep probability, by signal and priority class (`frugal_keep_probability`).
    pub keep_probability: GaugeVec,
    /// 1 for the current pacing state (unconstrained, pacing, priority_only, stopped) and 0
    /// for the others, by signal (`frugal_pacing_state`).
    pub pacing_state: GaugeVec,
    /// Forecast incoming (pre-sampling) rate in bytes/s, by signal, class and window (short,
    /// long) (`frugal_demand_bytes_per_second`).
    pub demand_rate: GaugeVec,
    /// Rate of bytes sent upstream over the short window, in bytes/s, by signal
    /// (`frugal_forwarded_bytes_per_second`).
    pub forwarded_rate: GaugeVec,
    /// The metrics budget's active-series limit (`frugal_budget_active_series_limit`).
    pub active_series_limit: Gauge,
    /// Active series of the metrics frugal forwards, as Grafana bills them (a sample in
    /// the billing window, 20 minutes) (`frugal_active_series`).
    pub active_series: Gauge,
    /// Series in the admission window, what the series limit counts
    /// (`frugal_series_in_memory`).
    pub series_in_memory: Gauge,
    /// New series refused under the series limit, counted at each refusal
    /// (`frugal_series_refused_total`; brought up to the tracker's count at each scrape).
    pub series_refused: IntCounterVec,
    /// Data points sent per minute over about the last minute (`frugal_data_points_per_minute`).
    pub dpm: Gauge,
    /// How much of the period has passed, 0 to 1: the pace line is the limit (or target)
    /// times this (`frugal_period_elapsed_ratio`).
    pub elapsed_ratio: Gauge,
    /// When the budget runs out at the current forwarding rate, in Unix seconds; 0 when it
    /// does not run out before the period ends; the current time once it has, by signal
    /// (`frugal_budget_exhaustion_timestamp_seconds`).
    pub exhaustion: GaugeVec,
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<Gauge> {
    let g = Gauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Stats {
    /// Creates every metric in a new registry, each fixed label set at 0; fails only if
    /// Prometheus refuses a name or a registration.
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        let s = ["signal"];
        let latency = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "frugal_request_duration_seconds",
                "Time from receiving a client request to answering it.",
            )
            .buckets(latency.clone()),
            &["signal", "transport"],
        )?;
        r.register(Box::new(request_duration.clone()))?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "frugal_upstream_request_duration_seconds",
                "Latency of each attempt to send to upstream, by destination.",
            )
            .buckets(latency),
            &["destination"],
        )?;
        r.register(Box::new(upstream_duration.clone()))?;
        let ready = IntGauge::new("frugal_ready", "1 when frugal accepts data.")?;
        r.register(Box::new(ready.clone()))?;
        let in_flight_bytes = IntGauge::new(
            "frugal_ingest_in_flight_bytes",
            "Bytes the requests in flight hold of ingest.max_in_flight (bodies, decompressed, decoded estimates).",
        )?;
        r.register(Box::new(in_flight_bytes.clone()))?;
        let in_flight_limit_bytes = IntGauge::new(
            "frugal_ingest_in_flight_limit_bytes",
            "ingest.max_in_flight: what the requests in flight may hold together.",
        )?;
        r.register(Box::new(in_flight_limit_bytes.clone()))?;
        let build_info = IntGauge::with_opts(
            Opts::new("frugal_build_info", "Always 1; the version is a label.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        r.register(Box::new(build_info.clone()))?;
        build_info.set(1);
        let period = PeriodGauges {
            start: gauge(
                &r,
                "frugal_period_start_timestamp_seconds",
                "Start of the current budget period.",
            )?,
            end: gauge(
                &r,
                "frugal_period_end_timestamp_seconds",
                "End of the current budget period.",
            )?,
            usage_bytes: gauge_vec(
                &r,
                "frugal_period_usage_bytes",
                "Billable bytes used this period (sent, less definite rejections, plus adjustments).",
                &s,
            )?,
            usage_data_points: gauge_vec(
                &r,
                "frugal_period_usage_data_points",
                "Metric data points sent this period.",
                &s,
            )?,
            limit_bytes: gauge_vec(
                &r,
                "frugal_budget_limit_bytes",
                "The period's limit, less what is reserved for other senders.",
                &s,
            )?,
            target_bytes: gauge_vec(
                &r,
                "frugal_budget_target_bytes",
                "Where pacing aims to end the period.",
                &s,
            )?,
            usage_ratio: gauge_vec(
                &r,
                "frugal_budget_usage_ratio",
                "Usage as a fraction of the limit.",
                &s,
            )?,
            projected_usage_bytes: gauge_vec(
                &r,
                "frugal_budget_projected_usage_bytes",
                "Usage expected at the end of the period at the current keep probabilities.",
                &s,
            )?,
            projected_usage_ratio: gauge_vec(
                &r,
                "frugal_budget_projected_usage_ratio",
                "Projected end-of-period usage as a fraction of the limit.",
                &s,
            )?,
            offered_bytes: gauge_vec(
                &r,
                "frugal_period_offered_bytes",
                "Bytes received this period before sampling, by priority class.",
                &["signal", "class"],
            )?,
            dropped_bytes: gauge_vec(
                &r,
                "frugal_period_dropped_bytes",
                "Bytes frugal dropped this period, by reason.",
                &["signal", "reason"],
            )?,
            keep_probability: gauge_vec(
                &r,
                "frugal_keep_probability",
                "Current keep probability by priority class.",
                &["signal", "class"],
            )?,
            pacing_state: gauge_vec(
                &r,
                "frugal_pacing_state",
                "1 for the current pacing state (unconstrained, pacing, priority_only, stopped).",
                &["signal", "state"],
            )?,
            demand_rate: gauge_vec(
                &r,
                "frugal_demand_bytes_per_second",
                "Forecast incoming (pre-sampling) rate by class and window (short, long).",
                &["signal", "class", "window"],
            )?,
            forwarded_rate: gauge_vec(
                &r,
                "frugal_forwarded_bytes_per_second",
                "Rate of bytes sent upstream (short window).",
                &s,
            )?,
            active_series_limit: gauge(
                &r,
                "frugal_budget_active_series_limit",
                "The metrics budget's active-series limit.",
            )?,
            active_series: gauge(
                &r,
                "frugal_active_series",
                "Active series of the metrics frugal forwards, as Grafana bills them (a sample in the billing window).",
            )?,
            series_in_memory: gauge(
                &r,
                "frugal_series_in_memory",
                "Series in the admission window: what the series limit counts.",
            )?,
            series_refused: counter(
                &r,
                "frugal_series_refused_total",
                "New series refused under the series limit (counted at each refusal).",
                &[],
            )?,
            dpm: gauge(
                &r,
                "frugal_data_points_per_minute",
                "Data points of metrics sent upstream per minute, over about the last minute.",
            )?,
            elapsed_ratio: gauge(
                &r,
                "frugal_period_elapsed_ratio",
                "How much of the budget period has passed, 0 to 1.",
            )?,
            exhaustion: gauge_vec(
                &r,
                "frugal_budget_exhaustion_timestamp_seconds",
                "When the budget runs out at the current forwarding rate; 0 if not before the period ends.",
                &s,
            )?,
        };
        Ok(Self {
            requests: counter(
                &r,
                "frugal_requests_total",
                "Client requests answered, by status code.",
                &["signal", "transport", "code"],
            )?,
            request_duration,
            received_items: counter(
                &r,
                "frugal_received_items_total",
                "Items received, before sampling (spans, log records, data points).",
                &s,
            )?,
            received_bytes: counter(
                &r,
                "frugal_received_bytes_total",
                "Billable bytes received, before sampling (traces, logs).",
                &s,
            )?,
            dropped_items: counter(
                &r,
                "frugal_dropped_items_total",
                "Items frugal dropped, by reason (drop_rule, sampled, at_limit, rate_limit, upstream_decision).",
                &["signal", "reason"],
            )?,
            priority_dropped_items: counter(
                &r,
                "frugal_priority_dropped_items_total",
                "Items of the priority class frugal dropped (at or past the limit).",
                &["signal"],
            )?,
            dropped_bytes: counter(
                &r,
                "frugal_dropped_bytes_total",
                "Billable bytes frugal dropped, by reason.",
                &["signal", "reason"],
            )?,
            sent_items: counter(
                &r,
                "frugal_sent_items_total",
                "Items sent upstream, every attempt counted (those certainly refused are also in frugal_rejected_items_total).",
                &s,
            )?,
            sent_bytes: counter(
                &r,
                "frugal_sent_bytes_total",
                "Billable bytes sent upstream, every attempt counted.",
                &s,
            )?,
            acked_items: counter(
                &r,
                "frugal_acknowledged_items_total",
                "Items upstream acknowledged.",
                &s,
            )?,
            rejected_items: counter(
                &r,
                "frugal_rejected_items_total",
                "Items upstream refused, by reason.",
                &["signal", "reason"],
            )?,
            upstream_attempts: counter(
                &r,
                "frugal_upstream_attempts_total",
                "Attempts to send upstream, by destination and outcome.",
                &["destination", "outcome"],
            )?,
            upstream_duration,
            upstream_unavailable: counter(
                &r,
                "frugal_upstream_unavailable_total",
                "Client requests answered 503 because upstream did not take the data before the deadline.",
                &s,
            )?,
            requests_shed: counter(
                &r,
                "frugal_requests_shed_total",
                "Client requests answered 503 because the requests in flight held all of ingest.max_in_flight.",
                &["signal", "transport"],
            )?,
            loki_truncated_lines: counter(
                &r,
                "frugal_loki_truncated_lines_total",
                "Loki push lines over Grafana Cloud's 256 KB, truncated to it.",
                &[],
            )?,
            in_flight_bytes,
            in_flight_limit_bytes,
            store_flushes: counter(
                &r,
                "frugal_store_flushes_total",
                "Flushes of the usage counters to disk, by result.",
                &["result"],
            )?,
            policy_reloads: counter(
                &r,
                "frugal_policy_reload_total",
                "Policy reloads (a changed policy file or SIGHUP), by result: ok (in force), error (refused, the old policy kept).",
                &["result"],
            )?,
            store_last_flush: gauge(
                &r,
                "frugal_store_last_flush_timestamp_seconds",
                "When the usage counters were last flushed to disk.",
            )?,
            connections_open: {
                let g = IntGaugeVec::new(
                    Opts::new("frugal_connections_open", "Client connections open, by port."),
                    &["port"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            connections_refused: counter(
                &r,
                "frugal_connections_refused_total",
                "Client connections closed at once because their port was at its cap (listen.connections).",
                &["port"],
            )?,
            accept_errors: counter(
                &r,
                "frugal_accept_errors_total",
                "Failed accepts (out of file descriptors, mostly), after which the port backs off.",
                &["port"],
            )?,
            notifications: counter(
                &r,
                "frugal_notifications_total",
                "Notification POSTs to the policy's webhooks, by format and outcome (delivered, retried, failed).",
                &["format", "outcome"],
            )?,
            ready,
            build_info,
            period,
            registry: r,
        }
        .with_fixed_label_sets())
    }

    fn with_fixed_label_sets(self) -> Self {
        self.export_fixed_label_sets();
        self
    }

    /// Creates every series whose labels come from fixed sets, at 0, so dashboards and
    /// alert rules see each family from the first scrape, not only after its first event.
    /// (Each upstream creates its own destination's series: only configured ones exist.)
    fn export_fixed_label_sets(&self) {
        use crate::budget::controller::PacingState;
        use crate::model::{Class, DropReason, RejectReason, Signal, Unit};
        let byte_signals = || {
            Signal::ALL
                .into_iter()
                .filter(|s| s.budget_unit() == Unit::Bytes)
        };
        self.period.series_refused.with_label_values(&[] as &[&str]);
        self.loki_truncated_lines.with_label_values(&[] as &[&str]);
        for s in Signal::ALL {
            let sig = s.as_str();
            for c in [&self.received_items, &self.sent_items, &self.acked_items] {
                c.with_label_values(&[sig]);
            }
            self.upstream_unavailable.with_label_values(&[sig]);
            self.priority_dropped_items.with_label_values(&[sig]);
            self.period.exhaustion.with_label_values(&[sig]);
            for r in DropReason::ALL {
                self.dropped_items.with_label_values(&[sig, r.as_str()]);
            }
            for r in RejectReason::ALL {
                self.rejected_items.with_label_values(&[sig, r.as_str()]);
            }
            for t in ["http", "grpc"] {
                self.request_duration.with_label_values(&[sig, t]);
                self.requests_shed.with_label_values(&[sig, t]);
            }
        }
        let p = &self.period;
        for s in byte_signals() {
            let sig = s.as_str();
            for c in [&self.received_bytes, &self.sent_bytes] {
                c.with_label_values(&[sig]);
            }
            for r in DropReason::ALL {
                self.dropped_bytes.with_label_values(&[sig, r.as_str()]);
                p.dropped_bytes.with_label_values(&[sig, r.as_str()]);
            }
            for g in [
                &p.usage_bytes,
                &p.limit_bytes,
                &p.target_bytes,
                &p.usage_ratio,
                &p.projected_usage_bytes,
                &p.projected_usage_ratio,
                &p.forwarded_rate,
            ] {
                g.with_label_values(&[sig]);
            }
            for c in Class::ALL {
                p.offered_bytes.with_label_values(&[sig, c.as_str()]);
                p.keep_probability.with_label_values(&[sig, c.as_str()]);
                for w in ["short", "long"] {
                    p.demand_rate.with_label_values(&[sig, c.as_str(), w]);
                }
            }
            for st in PacingState::ALL {
                p.pacing_state.with_label_values(&[sig, st.as_str()]);
            }
        }
        for s in Signal::ALL
            .into_iter()
            .filter(|s| s.budget_unit() == Unit::DataPoints)
        {
            p.usage_data_points.with_label_values(&[s.as_str()]);
        }
        for r in ["ok", "error"] {
            self.store_flushes.with_label_values(&[r]);
            self.policy_reloads.with_label_values(&[r]);
        }
        for format in crate::policy::WebhookFormat::ALL {
            for outcome in NOTIFICATION_OUTCOMES {
                self.notifications
                    .with_label_values(&[format.as_str(), outcome]);
            }
        }
        for port in crate::model::Port::ALL {
            let p = [port.as_str()];
            self.connections_open.with_label_values(&p);
            self.connections_refused.with_label_values(&p);
            self.accept_errors.with_label_values(&p);
        }
    }

    /// The Prometheus text format of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder as _;
        let mut buf = Vec::new();
        let enc = prometheus::TextEncoder::new();
        if enc.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The `outcome` label values of `frugal_notifications_total`.
pub const NOTIFICATION_OUTCOMES: [&str; 3] = ["delivered", "retried", "failed"];

/// Adds to a counter (label lookups on a fixed label set cannot fail).
pub fn inc(c: &IntCounterVec, labels: &[&str], by: u64) {
    if by > 0 {
        c.with_label_values(labels).inc_by(by);
    }
}

/// The tail sampler's metrics (`frugal_tail_*`), registered only when the policy has
/// `traces.tail`.
#[derive(Clone)]
pub struct TailStats {
    /// Traces held undecided (`frugal_tail_buffered_traces`).
    pub buffered_traces: IntGauge,
    /// Bytes held undecided or decided and waiting to be sent (`frugal_tail_buffered_bytes`).
    pub buffered_bytes: IntGauge,
    /// Bytes in the spool (`frugal_tail_spool_bytes`).
    pub spool_bytes: IntGauge,
    /// Traces that entered the buffer (`frugal_tail_traces_received_total`).
    pub traces_received: IntCounter,
    /// Decisions by the policy that made them (`none`: paced) and outcome
    /// (`frugal_tail_decisions_total`).
    pub decisions: IntCounterVec,
    /// Traces decided before their time, by reason: `buffer_full`, `trace_size`
    /// (`frugal_tail_early_decisions_total`).
    pub early_decisions: IntCounterVec,
    /// Spans that arrived after their trace's decision (`frugal_tail_late_spans_total`).
    pub late_spans: IntCounter,
    /// Time from a trace's first span to its decision (`frugal_tail_decision_seconds`).
    pub decision_seconds: Histogram,
    /// How long after its trace's decision a late span arrived
    /// (`frugal_tail_late_span_age_seconds`).
    pub late_span_age: Histogram,
}

impl Stats {
    /// Registers the tail sampler's metrics (once: a second call fails).
    pub fn tail(&self) -> prometheus::Result<TailStats> {
        let r = &self.registry;
        let int_gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let int_counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram = |name: &str, help: &str| -> prometheus::Result<Histogram> {
            let buckets = vec![0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
            r.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let early = counter(
            r,
            "frugal_tail_early_decisions_total",
            "Traces decided before decision_wait, by reason: buffer_full (traces.tail.max_buffer), trace_size (max_trace_size).",
            &["reason"],
        )?;
        for reason in ["buffer_full", "trace_size"] {
            early.with_label_values(&[reason]);
        }
        Ok(TailStats {
            buffered_traces: int_gauge(
                "frugal_tail_buffered_traces",
                "Traces the tail sampler holds undecided.",
            )?,
            buffered_bytes: int_gauge(
                "frugal_tail_buffered_bytes",
                "Bytes the tail sampler holds: undecided traces and decided ones waiting to be sent (traces.tail.max_buffer).",
            )?,
            spool_bytes: int_gauge(
                "frugal_tail_spool_bytes",
                "Bytes in the tail sampler's spool on disk.",
            )?,
            traces_received: int_counter(
                "frugal_tail_traces_received_total",
                "Traces that entered the tail sampler's buffer.",
            )?,
            decisions: counter(
                r,
                "frugal_tail_decisions_total",
                "Whole-trace decisions, by the tail policy that made them (none: paced) and decision (kept, dropped).",
                &["policy", "decision"],
            )?,
            early_decisions: early,
            late_spans: int_counter(
                "frugal_tail_late_spans_total",
                "Spans that arrived after their trace was decided (they follow the decision).",
            )?,
            decision_seconds: histogram(
                "frugal_tail_decision_seconds",
                "Time from a trace's first span to its decision.",
            )?,
            late_span_age: histogram(
                "frugal_tail_late_span_age_seconds",
                "How long after its trace's decision a late span arrived.",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_before_its_first_event() {
        let stats = Stats::new().unwrap();
        let families = stats.registry.gather();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        for want in [
            "frugal_dropped_bytes_total",
            "frugal_dropped_items_total",
            "frugal_rejected_items_total",
            "frugal_upstream_unavailable_total",
            "frugal_acknowledged_items_total",
            "frugal_keep_probability",
            "frugal_pacing_state",
            "frugal_period_dropped_bytes",
            "frugal_store_flushes_total",
            "frugal_connections_open",
            "frugal_connections_refused_total",
            "frugal_accept_errors_total",
            "frugal_requests_shed_total",
            "frugal_ingest_in_flight_bytes",
        ] {
            assert!(names.contains(&want), "{want} missing from a fresh scrape");
        }
        // Every registered family, except the one whose label (the status code) is open and
        // the upstreams', which each configured destination creates.
        let registered = 49;
        assert_eq!(families.len(), registered - 3, "{names:?}");
        assert!(!names.contains(&"frugal_requests_total"));
        let text = stats.render();
        assert!(
            text.contains(r#"frugal_rejected_items_total{reason="unreachable",signal="logs"} 0"#)
        );
        let clock: crate::clock::SharedClock = std::sync::Arc::new(crate::clock::SystemClock);
        let stats = std::sync::Arc::new(stats);
        let _f =
            crate::forwarder::Forwarder::from_policy(&crate::testkit::policy(""), &clock, &stats);
        assert!(stats.render().contains(
            r#"frugal_upstream_attempts_total{destination="otlp_traces",outcome="timeout"} 0"#
        ));
    }
}
