//! One HTTP upstream: a pooled client, the policy's auth and headers, and the attempt and
//! retry loop every destination shares. Its [`Wire`] says what differs per protocol.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::retry::{self, Attempt, Next};
use super::{ExportContext, Outcome, Wire, error_message};
use crate::clock::SharedClock;
use crate::policy::{OtlpUpstream, UpstreamAuth};
use crate::stats::Stats;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, SentBody>;

/// A request body that notes when hyper first reads it: from then on the request may have
/// reached upstream; before, it certainly did not (the connection or the TLS handshake was
/// still being made).
struct SentBody {
    inner: Full<Bytes>,
    read: Arc<AtomicBool>,
}

impl hyper::body::Body for SentBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.read.store(true, Ordering::SeqCst);
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// An HTTP upstream speaking one [`Wire`].
pub struct HttpUpstream {
    config: OtlpUpstream,
    wire: Arc<dyn Wire>,
    url: String,
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
    /// An upstream at `config`'s endpoint, speaking `wire`.
    pub fn new(
        config: OtlpUpstream,
        wire: Arc<dyn Wire>,
        clock: SharedClock,
        stats: Arc<Stats>,
    ) -> Self {
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
            url: wire.url(&config.endpoint),
            config,
            wire,
            client,
            clock,
            stats,
            auth,
            user_agent: HeaderValue::from_static(concat!("frugal/", env!("CARGO_PKG_VERSION"))),
        }
    }

    /// Where requests go.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn request(
        &self,
        body: SentBody,
        encoding: Option<&'static str>,
        ctx: &ExportContext,
    ) -> Option<Request<SentBody>> {
        let mut b = Request::post(self.url.as_str())
            .header(header::CONTENT_TYPE, self.wire.content_type())
            .header(header::USER_AGENT, self.user_agent.clone());
        if let Some(e) = encoding {
            b = b.header(header::CONTENT_ENCODING, e);
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
        body: Bytes,
        encoding: Option<&'static str>,
        ctx: &ExportContext,
        timeout: Duration,
    ) -> (Attempt, Option<(u64, String)>) {
        let dest = self.wire.destination().as_str();
        let read = Arc::new(AtomicBool::new(false));
        let body = SentBody {
            inner: Full::new(body),
            read: read.clone(),
        };
        let Some(req) = self.request(body, encoding, ctx) else {
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
            .with_label_values(&[dest])
            .observe(elapsed);
        let sent = read.load(Ordering::SeqCst);
        let (attempt, detail) = match result {
            Err(_) if !sent => (Attempt::ConnectFailed, None),
            Err(_) => (Attempt::Timeout, None),
            Ok(Err(e)) if e.is_connect() || !sent => (Attempt::ConnectFailed, None),
            Ok(Err(_)) => (Attempt::Broken, None),
            Ok(Ok((status, retry_after, json, body))) => {
                let attempt = Attempt::from_status(status, retry_after);
                let detail = if attempt == Attempt::Success {
                    self.wire.partial_success(&body, json)
                } else {
                    Some((0, error_message(&body, json)))
                };
                (attempt, detail)
            }
        };
        crate::stats::inc(&self.stats.upstream_attempts, &[dest, attempt.label()], 1);
        (attempt, detail)
    }

    /// Sends `body`, retrying within the deadline; every attempt billed through the
    /// context's metering.
    pub async fn send(&self, body: Bytes, ctx: ExportContext) -> Outcome {
        let (body, encoding) = self.wire.encode(body, self.config.compression);
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
                return self.unavailable("the budget's limit", Duration::from_secs(30));
            }
            let left = crate::clock::seconds_between(self.clock.now(), deadline);
            let timeout = Duration::from_secs_f64(left.max(0.05)).min(self.config.timeout);
            let (attempt, detail) = self.attempt(body.clone(), encoding, &ctx, timeout).await;
            if !attempt.may_have_arrived(self.wire.bills_at())
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
                    tracing::warn!(
                        destination = self.wire.destination().as_str(),
                        status,
                        %message,
                        "upstream refused data"
                    );
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
                    return self.unavailable(attempt.label(), Duration::from_secs(1));
                }
                Next::GiveUp { client_retry_after } => {
                    return self.unavailable(attempt.label(), client_retry_after);
                }
            }
        }
    }

    fn unavailable(&self, why: &str, retry_after: Duration) -> Outcome {
        let signal = self.wire.destination().signal();
        crate::stats::inc(&self.stats.upstream_unavailable, &[signal.as_str()], 1);
        tracing::warn!(
            destination = self.wire.destination().as_str(),
            why,
            "upstream unavailable; asking the client to retry"
        );
        Outcome::Unavailable {
            retry_after,
            message: format!("upstream unavailable ({why}); retry later"),
        }
    }
}
