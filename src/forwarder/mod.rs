//! Sending to upstream: the only outbound calls besides the notifier's.
//!
//! [`Export`] is the seam: [`HttpUpstream`] sends OTLP/HTTP protobuf to the policy's
//! endpoint (Grafana Cloud's OTLP gateway by default) over a pooled keep-alive client
//! (HTTP/2 over TLS where the server offers it), with gzip, Basic or bearer auth, a
//! timeout per attempt and retries with backoff and jitter on connection errors, 429 and
//! 5xx, honouring `Retry-After`, all within the request's deadline. The simulator plugs in
//! an in-memory upstream instead.
//!
//! Every attempt is metered through the request's [`Metering`] (the ledger's charge): an
//! attempt after the first is billed before it is sent (and not sent if it would pass the
//! limit); one that certainly did not reach upstream is given back.

pub mod retry;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use prost::Message as _;

use crate::clock::SharedClock;
use crate::model::{RejectReason, Signal};
use crate::policy::{Compression, OtlpUpstream, UpstreamAuth};
use crate::stats::Stats;
use retry::{Attempt, Next};

/// How each attempt is billed.
pub trait Metering: Send + Sync {
    /// Bills another attempt before it is sent; false if it may not be (the limit).
    fn again(&self) -> bool;
    /// The last attempt certainly did not reach upstream.
    fn not_arrived(&self, reason: RejectReason);
}

/// What the ingest path hands the forwarder besides the body.
#[derive(Clone, Default)]
pub struct ExportContext {
    /// The client's own `Authorization` header (forwarded only with `pass_through_auth`).
    pub client_auth: Option<HeaderValue>,
    /// When frugal must have answered the client: retries end before it.
    pub deadline: Option<Timestamp>,
    /// Bills each attempt (none: attempts are not metered).
    pub metering: Option<Arc<dyn Metering>>,
}

/// How an export ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Upstream acknowledged. `rejected` items of a partial success, with its message.
    Accepted { rejected: u64, message: String },
    /// Upstream refused it for good (4xx).
    Rejected { status: u16, message: String },
    /// Upstream could not take it before the deadline: the client should retry after this.
    Unavailable {
        retry_after: Duration,
        message: String,
    },
}

/// An upstream that takes OTLP protobuf bodies.
pub trait Export: Send + Sync + 'static {
    fn export(&self, signal: Signal, body: Bytes, ctx: ExportContext) -> BoxFuture<'_, Outcome>;
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, SentBody>;

/// A request body that notes when hyper first reads it: from then on the request may have
/// reached upstream; before, it certainly did not (the connection or the TLS handshake was
/// still being made).
struct SentBody {
    inner: Full<Bytes>,
    read: Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for SentBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.read.store(true, std::sync::atomic::Ordering::SeqCst);
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The OTLP/HTTP upstream.
pub struct HttpUpstream {
    config: OtlpUpstream,
    client: HttpsClient,
    clock: SharedClock,
    stats: Arc<Stats>,
    auth: Option<HeaderValue>,
    user_agent: HeaderValue,
}

/// Largest upstream response body read (responses are tiny; this bounds a bad server).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Attempts per request at most, whatever the deadline.
const MAX_ATTEMPTS: u32 = 10;

impl HttpUpstream {
    pub fn new(config: OtlpUpstream, clock: SharedClock, stats: Arc<Stats>) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.set_connect_timeout(Some(config.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .build(https);
        let auth = match &config.auth {
            UpstreamAuth::Basic { username, password } => {
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                HeaderValue::from_str(&format!("Basic {token}")).ok()
            }
            UpstreamAuth::Bearer(t) => HeaderValue::from_str(&format!("Bearer {t}")).ok(),
            UpstreamAuth::None | UpstreamAuth::PassThrough => None,
        }
        .map(|mut v| {
            v.set_sensitive(true);
            v
        });
        Self {
            config,
            client,
            clock,
            stats,
            auth,
            user_agent: HeaderValue::from_static(concat!("frugal/", env!("CARGO_PKG_VERSION"))),
        }
    }

    fn request(
        &self,
        signal: Signal,
        body: SentBody,
        gzipped: bool,
        ctx: &ExportContext,
    ) -> Option<Request<SentBody>> {
        let uri = format!("{}{}", self.config.endpoint, signal.otlp_path());
        let mut b = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::USER_AGENT, self.user_agent.clone());
        if gzipped {
            b = b.header(header::CONTENT_ENCODING, "gzip");
        }
        let auth = match self.config.auth {
            UpstreamAuth::PassThrough => ctx.client_auth.clone(),
            _ => self.auth.clone(),
        };
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        for (k, v) in &self.config.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        // Headers were validated with the policy; an invalid one cannot get here.
        b.body(body).ok()
    }

