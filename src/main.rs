//! The `frugal` command: parses arguments, loads the policy, and calls the library.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use frugal::clock::{Clock as _, SystemClock};
use frugal::model::Signal;
use frugal::policy::{self, Overrides, Policy};
use frugal::reload::PolicySource;

/// Decoding OTLP allocates a string per attribute, so the allocator is a large share of
/// frugal's CPU (about a quarter with mimalloc, more with glibc's; see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "frugal",
    version,
    about = "A usage-aware sampling proxy that keeps a Grafana Cloud stack inside its monthly quotas"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// Validate policy files without starting; reports every problem with its YAML path.
    Check {
        /// Policy files to check.
        #[arg(long = "policy", required = true)]
        policies: Vec<PathBuf>,
    },
    /// Simulate a month of traffic through the real pacing and sampling code.
    Simulate(SimulateArgs),
    /// Show or set this period's usage.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Status at a glance, from the running frugal: per signal a bar of the budget used
    /// against the pace line, the projection, the run-out time and the keep probabilities.
    Status {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Ask the frugal at this admin URL (e.g. http://frugal:4319).
        #[arg(long)]
        admin: Option<String>,
    },
    /// The metric names holding the most series and data points per minute, from the
    /// running frugal, each with the Alloy relabel rule that drops it at the source.
    Top {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Ask the frugal at this admin URL (e.g. http://frugal:4319).
        #[arg(long)]
        admin: Option<String>,
        /// How many metric names.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Print the JSON of /api/v1/series instead.
        #[arg(long)]
        json: bool,
    },
    /// Decide trace IDs (hex, one per line on stdin) at a fixed probability, as frugal
    /// would: prints `<trace id> keep|drop <tracestate>`.
    Sample(SampleArgs),
}

#[derive(Args)]
struct PolicyArgs {
    /// The policy file (default: the embedded Grafana Cloud free-tier policy).
    #[arg(long, env = "FRUGAL_POLICY")]
    policy: Option<PathBuf>,
    /// Where the usage counters live (overrides store.data_dir).
    #[arg(long, env = "FRUGAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// OTLP/HTTP listen address (overrides listen.http).
    #[arg(long)]
    listen_http: Option<String>,
    /// OTLP/gRPC listen address, or `off` (overrides listen.grpc).
    #[arg(long)]
    listen_grpc: Option<String>,
    /// Admin listen address (overrides listen.admin).
    #[arg(long)]
    listen_admin: Option<String>,
    /// Upstream OTLP endpoint (overrides upstream.otlp.endpoint).
    #[arg(long)]
    upstream_otlp: Option<String>,
    /// Upstream Prometheus remote-write URL, the full push URL (overrides
    /// upstream.remote_write.endpoint; e.g. https://prometheus-prod-<zone>.grafana.net/api/prom/push).
    #[arg(long)]
    upstream_remote_write: Option<String>,
    /// Upstream Loki push URL, the full URL (overrides upstream.loki.endpoint; e.g.
    /// https://logs-prod-<zone>.grafana.net/loki/api/v1/push).
    #[arg(long)]
    upstream_loki: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Subcommand)]
