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
use crate::policy::{Endpoint, UpstreamAuth};
use crate::stats::Stats;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, SentBody>;

/// A pooled keep-alive client for http:// and https:// (rustls, webpki roots, HTTP/2 when
/// the server offers it), connecting within `connect_timeout`: the upstreams' and the
/// notifier's.
pub fn https_client<B>(
    connect_timeout: Duration,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(32)
        .build(https)
}

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
    config: Endpoint,
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
        config: Endpoint,
        wire: Arc<dyn Wire>,
        clock: SharedClock,
        stats: Arc<Stats>,
    ) -> Self {
        let client = https_client(config.timeout);
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
        // Every series of this destination exists from the start, at 0.
        let dest = wire.destination().as_str();
        stats.upstream_duration.with_label_values(&[dest]);
        for outcome in Attempt::LABELS {
            stats.upstream_attempts.with_label_values(&[dest, outcome]);
        }
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
        for (k, v) in self.wire.headers() {
            b = b.header(*k, *v);
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
            let retry_after = retry::retry_after(resp.headers(), self.clock.now());
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

#[cfg(test)]
mod tests {
    //! The retry loop against a real HTTP server on 127.0.0.1:0 that answers from a
    //! script, with tokio's time paused (frugal's clock follows it).

    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;

    use http_body_util::Full;
    use jiff::Timestamp;

    use super::*;
    use crate::clock::TokioClock;
    use crate::forwarder::{Metering, OtlpWire};
    use crate::model::{RejectReason, Signal};
    use crate::policy::{Compression, Retry};

    /// What the server does with one request.
    #[derive(Clone)]
    enum Answer {
        Status(u16, Option<&'static str>),
        /// Never answers.
        Hang,
    }

    struct Server {
        url: String,
        seen: Arc<AtomicU32>,
    }

    async fn server(script: Vec<Answer>) -> Server {
        let seen = Arc::new(AtomicU32::new(0));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let s = seen.clone();
        let url = crate::testkit::http_server(move |req: Request<hyper::body::Incoming>| {
            let (script, seen) = (script.clone(), s.clone());
            async move {
                let _ = req.into_body().collect().await;
                seen.fetch_add(1, Ordering::SeqCst);
                let answer = script
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or(Answer::Status(200, None));
                match answer {
                    Answer::Status(code, retry_after) => {
                        let mut r = http::Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
                        if let Some(v) = retry_after {
                            r.headers_mut()
                                .insert(header::RETRY_AFTER, HeaderValue::from_static(v));
                        }
                        r
                    }
                    Answer::Hang => std::future::pending().await,
                }
            }
        })
        .await;
        Server { url, seen }
    }

    #[derive(Default)]
    struct Bill {
        again: AtomicU32,
        given_back: Mutex<Vec<RejectReason>>,
    }

    impl Metering for Bill {
        fn again(&self) -> bool {
            self.again.fetch_add(1, Ordering::SeqCst);
            true
        }
        fn not_arrived(&self, reason: RejectReason) {
            self.given_back.lock().unwrap().push(reason);
        }
    }

    fn upstream(url: &str, signal: Signal, clock: SharedClock) -> HttpUpstream {
        let config = Endpoint {
            endpoint: url.to_string(),
            auth: UpstreamAuth::None,
            headers: Vec::new(),
            compression: Compression::None,
            timeout: Duration::from_secs(2),
            retry: Retry {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
                max_elapsed: Duration::from_secs(3),
            },
        };
        let stats = Arc::new(Stats::new().unwrap());
        HttpUpstream::new(config, Arc::new(OtlpWire::new(signal)), clock, stats)
    }

    fn start() -> (SharedClock, Timestamp) {
        let t0: Timestamp = "2026-11-15T00:00:00Z".parse().unwrap();
        (Arc::new(TokioClock::new(t0)), t0)
    }

    async fn send(u: &HttpUpstream, bill: &Arc<Bill>, deadline: Option<Timestamp>) -> Outcome {
        let ctx = ExportContext {
            client_auth: None,
            deadline,
            metering: Some(bill.clone()),
        };
        u.send(Bytes::from_static(b"\x0a\x00"), ctx).await
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_are_retried_and_every_attempt_billed() {
        let s = server(vec![Answer::Status(503, None), Answer::Status(500, None)]).await;
        let (clock, _) = start();
        let u = upstream(&s.url, Signal::Traces, clock);
        let bill = Arc::new(Bill::default());
        let out = send(&u, &bill, None).await;
        assert!(
            matches!(out, Outcome::Accepted { rejected: 0, .. }),
            "{out:?}"
        );
        assert_eq!(s.seen.load(Ordering::SeqCst), 3);
        assert_eq!(
            bill.again.load(Ordering::SeqCst),
            2,
            "retries are billed before sending"
        );
        assert!(
            bill.given_back.lock().unwrap().is_empty(),
            "a 5xx may have been billed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_end_within_max_elapsed_and_the_client_is_asked_to_retry() {
        let s = server(vec![Answer::Status(503, None); 100]).await;
        let (clock, t0) = start();
        let u = upstream(&s.url, Signal::Traces, clock.clone());
        let bill = Arc::new(Bill::default());
        let out = send(&u, &bill, None).await;
        let took = crate::clock::seconds_between(t0, clock.now());
        assert!(matches!(out, Outcome::Unavailable { .. }), "{out:?}");
        assert!(took <= 3.0, "gave up after {took}s, max_elapsed is 3s");
        assert!(s.seen.load(Ordering::SeqCst) >= 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_clients_deadline_ends_retries_sooner() {
        let s = server(vec![Answer::Status(502, None); 100]).await;
        let (clock, t0) = start();
        let u = upstream(&s.url, Signal::Traces, clock.clone());
        let bill = Arc::new(Bill::default());
        let deadline = crate::clock::add(t0, Duration::from_millis(700));
        let out = send(&u, &bill, Some(deadline)).await;
        assert!(matches!(out, Outcome::Unavailable { .. }));
        assert!(
            clock.now() <= deadline,
            "answered after the client's deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let s = server(vec![Answer::Status(503, Some("2"))]).await;
        let (clock, t0) = start();
        let u = upstream(&s.url, Signal::Traces, clock.clone());
        let out = send(&u, &Arc::new(Bill::default()), None).await;
        assert!(matches!(out, Outcome::Accepted { .. }));
        assert!(crate::clock::seconds_between(t0, clock.now()) >= 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_is_given_back() {
        // A port that was just free: nothing listens there.
        let url = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let (clock, _) = start();
        let u = upstream(&url, Signal::Traces, clock);
        let bill = Arc::new(Bill::default());
        let out = send(&u, &bill, None).await;
        assert!(matches!(out, Outcome::Unavailable { .. }));
        let back = bill.given_back.lock().unwrap().clone();
        assert!(!back.is_empty());
        assert!(back.iter().all(|r| *r == RejectReason::Unreachable));
        assert_eq!(
            back.len() as u32,
            bill.again.load(Ordering::SeqCst) + 1,
            "every attempt given back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_are_given_back_for_traces_but_not_for_logs() {
        for (signal, given_back) in [(Signal::Traces, true), (Signal::Logs, false)] {
            let s = server(vec![Answer::Status(429, None), Answer::Status(400, None)]).await;
            let (clock, _) = start();
            let u = upstream(&s.url, signal, clock);
            let bill = Arc::new(Bill::default());
            let out = send(&u, &bill, None).await;
            assert!(
                matches!(out, Outcome::Rejected { status: 400, .. }),
                "{out:?}"
            );
            let back = bill.given_back.lock().unwrap().clone();
            if given_back {
                assert_eq!(
                    back,
                    vec![RejectReason::RateLimited, RejectReason::BadRequest]
                );
            } else {
                assert!(back.is_empty(), "Loki bills while parsing: {back:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_never_comes_times_out_and_stays_billed() {
        let s = server(vec![Answer::Hang]).await;
        let (clock, t0) = start();
        let u = upstream(&s.url, Signal::Traces, clock.clone());
        let bill = Arc::new(Bill::default());
        let out = send(&u, &bill, None).await;
        assert!(
            matches!(out, Outcome::Accepted { .. }),
            "the retry went through: {out:?}"
        );
        assert!(
            crate::clock::seconds_between(t0, clock.now()) >= 2.0,
            "one attempt timeout"
        );
        assert!(
            bill.given_back.lock().unwrap().is_empty(),
            "the body was sent: it may have arrived"
        );
        assert_eq!(s.seen.load(Ordering::SeqCst), 2);
    }
}