    async fn attempt(
        &self,
        signal: Signal,
        body: Bytes,
        gzipped: bool,
        ctx: &ExportContext,
        timeout: Duration,
    ) -> (Attempt, Option<(u64, String)>) {
        let read = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let body = SentBody {
            inner: Full::new(body),
            read: read.clone(),
        };
        let Some(req) = self.request(signal, body, gzipped, ctx) else {
            return (Attempt::ConnectFailed, Some((0, "invalid request".into())));
        };
        let started = self.clock.now();
        let result = tokio::time::timeout(timeout, async {
            let resp = self.client.request(req).await?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, self.clock.now()));
            let json = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, json, body))
        })
        .await;
        let elapsed = crate::clock::seconds_between(started, self.clock.now()).max(0.0);
        self.stats
            .upstream_duration
            .with_label_values(&[signal.as_str()])
            .observe(elapsed);
        let sent = read.load(std::sync::atomic::Ordering::SeqCst);
        let (attempt, detail) = match result {
            Err(_) if !sent => (Attempt::ConnectFailed, None),
            Err(_) => (Attempt::Timeout, None),
            Ok(Err(e)) if e.is_connect() || !sent => (Attempt::ConnectFailed, None),
            Ok(Err(_)) => (Attempt::Broken, None),
            Ok(Ok((status, retry_after, json, body))) => {
                let attempt = Attempt::from_status(status, retry_after);
                let detail = if attempt == Attempt::Success {
                    partial_success(signal, &body, json)
                } else {
                    Some((0, error_message(&body, json)))
                };
                (attempt, detail)
            }
        };
        crate::stats::inc(
            &self.stats.upstream_attempts,
            &[signal.as_str(), attempt.label()],
            1,
        );
        (attempt, detail)
    }

    async fn send(&self, signal: Signal, body: Bytes, ctx: ExportContext) -> Outcome {
        let (body, gzipped) = match self.config.compression {
            Compression::Gzip => match gzip(&body) {
                Ok(b) => (b, true),
                Err(_) => (body, false),
            },
            Compression::None => (body, false),
        };
        let start = self.clock.now();
        let mut deadline = crate::clock::add(start, self.config.retry.max_elapsed);
        if let Some(d) = ctx.deadline {
            deadline = deadline.min(d);
        }
        let mut n = 0;
        loop {
            n += 1;
            if n > 1
                && let Some(m) = &ctx.metering
                && !m.again()
            {
                // Another attempt could pass the period's limit: stop here.
                return self.unavailable(signal, "the budget's limit", Duration::from_secs(30));
            }
            let left = crate::clock::seconds_between(self.clock.now(), deadline);
            let timeout = Duration::from_secs_f64(left.max(0.05)).min(self.config.timeout);
            let (attempt, detail) = self
                .attempt(signal, body.clone(), gzipped, &ctx, timeout)
                .await;
            if !attempt.may_have_arrived(signal)
                && let Some(m) = &ctx.metering
            {
                m.not_arrived(attempt.reject_reason());
            }
            match attempt {
                Attempt::Success => {
                    let (rejected, message) = detail.unwrap_or_default();
                    return Outcome::Accepted { rejected, message };
                }
                Attempt::Rejected { status } => {
                    let message = detail.map(|d| d.1).unwrap_or_default();
                    tracing::warn!(signal = signal.as_str(), status, %message, "upstream refused data");
                    return Outcome::Rejected { status, message };
                }
                _ => {}
            }
            let jitter: f64 = rand::random();
            let next = retry::next(
                &attempt,
                &self.config.retry,
                n,
                jitter,
                self.clock.now(),
                deadline,
            );
            match next {
                Next::RetryAfter(wait) if n < MAX_ATTEMPTS => tokio::time::sleep(wait).await,
                Next::RetryAfter(_) => {
                    return self.unavailable(signal, attempt.label(), Duration::from_secs(1));
                }
                Next::GiveUp { client_retry_after } => {
                    return self.unavailable(signal, attempt.label(), client_retry_after);
                }
            }
        }
    }

    fn unavailable(&self, signal: Signal, why: &str, retry_after: Duration) -> Outcome {
        crate::stats::inc(&self.stats.upstream_unavailable, &[signal.as_str()], 1);
        tracing::warn!(
            signal = signal.as_str(),
            why,
            "upstream unavailable; asking the client to retry"
        );
        Outcome::Unavailable {
            retry_after,
            message: format!("upstream unavailable ({why}); retry later"),
        }
    }
}