enum UsageCommand {
    /// Print this period's usage: from the running frugal (found through the data
    /// directory or the policy's admin address), else from the data directory.
    Show {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Ask the frugal at this admin URL (e.g. http://frugal:4319).
        #[arg(long)]
        admin: Option<String>,
        /// Print the admin API's JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Set this period's usage, e.g. when starting mid-month: `frugal usage set traces 12GB`.
    Set {
        /// traces, logs or metrics.
        signal: String,
        /// The usage so far (a size such as 12GB, or data points for metrics).
        amount: String,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Tell a running frugal (its admin URL) instead of writing the data directory.
        #[arg(long)]
        admin: Option<String>,
        /// The ingest bearer token, when the policy sets `ingest.auth` (with --admin).
        #[arg(long, env = "FRUGAL_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

#[derive(Args)]
struct SimulateArgs {
    /// The policy to simulate (default: the embedded free-tier policy).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Traffic: a multiple of the budget's even pace (3x), or traces per second (10req/s).
    #[arg(long, default_value = "3x")]
    traffic: frugal::simulate::Traffic,
    /// Spans per trace.
    #[arg(long, default_value_t = 20)]
    spans_per_trace: u32,
    /// The month's shape: steady, daily, spike, growth; or all of them.
    #[arg(long, default_value = "steady")]
    scenario: String,
    /// Divides traffic and budget alike, so a month runs in seconds.
    #[arg(long, default_value_t = 1000.0)]
    scale: f64,
    /// Random seed: the same seed gives the same month.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A time inside the period to simulate (RFC 3339; default November 2026).
    #[arg(long)]
    start: Option<jiff::Timestamp>,
    /// Also send logs (10% warn+), following their traces.
    #[arg(long)]
    with_logs: bool,
    /// Tail sampling: the policy's traces.tail, or one keeping errors and slow traces
    /// whole if it has none.
    #[arg(long)]
    tail: bool,
    /// Write hourly usage, pace line and keep probabilities to this CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct SampleArgs {
    /// proportional or hash_seed.
    #[arg(long, default_value = "proportional")]
    mode: String,
    /// The hash seed (hash_seed mode).
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Keep probability, 0 to 1 (or a percentage like 25%).
    #[arg(long)]
    probability: String,
    /// Hex digits of `th` (proportional mode).
    #[arg(long, default_value_t = 4)]
    precision: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = matches!(&cli.command, Command::Serve(a) if a.log_json);
    init_logging(json_logs);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("frugal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_policy(args: &PolicyArgs, overrides: Overrides) -> anyhow::Result<Policy> {
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        ..overrides
    };
    let result = match &args.policy {
        Some(path) => policy::load_file(path, &overrides),
        None => policy::load_str(
            policy::EMBEDDED_FREE_TIER,
            "embedded policy grafana-cloud-free.yaml",
            &overrides,
            &|k| std::env::var(k).ok(),
        ),
    };
    result.map_err(|e| anyhow::anyhow!("{e}"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => {
            let overrides = Overrides {
                listen_http: a.listen_http,
                listen_grpc: a.listen_grpc,
                listen_admin: a.listen_admin,
                upstream_otlp: a.upstream_otlp,
                upstream_remote_write: a.upstream_remote_write,
                upstream_loki: a.upstream_loki,
                data_dir: None,
            };
            let (policy, watched) = match &a.policy.policy {
                // A file is watched: a reload loads it the same way, overrides included.
                Some(path) => {
                    let source = PolicySource {
                        path: path.clone(),
                        overrides: Overrides {
                            data_dir: a.policy.data_dir.clone(),
                            ..overrides
                        },
                    };
                    let text = source
                        .read()
                        .map_err(|m| anyhow::anyhow!("{}", source.unreadable(m)))?;
                    let policy = source.load(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
                    (policy, Some((source, text)))
                }
                None => (load_policy(&a.policy, overrides)?, None),
            };
            serve(policy, watched)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { policies } => {
            let mut failed = false;
            for p in policies {
                match policy::load_file(&p, &Overrides::default()) {
                    Ok(_) => println!("{}: ok", p.display()),
                    Err(e) => {
                        println!("{e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Simulate(args) => simulate(args),
        Command::Usage(cmd) => usage(cmd),
        Command::Status { policy, admin } => {
            let p = load_offline(&policy)?;
            let urls = admin_urls(&p, admin.as_deref());
            match ask_running(&urls, admin.is_some())? {
                Some((url, body)) => {
                    let source = format!("frugal at {}", frugal::forwarder::redacted(&url));
                    print!(
                        "{}",
                        frugal::status::render_text(&serde_json::from_str(&body)?, &source)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => bail!(
                    "no frugal answered at {} (frugal status asks a running one; use --admin http://<host>:4319)",
                    shown(&urls)
                ),
            }
        }
        Command::Top {
            policy,
            admin,
            top,
            json,
        } => {
            let p = load_offline(&policy)?;
            let urls = admin_urls(&p, admin.as_deref());
            let path = format!("/api/v1/series?top={top}");
            match ask_running_at(&urls, admin.is_some(), &path)? {
                Some((_, body)) if json => {
                    println!("{body}");
                    Ok(ExitCode::SUCCESS)
                }
                Some((_, body)) => {
                    print!(
                        "{}",
                        frugal::status::render_top(&serde_json::from_str(&body)?)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => bail!(
                    "no frugal answered at {} (frugal top asks a running one; use --admin http://<host>:4319)",
                    shown(&urls)
                ),
            }
        }
        Command::Sample(a) => sample(a),
    }
}

fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    use frugal::simulate::{Config, Scenario, print, simulate};
    let policy = load_lenient(args.policy.as_deref(), None)?;
    let scenarios: Vec<Scenario> = if args.scenario == "all" {
        Scenario::ALL.to_vec()
    } else {
        vec![
            args.scenario
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))?,
        ]
    };
    let mut out = std::io::stdout().lock();
    for scenario in scenarios {
        let cfg = Config {
            traffic: args.traffic,
            spans_per_trace: args.spans_per_trace,
            scenario,
            scale: args.scale,
            seed: args.seed,
            start: args.start,
            with_logs: args.with_logs,
            spike_day: 11,
            csv: args.csv.clone(),
            progress: !args.quiet,
            tail: args.tail,
        };
        let report = simulate(&policy, &cfg)?;
        print(&mut out, &report, args.scale)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(policy: Policy, watched: Option<(PolicySource, Vec<u8>)>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        // SIGHUP is taken from the first moment too (its default action would end frugal
        // without a drain); the policy watcher reads it once frugal runs.
        use tokio::signal::unix::{SignalKind, signal};
        let hangup = signal(SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP; a policy file is still watched"))
            .ok();
        // SIGTERM is honoured from the first moment, also while the store is being opened.
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                wait_for_signal().await;
                stop.cancel();
            }
        });
        let mut running = tokio::select! {
            r = frugal::app::start(policy, Arc::new(SystemClock)) => r?,
            () = stop.cancelled() => {
                tracing::info!("stopped before frugal was ready; nothing to flush");
                return Ok(());
            }
        };
        running.watch_policy(watched, hangup);
        stop.cancelled().await;
        tracing::info!("stopping: no new requests; finishing those in flight");
        running.stop().await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn parse_amount(signal: Signal, amount: &str) -> anyhow::Result<u64> {
    match signal {
        Signal::Metrics => amount
            .trim()
            .parse::<u64>()
            .map_err(|_| anyhow::anyhow!("{amount:?} is not a number of data points")),
        _ => frugal::units::parse_size(amount).map_err(|e| anyhow::anyhow!("{e}")),
    }
}

/// Prints a usage document (the admin API's form) as lines a person reads.
fn print_usage(doc: &serde_json::Value, source: &str) {
    let period = &doc["period"];
    println!(
        "period {} .. {} ({source})",
        period["start"].as_str().unwrap_or("?"),
        period["end"].as_str().unwrap_or("?")
    );
    for s in Signal::ALL {
        let v = &doc["signals"][s.as_str()];
        let used = v["used"].as_u64().unwrap_or(0);
        let shown = match s.budget_unit() {
            frugal::model::Unit::DataPoints => format!("{used} data points"),
            frugal::model::Unit::Bytes => frugal::units::format_size(used),
        };
        match v["limit"].as_u64().filter(|l| *l > 0) {
            Some(limit) => println!(
                "{:<8} {shown} of {} ({:.1}%)",
                s.as_str(),
                frugal::units::format_size(limit),
                100.0 * used as f64 / limit as f64
            ),
            None => println!("{:<8} {shown}", s.as_str()),
        }
    }
}

/// Where to ask a running frugal: `admin` if given, else the address it wrote in the data
/// directory and the policy's admin address.
fn admin_urls(p: &Policy, admin: Option<&str>) -> Vec<String> {
    match admin {
        Some(url) => vec![url.trim_end_matches('/').to_string()],
        None => frugal::admin_client::candidates(&p.store.data_dir, p.listen.admin),
    }
}

/// The first of `urls` whose frugal answers `/api/v1/usage`, with its document; an error
/// when `explicit` (an operator-given URL) and it did not answer.
fn ask_running(urls: &[String], explicit: bool) -> anyhow::Result<Option<(String, String)>> {
    ask_running_at(urls, explicit, "/api/v1/usage")
}

/// The first of `urls` that answers `path`: its URL and the body.
fn ask_running_at(
    urls: &[String],
    explicit: bool,
    path: &str,
) -> anyhow::Result<Option<(String, String)>> {
    for url in urls {
        match frugal::admin_client::get(&format!("{url}{path}")) {
            Ok(body) => return Ok(Some((url.clone(), body))),
            Err(e) if explicit => return Err(e),
            Err(_) => {}
        }
    }
    Ok(None)
}

/// URLs as they may be printed (without credentials).
fn shown(urls: &[String]) -> String {
    urls.iter()
        .map(|u| frugal::forwarder::redacted(u))
        .collect::<Vec<_>>()
        .join(", ")
}

fn usage(cmd: UsageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UsageCommand::Show {
            policy,
            admin,
            json,
        } => {
            let p = load_offline(&policy)?;
            // A running frugal holds the store: ask it first.
            let urls = admin_urls(&p, admin.as_deref());
            if let Some((url, body)) = ask_running(&urls, admin.is_some())? {
                if json {
                    println!("{body}");
                } else {
                    print_usage(
                        &serde_json::from_str(&body)?,
                        &format!("frugal at {}", frugal::forwarder::redacted(&url)),
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let store = frugal::store::SledStore::open(&p.store.data_dir, p.store.cache_bytes)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{e}\n(no frugal answered at {}; if one runs elsewhere, use --admin http://<host>:4319)",
                        shown(&urls)
                    )
                })?;
            let ledger =
                frugal::ledger::Ledger::open(Arc::new(store), p.period.clone(), SystemClock.now())?;
            let period = ledger.period();
            let doc = serde_json::json!({
                "period": {"start": period.start.to_string(), "end": period.end.to_string()},
                "signals": Signal::ALL.iter().map(|s| {
                    let limit = p.budgets.bytes(*s).map(|b| b.effective_limit());
                    (s.as_str().to_string(), serde_json::json!({
                        "unit": s.budget_unit().as_str(),
                        "used": ledger.used(*s),
                        "limit": limit,
                    }))
                }).collect::<serde_json::Map<_, _>>(),
            });
            if json {
                println!("{doc}");
            } else {
                print_usage(&doc, &p.store.data_dir.display().to_string());
            }
            Ok(ExitCode::SUCCESS)
        }
        UsageCommand::Set {
            signal,
            amount,
            policy,
            admin,
            token,
        } => {
            let s = Signal::parse(&signal).ok_or_else(|| {
                anyhow::anyhow!("{signal:?} is not a signal (traces, logs, metrics)")
            })?;
            let units = parse_amount(s, &amount)?;
            if let Some(url) = admin {
                let body = frugal::admin_client::put_json(
                    &format!("{}/api/v1/usage/{}", url.trim_end_matches('/'), s.as_str()),
                    &serde_json::json!({ "used": units }).to_string(),
                    token.as_deref(),
                )?;
                println!("{body}");
                return Ok(ExitCode::SUCCESS);
            }
            let p = load_offline(&policy)?;
            let limit = p.budgets.bytes(s).map(|b| b.limit);
            frugal::ledger::check_set_used(s, units, limit).map_err(|e| anyhow::anyhow!(e))?;
            let store = frugal::store::SledStore::open(&p.store.data_dir, p.store.cache_bytes)
                .map_err(|e| {
                    anyhow::anyhow!("{e}\n(if frugal is running, use --admin http://<host>:4319)")
                })?;
            let (before, after) = frugal::ledger::set_used_offline(
                Arc::new(store),
                p.period.clone(),
                SystemClock.now(),
                s,
                units,
            )?;
            println!(
                "{} usage this period: {} -> {}",
                s.as_str(),
                frugal::units::format_size(before),
                frugal::units::format_size(after)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A policy for commands that send nothing (simulate, usage offline): unset variables
/// (the upstream's secrets) read as placeholders instead of being errors.
fn load_lenient(
    path: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Policy> {
    // One placeholder per variable, so two webhooks from two unset variables stay two.
    let env =
        |k: &str| Some(std::env::var(k).unwrap_or_else(|_| format!("http://unset.invalid/{k}")));
    let overrides = Overrides {
        data_dir,
        ..Default::default()
    };
    let (text, name) = match path {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            policy::EMBEDDED_FREE_TIER.to_string(),
            "embedded policy".to_string(),
        ),
    };
    policy::load_str(&text, &name, &overrides, &env).map_err(|e| anyhow::anyhow!("{e}"))
}

/// [`load_lenient`] with the `--policy`/`--data-dir` arguments.
fn load_offline(args: &PolicyArgs) -> anyhow::Result<Policy> {
    load_lenient(args.policy.as_deref(), args.data_dir.clone())
}

fn sample(a: SampleArgs) -> anyhow::Result<ExitCode> {
    use frugal::sampling::threshold::{Randomness, Threshold};
    let p = frugal::units::parse_ratio(&a.probability).map_err(|e| anyhow::anyhow!("{e}"))?;
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    use std::io::Write as _;
    for line in stdin.lock().lines() {
        let line = line?;
        let id_hex = line.trim();
        if id_hex.is_empty() {
            continue;
        }
        let id =
            hex::decode(id_hex).with_context(|| format!("{id_hex:?} is not a hex trace ID"))?;
        let (keep, ts) = match a.mode.as_str() {
            "hash_seed" => {
                let d = frugal::sampling::hash_seed::decide(&id, a.seed, p);
                (
                    d.keep,
                    format!(
                        "ot=rv:{};th:{}",
                        d.randomness.rvalue(),
                        d.threshold.tvalue()
                    ),
                )
            }
            "proportional" => {
                let t = Threshold::from_probability(p, a.precision).unwrap_or(Threshold::NEVER);
                let r = Randomness::from_trace_id(&id).unwrap_or(Randomness::from_unsigned(0));
                (t.should_sample(r), format!("ot=th:{}", t.tvalue()))
            }
            other => bail!("{other:?} is not a mode (proportional, hash_seed)"),
        };
        writeln!(out, "{id_hex} {} {ts}", if keep { "keep" } else { "drop" })?;
    }
    Ok(ExitCode::SUCCESS)
}
