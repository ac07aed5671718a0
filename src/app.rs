//! Wiring and lifecycle: the only module that spawns tasks.
//!
//! Start: the admin port comes up first (so `/readyz` can say what is wrong), then the
//! usage store is opened — retried until it opens, never replaced by an empty one — then
//! the ledger, pacer, upstream and receivers. Running: the flusher writes usage to disk
//! every `flush_interval` and starts new periods; the pacer recomputes keep probabilities
//! every `recompute_every`; the notifier (when the policy has `alerts`) checks the budgets
//! as often and posts to the webhooks. Stop (SIGTERM): unready, stop accepting, let requests in
//! flight finish within the grace period, flush, return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::clock::SharedClock;
use crate::core::Core;
use crate::forwarder::{Export, Forwarder};
use crate::model::Port;
use crate::notifier::Notifier;
use crate::policy::Policy;
use crate::receivers::connections::{self, Listener};
use crate::receivers::{otlp_grpc, otlp_http};
use crate::reload::{POLL_EVERY, PolicySource, Step, Watch};
use crate::stats::Stats;
use crate::store::series::SeriesStore;
use crate::store::{FileSpool, SledStore, UsageStore};
use crate::tail::Tail;

/// The tail sampler's spool, under the data directory.
pub const TAIL_SPOOL_DIR: &str = "tail-spool";

/// How long requests in flight may take to finish after SIGTERM (inside Kubernetes'
/// default 30 s; `upstream.otlp.retry.max_elapsed` is held below it).
pub const GRACE_PERIOD: Duration = Duration::from_secs(25);

/// Where a running frugal listens.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// OTLP/HTTP.
    pub http: SocketAddr,
    /// OTLP/gRPC, unless turned off.
    pub grpc: Option<SocketAddr>,
    /// The admin API.
    pub admin: SocketAddr,
}

/// A running frugal.
pub struct Running {
    /// Where it listens.
    pub addresses: Addresses,
    /// Its shared state.
    pub core: Arc<Core>,
    shutdown: CancellationToken,
    admin_shutdown: CancellationToken,
    tasks: JoinSet<()>,
    ready: Arc<AtomicBool>,
    series_store: Arc<dyn SeriesStore>,
}

impl Running {
    /// Watches the policy file `source` (it held `loaded` when the running policy was
    /// read from it): a change, or SIGHUP, reloads it (see [`crate::reload`]). Without a
    /// file (the embedded policy) SIGHUP is still taken, and only logged: its default
    /// action would end frugal without the drain and the final flush. `hangup` is the
    /// SIGHUP stream, taken by the caller as early as it can (a SIGHUP before it exists
    /// ends the process); `None` when it could not be had.
    pub fn watch_policy(
        &mut self,
        watched: Option<(PolicySource, Vec<u8>)>,
        hangup: Option<tokio::signal::unix::Signal>,
    ) {
        self.tasks.spawn(policy_watcher(
            self.core.clone(),
            watched,
            hangup,
            self.shutdown.clone(),
        ));
    }

    /// Stops accepting, lets requests in flight finish (up to [`GRACE_PERIOD`]), flushes
    /// the usage counters and writes the active series.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.ready.store(false, Ordering::SeqCst);
        self.core.stats.ready.set(0);
        self.shutdown.cancel();
        let began = self.core.clock.now();
        let drained = tokio::time::timeout(GRACE_PERIOD, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("requests still in flight after the grace period; stopping anyway");
            self.tasks.abort_all();
        }
        // Decided traces go out in what is left of the grace period; undecided ones stay
        // in the spool for the next start.
        if let Some(tail) = &self.core.tail {
            let spent = crate::clock::seconds_between(began, self.core.clock.now()).max(0.0);
            let left = GRACE_PERIOD
                .saturating_sub(Duration::from_secs_f64(spent))
                .max(Duration::from_secs(2));
            tail.drain(&self.core, left)
                .await
                .context("making the tail-sampling spool durable")?;
        }
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || core.ledger.flush(core.clock.now()))
            .await
            .context("flush task")?
            .context("final flush of the usage counters")?;
        // Series admitted while requests drained are written too.
        let (core, store) = (self.core.clone(), self.series_store.clone());
        tokio::task::spawn_blocking(move || core.series_upkeep(Some(&*store)))
            .await
            .context("series task")?
            .context("final write of the active series")?;
        self.admin_shutdown.cancel();
        tracing::info!("stopped; usage counters flushed");
        Ok(())
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Starts frugal with `policy`, sending upstream through the policy's upstreams. Returns
/// once every listener is up and the store is open; [`Running::stop`] ends it.
pub async fn start(policy: Policy, clock: SharedClock) -> anyhow::Result<Running> {
    let stats = Arc::new(Stats::new().context("metrics registry")?);
    let forwarder = Forwarder::from_policy(&policy, &clock, &stats);
    tracing::info!(upstreams = %forwarder.describe(), "upstreams");
    start_with(policy, clock, stats, Arc::new(forwarder)).await
}