impl Export for HttpUpstream {
    fn export(&self, signal: Signal, body: Bytes, ctx: ExportContext) -> BoxFuture<'_, Outcome> {
        Box::pin(self.send(signal, body, ctx))
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    Ok(Bytes::from(enc.finish()?))
}

/// `google.rpc.Status`, the body of OTLP error responses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`: how long a client should wait before retrying.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<prost_types::Duration>,
}

impl RpcStatus {
    /// An UNAVAILABLE status saying when to retry, as OTLP/gRPC clients read it.
    pub fn unavailable(message: &str, retry_after: Duration) -> RpcStatus {
        let info = RetryInfo {
            retry_delay: Some(prost_types::Duration {
                seconds: retry_after.as_secs() as i64,
                nanos: retry_after.subsec_nanos() as i32,
            }),
        };
        RpcStatus {
            code: 14,
            message: message.to_string(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info.encode_to_vec(),
            }],
        }
    }
}

fn error_message(body: &[u8], json: bool) -> String {
    let text = if json {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
    } else {
        RpcStatus::decode(body).ok().map(|s| s.message)
    };
    let text = text
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    text.chars().take(300).collect()
}

/// Reads a partial success (rejected count and message) from an export response.
fn partial_success(signal: Signal, body: &[u8], json: bool) -> Option<(u64, String)> {
    use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
    if body.is_empty() {
        return None;
    }
    if json {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let ps = v.get("partialSuccess")?;
        let key = match signal {
            Signal::Traces => "rejectedSpans",
            Signal::Logs => "rejectedLogRecords",
            Signal::Metrics => "rejectedDataPoints",
        };
        let n = match ps.get(key)? {
            serde_json::Value::Number(n) => n.as_u64()?,
            serde_json::Value::String(s) => s.parse().ok()?,
            _ => return None,
        };
        let msg = ps
            .get("errorMessage")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        return Some((n, msg.to_string()));
    }
    let (n, msg) = match signal {
        Signal::Traces => {
            let r = trace::v1::ExportTraceServiceResponse::decode(body).ok()?;
            let p = r.partial_success?;
            (p.rejected_spans.max(0) as u64, p.error_message)
        }
        Signal::Logs => {
            let r = logs::v1::ExportLogsServiceResponse::decode(body).ok()?;
            let p = r.partial_success?;
            (p.rejected_log_records.max(0) as u64, p.error_message)
        }
        Signal::Metrics => {
            let r = metrics::v1::ExportMetricsServiceResponse::decode(body).ok()?;
            let p = r.partial_success?;
            (p.rejected_data_points.max(0) as u64, p.error_message)
        }
    };
    Some((n, msg))
}
