//! What the benchmarks share: frugal started as its own process with a policy, an
//! in-process sink standing in for upstream, an HTTP client, /proc readings of frugal's
//! CPU and memory, and the admin port's metrics. Included with `#[path]` by each bench.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// What the sink does with each request body it receives (after answering nothing yet).
pub type Observer = Arc<dyn Fn(&http::request::Parts, Bytes) + Send + Sync>;

/// A sink answering 200 with an empty export response.
pub async fn sink() -> SocketAddr {
    sink_observed(None).await
}

/// A sink answering 200 with an empty export response, handing each body to `observe`
/// first (when given).
pub async fn sink_observed(observe: Option<Observer>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let observe = observe.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let observe = observe.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes());
                            if let (Some(f), Ok(b)) = (observe, body) {
                                f(&parts, b);
                            }
                            let mut r = http::Response::new(Full::new(Bytes::new()));
                            r.headers_mut().insert(
                                "content-type",
                                http::HeaderValue::from_static("application/x-protobuf"),
                            );
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// frugal, started as `frugal serve` with a policy; killed when dropped.
pub struct Frugal {
    pub child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: std::path::PathBuf,
    /// Lines of its standard error after it started listening that mention a panic or an
    /// error.
    pub alarming: Arc<Mutex<Vec<String>>>,
}

impl Frugal {
    /// Starts `bin` with `policy` (YAML) written to `dir`, its data directory in `dir`;
    /// returns once it listens.
    pub fn start(bin: &str, policy: &str, dir: &std::path::Path) -> Frugal {
        let policy_path = dir.join("bench.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        let data_dir = dir.join("data");
        let mut child = Command::new(bin)
            .args(["serve", "--policy"])
            .arg(&policy_path)
            .args(["--data-dir"])
            .arg(&data_dir)
            .args([
                "--listen-http",
                "127.0.0.1:0",
                "--listen-grpc",
                "off",
                "--listen-admin",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "warn,frugal::app=info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr);
        let mut line = String::new();
        let field = |line: &str, name: &str| -> SocketAddr {
            line.split(&format!(" {name}="))
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {name} address in {line:?}"))
        };
        let (http, admin) = loop {
            line.clear();
            let n = std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
            assert!(n > 0, "frugal exited before listening");
            if line.contains("frugal listening") {
                break (field(&line, "http"), field(&line, "admin"));
            }
        };
        let alarming = Arc::new(Mutex::new(Vec::new()));
        let seen = alarming.clone();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(lines).map_while(Result::ok) {
                if line.contains("panicked") || line.contains("ERROR") {
                    seen.lock().unwrap().push(line);
                }
            }
        });
        Frugal {
            child,
            http,
            admin,
            data_dir,
            alarming,
        }
    }

    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    fn status_mb(&self, key: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb / 1024.0
    }

    /// Peak resident set (VmHWM), MiB.
    pub fn peak_rss_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }

    /// Resident set now (VmRSS), MiB.
    pub fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS:")
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The admin port's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let req = http::Request::get(format!("http://{}/metrics", self.admin))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.expect("/metrics");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }
}

impl Drop for Frugal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of every sample of metric `name` (any labels) whose labels contain each of
/// `labels` (`key="value"`); 0 when there is none.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (n == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        // (An empty f64 sum is -0.0.)
        .sum::<f64>()
        + 0.0
}

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub async fn post(client: &HttpClient, url: &str, body: Bytes, gzip: bool) -> u16 {
    let mut b = http::Request::post(url).header("content-type", "application/x-protobuf");
    if gzip {
        b = b.header("content-encoding", "gzip");
    } else if url.ends_with("/loki/api/v1/push") {
        // Loki reads protobuf pushes as snappy by their content type.
    } else if url.ends_with("/push") || url.ends_with("/write") {
        b = b.header("content-encoding", "snappy");
    }
    let resp = client
        .request(b.body(Full::new(body)).unwrap())
        .await
        .expect("the request to frugal failed");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// Sends as fast as `connections` clients can for `seconds`; returns requests done. Every
/// request must be answered 200: a failure ends the run with an error.
pub async fn saturate(url: &str, body: Bytes, gzip: bool, connections: usize, seconds: f64) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (url, body, done, stop) = (url.to_string(), body.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
            while !stop.load(Ordering::Relaxed) {
                let status = post(&client, &url, body.clone(), gzip).await;
                if !(200..300).contains(&status) {
                    return Err(format!("frugal answered {status}"));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        // Requests in flight at the deadline finish; a failed one fails the run.
        t.await
            .expect("a load task panicked")
            .expect("a request failed");
    }
    done.load(Ordering::Relaxed)
}

/// Latencies (ms) of `n` requests sent one at a time at `rate` per second.
pub async fn latencies(url: &str, body: Bytes, gzip: bool, n: usize, rate: f64) -> Vec<f64> {
    let bodies = vec![body; n];
    latencies_of(url, bodies, gzip, rate).await
}

/// Latencies (ms) of sending each of `bodies`, one at a time at `rate` per second.
pub async fn latencies_of(url: &str, bodies: Vec<Bytes>, gzip: bool, rate: f64) -> Vec<f64> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut out = Vec::with_capacity(bodies.len());
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for body in bodies {
        tick.tick().await;
        #[allow(clippy::disallowed_methods)] // the benchmark measures wall time itself
        let t = std::time::Instant::now();
        let status = post(&client, url, body, gzip).await;
        assert!((200..300).contains(&status), "answered {status}");
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

pub fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