/// [`start`] with a given upstream (tests plug in a fake one).
pub async fn start_with(
    policy: Policy,
    clock: SharedClock,
    stats: Arc<Stats>,
    upstream: Arc<dyn Export>,
) -> anyhow::Result<Running> {
    let shutdown = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let policy = Arc::new(policy);

    let limits = policy.listen.connections;
    let open_files = connections::raise_open_files_limit();
    let otlp_ports = if policy.listen.grpc.is_some() { 2 } else { 1 };
    let (max, admin_max) = connections::fit_caps(&limits, open_files, otlp_ports);
    tracing::info!(
        open_files = open_files.map_or_else(|| "unknown".to_string(), |n| n.to_string()),
        max_connections_per_otlp_port = max,
        max_admin_connections = admin_max,
        "connection limits"
    );
    if max < limits.max {
        tracing::warn!(
            open_files = open_files.unwrap_or_default(),
            wanted = limits.max,
            holding = max,
            "the open-files limit cannot hold listen.connections.max on each OTLP port beside the admin port and frugal's own files; holding fewer (raise the limit, e.g. ulimit -n or the container runtime's nofile, or lower listen.connections.max)"
        );
    }
    let listener =
        |l: TcpListener, port: Port, max: u32| Listener::new(l, port, max, limits, &stats);

    let admin_listener = listener(
        bind(policy.listen.admin, "the admin API").await?,
        Port::Admin,
        admin_max,
    );
    let admin_addr = admin_listener.local_addr()?;

    // Until the store opens, the admin port answers /healthz and a /readyz that says why,
    // and the OTLP ports are not open (clients get a refused connection and retry, rather
    // than hanging).
    let not_ready = CancellationToken::new();
    let early_admin = tokio::spawn(early_admin(admin_listener, not_ready.clone()));
    let (store, series_store) = open_store(&policy).await?;
    not_ready.cancel();
    let admin_listener = early_admin.await.context("admin task")?;
    let http_listener = listener(
        bind(policy.listen.http, "OTLP/HTTP").await?,
        Port::Http,
        max,
    );
    let grpc_listener = match policy.listen.grpc {
        Some(a) => Some(listener(bind(a, "OTLP/gRPC").await?, Port::Grpc, max)),
        None => None,
    };

    let core = Core::build(policy.clone(), store, upstream, clock, stats)
        .context("reading this period's usage from the store")?;
    let core = match &policy.traces.tail {
        None => core,
        Some(_) => {
            let dir = policy.store.data_dir.join(TAIL_SPOOL_DIR);
            let spool = tokio::task::spawn_blocking(move || FileSpool::open(&dir))
                .await
                .context("spool task")??;
            core.with_tail(Arc::new(spool))
                .context("registering the tail sampler's metrics")?
        }
    };
    let core = Arc::new(core);
    // Spans acknowledged before a restart wait for their decision again, before any new
    // request arrives.
    if let Some(tail) = &core.tail {
        let replayed = tail.replay(&core);
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                traces = tail.buffered_traces(),
                "tail-sampling spool replayed"
            );
        }
    }
    // Series admitted before a restart stay admitted: the tracker is loaded before the
    // first request is served.
    let c = core.clone();
    let s = series_store.clone();
    let restored = tokio::task::spawn_blocking(move || c.series.tracker.restore(&*s))
        .await
        .context("series restore task")?
        .context("reading the active series from the store")?;
    if restored > 0 {
        tracing::info!(series = restored, "active series restored from the store");
    }
    // `frugal usage` finds a running frugal here (the store is locked while it runs).
    let address = admin::local_address(admin_addr).to_string();
    if let Err(e) = std::fs::write(policy.store.data_dir.join(admin::ADDRESS_FILE), address) {
        tracing::warn!(error = %e, "cannot write the admin address to the data directory");
    }

    let addresses = Addresses {
        http: http_listener.local_addr()?,
        grpc: grpc_listener.as_ref().map(|l| l.local_addr()).transpose()?,
        admin: admin_addr,
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(otlp_http::serve(
        http_listener,
        core.clone(),
        shutdown.clone(),
    ));
    if let Some(l) = grpc_listener {
        let (core, token) = (core.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = otlp_grpc::serve(l, core, token).await {
                tracing::error!(error = %e, "OTLP/gRPC server failed");
            }
        });
    }
    let admin_state = Arc::new(Admin {
        core: core.clone(),
        ready: ready.clone(),
    });
    // The admin port stays up through the drain, so /readyz reports it.
    let admin_shutdown = CancellationToken::new();
    tokio::spawn(admin::serve(
        admin_listener,
        admin_state,
        admin_shutdown.clone(),
    ));
    // A new period is paced at once, not at the next recompute.
    let new_period = Arc::new(tokio::sync::Notify::new());
    tasks.spawn(flusher(
        core.clone(),
        policy.store.flush_interval,
        new_period.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(series_keeper(
        core.clone(),
        series_store.clone(),
        policy.store.flush_interval,
        shutdown.clone(),
    ));
    tasks.spawn(pacer(
        core.clone(),
        policy.pacing.recompute_every,
        new_period,
        shutdown.clone(),
    ));
    if let Some(tail) = core.tail.clone() {
        tasks.spawn(tail_release(core.clone(), tail, shutdown.clone()));
    }
    if let Some(n) = Notifier::new(core.clone()) {
        // At least as often as Alertmanager must hear an active alert again.
        let every = policy.pacing.recompute_every.min(repost_interval(&core));
        tasks.spawn(notifier(Arc::new(n), every, shutdown.clone()));
    }
    ready.store(true, Ordering::SeqCst);
    core.stats.ready.set(1);
    tracing::info!(
        http = %addresses.http,
        grpc = %addresses.grpc.map_or_else(|| "off".to_string(), |a| a.to_string()),
        admin = %addresses.admin,
        period = %core.ledger.period_spec().describe(),
        "frugal listening"
    );
    Ok(Running {
        addresses,
        core,
        shutdown,
        admin_shutdown,
        tasks,
        ready,
        series_store,
    })
}

/// The tail sampler's release loop: decides the traces due and sends what is decided,
/// every [`crate::tail::TICK`] and at once when a request brings a trace due now.
pub async fn tail_release(core: Arc<Core>, tail: Arc<Tail>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(crate::tail::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = tail.wake.notified() => {}
            () = shutdown.cancelled() => break,
        }
        tail.tick(&core).await;
    }
}

/// Recomputes pacing every `every`, and at once when a period begins.
async fn pacer(
    core: Arc<Core>,
    every: Duration,
    new_period: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = new_period.notified() => {}
            () = shutdown.cancelled() => break,
        }
        core.recompute();
    }
}

/// Looks at the policy file every [`POLL_EVERY`] (by its path, so a ConfigMap's `..data`
/// symlink swap is followed) and at each SIGHUP, and reloads what changed.
async fn policy_watcher(
    core: Arc<Core>,
    watched: Option<(PolicySource, Vec<u8>)>,
    mut hangup: Option<tokio::signal::unix::Signal>,
    shutdown: CancellationToken,
) {
    let Some((source, loaded)) = watched else {
        loop {
            tokio::select! {
                () = sighup(&mut hangup) => tracing::info!("SIGHUP: the embedded policy runs, nothing to reload (give --policy FILE to reload a file)"),
                () = shutdown.cancelled() => return,
            }
        }
    };
    let mut watch = Watch::new(loaded);
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            () = sighup(&mut hangup) => true,
            () = shutdown.cancelled() => break,
        };
        if forced {
            tracing::info!(policy = %source.path.display(), "SIGHUP: loading the policy again");
        }
        let s = source.clone();
        let read = match tokio::task::spawn_blocking(move || s.read()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "policy read task failed");
                continue;
            }
        };
        match watch.look(read, forced) {
            Step::Nothing => {}
            Step::Unreadable(message) => crate::reload::refused(&core, &source.unreadable(message)),
            Step::Load(text) => {
                crate::reload::reload(&core, &source, &text);
            }
        }
    }
}

/// The next SIGHUP (never, without a handler or once its stream has ended).
async fn sighup(hangup: &mut Option<tokio::signal::unix::Signal>) {
    if let Some(s) = hangup
        && s.recv().await.is_some()
    {
        return;
    }
    std::future::pending().await
}

/// How often an active alert is re-posted to Alertmanager in the current period.
fn repost_interval(core: &Core) -> Duration {
    crate::notifier::decide::repost_every(&core.ledger.period())
}

/// Checks the budgets against the policy's `alerts` every `every` (a recompute's
/// projection is fresh), off the request path, and sends what is due. A delivery in
/// flight at shutdown is dropped: what it had not marked delivered is sent again after
/// the restart, with the same idempotency key.
async fn notifier(n: Arc<Notifier>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let checker = n.clone();
        let work = match tokio::task::spawn_blocking(move || checker.check()).await {
            Ok(Ok(work)) => work,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "checking the budgets for notifications failed; retrying at the next check");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "notification check task failed");
                continue;
            }
        };
        tokio::select! {
            () = n.deliver(work) => {}
            () = shutdown.cancelled() => break,
        }
    }
}

/// The usage store and the series store (one sled database).
type Stores = (Arc<dyn UsageStore>, Arc<dyn SeriesStore>);

/// Opens the store, retrying every 5 s until it opens (the caller stops waiting by
/// dropping the future, e.g. on SIGTERM).
async fn open_store(policy: &Policy) -> anyhow::Result<Stores> {
    let dir = policy.store.data_dir.clone();
    let cache = policy.store.cache_bytes;
    loop {
        let d = dir.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let usage = SledStore::open(&d, cache)?;
            let series = usage.series_store()?;
            Ok::<_, crate::store::StoreError>((usage, series))
        });
        match opened.await? {
            Ok((usage, series)) => {
                tracing::info!(data_dir = %dir.display(), "usage store open");
                return Ok((Arc::new(usage), Arc::new(series)));
            }
            Err(e) => {
                // The reason first: /readyz says it from the moment the log does.
                NOT_READY_REASON.with_reason(e.to_string());
                tracing::error!(error = %e, "the usage store cannot be opened; staying unready and retrying in 5s (frugal never starts the period again from zero)");
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Why frugal is not ready yet (shown by the early admin server).
struct NotReadyReason(std::sync::Mutex<String>);

impl NotReadyReason {
    fn with_reason(&self, r: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = r;
    }

    fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

static NOT_READY_REASON: NotReadyReason = NotReadyReason(std::sync::Mutex::new(String::new()));

/// A minimal admin server for the time before the store opens, under the admin port's
/// cap and deadlines. Returns the listener.
async fn early_admin(mut listener: Listener, done: CancellationToken) -> Listener {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let builder = connections::http_builder(listener.limits());
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            () = done.cancelled() => return listener,
        };
        let watch = conn.watch();
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let in_flight = watch.begin(req.version() == http::Version::HTTP_2);
                async move {
                    let (status, body) = if req.uri().path() == "/healthz" {
                        (200, "ok\n".to_string())
                    } else {
                        (503, format!("not ready: {}\n", NOT_READY_REASON.get()))
                    };
                    let mut r = http::Response::new(Full::new(bytes::Bytes::from(body)));
                    *r.status_mut() = http::StatusCode::from_u16(status)
                        .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
                    drop(in_flight);
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder.serve_connection(TokioIo::new(conn), service).await;
        });
    }
}

/// Writes the series tracker's changes to the store every `every` (and once more at
/// shutdown), and does the series state's per-minute upkeep.
async fn series_keeper(
    core: Arc<Core>,
    store: Arc<dyn SeriesStore>,
    every: Duration,
    shutdown: CancellationToken,
) {
    // At least once a minute, whatever the flush interval.
    let every = every.min(Duration::from_secs(30));
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(every) => false,
            () = shutdown.cancelled() => true,
        };
        let (c, s) = (core.clone(), store.clone());
        match tokio::task::spawn_blocking(move || c.series_upkeep(Some(&*s))).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "writing the active series failed; retrying at the next interval")
            }
            Err(e) => tracing::error!(error = %e, "series task failed"),
        }
        if stop {
            return;
        }
    }
}

/// Flushes the counters every `every`, and wakes at the period's end too, so the next
/// period begins when it does (a request after midnight counts in the new month, as
/// upstream bills it) rather than at the next flush.
async fn flusher(
    core: Arc<Core>,
    every: Duration,
    new_period: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let until_end = crate::clock::seconds_between(core.clock.now(), core.ledger.period().end);
        // A millisecond past the end, so the clock reads the new period when it rolls. (Past
        // the end already, a roll failed: retry at the flush interval.)
        let wait = if until_end > 0.0 {
            every.min(Duration::from_secs_f64(until_end + 0.001))
        } else {
            every
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        let c = core.clone();
        let result = tokio::task::spawn_blocking(move || c.roll_and_flush()).await;
        let stats = &core.stats;
        match result {
            Ok(Ok(rolled)) => {
                if rolled.is_some() {
                    new_period.notify_one();
                }
                crate::stats::inc(&stats.store_flushes, &["ok"], 1);
                stats
                    .store_last_flush
                    .set(core.clock.now().as_millisecond() as f64 / 1000.0);
            }
            Ok(Err(e)) => {
                crate::stats::inc(&stats.store_flushes, &["error"], 1);
                tracing::error!(error = %e, "flushing usage counters failed; retrying at the next interval");
            }
            Err(e) => tracing::error!(error = %e, "flush task failed"),
        }
    }
}
