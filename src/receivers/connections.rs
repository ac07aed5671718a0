//! Connection hygiene for the three ports (OTLP/HTTP, OTLP/gRPC, admin): a cap on open
//! connections per port, deadlines no client can stretch, and an accept loop that backs off
//! instead of spinning when the process is out of file descriptors.
//!
//! - [`Listener`] accepts. At its cap it accepts and at once closes the new connection
//!   (counted in `frugal_connections_refused_total{port}`), so a flood queues nothing in
//!   the kernel's backlog and costs one file descriptor for a moment. When `accept` fails
//!   (EMFILE, ENFILE, ENOBUFS) it sleeps, 10 ms doubling to 1 s, and warns at most every
//!   10 s.
//! - [`Conn`] is the accepted socket. It holds the connection's place under the cap and
//!   enforces the connection's deadlines itself, below HTTP/1, HTTP/2 and gRPC alike:
//!   with no request in flight, a connection must complete a request's headers within
//!   `header_timeout` of opening or of the request's first byte, and is closed after
//!   `idle_timeout` without a request. (hyper's own header timeout would also cut idle
//!   keep-alive connections at the header timeout, and covers neither its version sniffing
//!   nor HTTP/2.) The servers tell it when a request is in flight ([`Watch::begin`]).
//! - [`Deadline`] wraps a request body: it must arrive within `request_timeout` of the
//!   headers, or reading it fails (the receiver answers 408 and hyper closes the
//!   connection, whose body it has not read).
//! - [`http_builder`] and [`GrpcLayer`] set the rest: hyper's timer, HTTP/2 streams per
//!   connection and keep-alive pings.
//!
//! At start, [`raise_open_files_limit`] lifts the soft `RLIMIT_NOFILE` to the hard limit
//! and [`fit_caps`] lowers the caps if even that cannot hold them, so the admin port's
//! connections and frugal's own files always have descriptors left.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::model::Port;
use crate::policy::Connections;
use crate::stats::Stats;

/// HTTP/2 keep-alive: a ping after this long without a frame from the client.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// HTTP/2 keep-alive: a client that does not answer a ping within this is gone.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// File descriptors kept out of the connection caps: the usage store, upstream
/// connections, logs.
pub const RESERVED_FILES: u64 = 256;

/// The fewest connections [`fit_caps`] leaves an OTLP port, however low the limit.
const MIN_CAP: u64 = 16;

/// The first wait after a failed `accept`; it doubles up to [`MAX_ACCEPT_BACKOFF`].
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The longest wait between two `accept`s after failures.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// At most one warning per port per this long (accept failures, the cap reached).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Now, on tokio's (pausable) time: connection deadlines are the receivers' own business,
/// not the core's clock.
#[allow(clippy::disallowed_methods)] // tokio's time, as the connection deadlines run on it
fn now() -> Instant {
    Instant::now()
}

/// Raises the soft open-files limit to the hard limit and returns the soft limit now in
/// force (`None` where it cannot be read).
#[cfg(unix)]
pub fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    #[allow(clippy::useless_conversion)] // rlim_t is not u64 everywhere
    Some(u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX))
}

/// Raises the soft open-files limit (not on this platform).
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> Option<u64> {
    None
}

/// The caps in force: the policy's, lowered when `open_files` cannot hold `otlp_ports`
/// OTLP ports at `max` each, the admin port and [`RESERVED_FILES`]. Returns the OTLP
/// ports' cap and the admin port's.
pub fn fit_caps(c: &Connections, open_files: Option<u64>, otlp_ports: u64) -> (u32, u32) {
    let Some(files) = open_files else {
        return (c.max, c.admin_max);
    };
    let admin = u64::from(c.admin_max);
    let ports = otlp_ports.max(1);
    let room = files.saturating_sub(admin + RESERVED_FILES) / ports;
    if u64::from(c.max) <= room {
        return (c.max, c.admin_max);
    }
    let max = room.max(MIN_CAP).min(u64::from(c.max));
    (u32::try_from(max).unwrap_or(c.max), c.admin_max)
}

/// A cap on open connections; each admitted one holds a [`Slot`].
struct Gate {
    max: u32,
    open: IntGauge,
    refused: IntCounter,
}

impl Gate {
    fn new(max: u32, open: IntGauge, refused: IntCounter) -> Self {
        Self { max, open, refused }
    }

    /// A place under the cap, or `None` (counted as refused) at the cap.
    fn enter(&self) -> Option<Slot> {
        // The gauge is the count: only the accept loop raises it, so reading then raising
        // cannot overshoot.
        if self.open.get() >= i64::from(self.max) {
            self.refused.inc();
            return None;
        }
        self.open.inc();
        Some(Slot(self.open.clone()))
    }
}

/// One connection's place under its port's cap, given back when it is dropped.
struct Slot(IntGauge);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The wait after each failed `accept`: doubling from [`FIRST_ACCEPT_BACKOFF`] to
/// [`MAX_ACCEPT_BACKOFF`], back to the start after a success.
#[derive(Debug, Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    fn failed(&mut self) -> Duration {
        let wait = self.next.unwrap_or(FIRST_ACCEPT_BACKOFF);
        self.next = Some((wait * 2).min(MAX_ACCEPT_BACKOFF));
        wait
    }

    fn succeeded(&mut self) {
        self.next = None;
    }
}

/// Lets a warning through at most once per `every`, counting the ones it held back.
#[derive(Debug)]
struct Quiet {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Quiet {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            held: 0,
        }
    }

    /// `Some(how many were held back since the last one)` when a warning may go out now.
    fn due(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|l| now < l + self.every) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// Whether an `accept` error concerns only the connection being accepted (the client gave
/// up in the backlog), not the process: then the next `accept` is tried at once.
fn concerns_one_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// A listening socket with its port's cap, deadlines and accept backoff.
pub struct Listener {
    inner: TcpListener,
    port: Port,
    gate: Gate,
    accept_errors: IntCounter,
    limits: Connections,
    backoff: Backoff,
    quiet_errors: Quiet,
    quiet_cap: Quiet,
}

impl Listener {
    /// `inner` serving `port`, holding at most `max` connections open, each under the
    /// policy's deadlines.
    pub fn new(
        inner: TcpListener,
        port: Port,
        max: u32,
        limits: Connections,
        stats: &Stats,
    ) -> Self {
        let p = [port.as_str()];
        Self {
            inner,
            port,
            gate: Gate::new(
                max,
                stats.connections_open.with_label_values(&p),
                stats.connections_refused.with_label_values(&p),
            ),
            accept_errors: stats.accept_errors.with_label_values(&p),
            limits,
            backoff: Backoff::default(),
            quiet_errors: Quiet::new(WARN_EVERY),
            quiet_cap: Quiet::new(WARN_EVERY),
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The deadlines its connections are held to.
    pub fn limits(&self) -> &Connections {
        &self.limits
    }

    /// The next connection under the cap. Never fails: connections past the cap are
    /// closed and counted, and failures of `accept` itself are waited out. Cancel-safe.
    pub async fn accept(&mut self) -> Conn {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    self.backoff.succeeded();
                    let Some(slot) = self.gate.enter() else {
                        if let Some(held) = self.quiet_cap.due(now()) {
                            tracing::warn!(
                                port = self.port.as_str(),
                                max = self.gate.max,
                                refused_since_last_warning = held,
                                "connection cap reached: closing new connections at once (raise listen.connections.max if your senders need more)"
                            );
                        }
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    return Conn::new(stream, peer, slot, self.limits);
                }
                Err(e) if concerns_one_connection(&e) => {}
                Err(e) => {
                    self.accept_errors.inc();
                    let wait = self.backoff.failed();
                    if let Some(held) = self.quiet_errors.due(now()) {
                        tracing::warn!(
                            port = self.port.as_str(),
                            error = %e,
                            retry_in_ms = wait.as_millis() as u64,
                            failed_since_last_warning = held,
                            "cannot accept connections (out of file descriptors? raise the open-files limit or lower listen.connections.max); backing off"
                        );
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The connections as a stream, for tonic.
    pub fn incoming(
        self,
    ) -> impl futures_util::Stream<Item = Result<Conn, std::convert::Infallible>> {
        futures_util::stream::unfold(self, |mut l| async move {
            let c = l.accept().await;
            Some((Ok(c), l))
        })
    }
}

/// What a connection's deadlines depend on.
#[derive(Debug, Clone, Copy)]
struct WatchState {
    /// Requests in flight (HTTP/2 has several).
    active: u32,
    /// Requests begun on this connection.
    begun: u64,
    /// When the last request ended, or the connection opened.
    idle_since: Instant,
    /// The first byte read since then (the next request's, on HTTP/1).
    read_since_idle: Option<Instant>,
    /// Whether the connection speaks HTTP/2 (whose idle bytes are pings and settings, not
    /// a request's headers).
    h2: bool,
}

impl WatchState {
    /// When the connection is to be closed, `None` while a request is in flight (its body
    /// has its own deadline).
    fn deadline(&self, c: &Connections) -> Option<Instant> {
        if self.active > 0 {
            return None;
        }
        let wait = if self.begun == 0 {
            c.header_timeout
        } else {
            c.idle_timeout
        };
        let idle = self.idle_since + wait;
        match self.read_since_idle {
            Some(first) if !self.h2 => Some(idle.min(first + c.header_timeout)),
            _ => Some(idle),
        }
    }
}

/// What the servers tell a connection about its requests.
#[derive(Debug)]
pub struct Watch(Mutex<WatchState>);

impl Watch {
    fn new(now: Instant, h2: bool) -> Self {
        Self(Mutex::new(WatchState {
            active: 0,
            begun: 0,
            idle_since: now,
            read_since_idle: None,
            h2,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request's headers have arrived; it is in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>, h2: bool) -> InFlight {
        let mut s = self.state();
        s.active += 1;
        s.begun += 1;
        s.h2 |= h2;
        InFlight(self.clone())
    }

    fn read(&self, now: Instant) {
        let mut s = self.state();
        if s.active == 0 && s.read_since_idle.is_none() {
            s.read_since_idle = Some(now);
        }
    }

    fn deadline(&self, c: &Connections) -> Option<Instant> {
        self.state().deadline(c)
    }
}

/// A request in flight on a connection (see [`Watch::begin`]).
#[derive(Debug)]
pub struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.active = s.active.saturating_sub(1);
        if s.active == 0 {
            s.idle_since = now();
            s.read_since_idle = None;
        }
    }
}

/// An accepted connection: the socket, its place under the cap and its deadlines. Reads
/// and writes fail with `TimedOut` once a deadline has passed, which ends the connection
/// in whichever server holds it.
pub struct Conn {
    io: TcpStream,
    peer: SocketAddr,
    watch: Arc<Watch>,
    limits: Connections,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    _slot: Slot,
}

impl Conn {
    fn new(io: TcpStream, peer: SocketAddr, slot: Slot, limits: Connections) -> Self {
        let now = now();
        Self {
            io,
            peer,
            watch: Arc::new(Watch::new(now, false)),
            limits,
            timer: Box::pin(tokio::time::sleep_until(now)),
            armed: None,
            _slot: slot,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// What the server tells about this connection's requests.
    pub fn watch(&self) -> Arc<Watch> {
        self.watch.clone()
    }

    /// `Ready(error)` once the connection's deadline has passed; otherwise `Pending`, with
    /// the timer set to wake the task at the deadline.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let Some(at) = self.watch.deadline(&self.limits) else {
            return Poll::Pending;
        };
        if self.armed != Some(at) {
            self.timer.as_mut().reset(at);
            self.armed = Some(at);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Self::timed_out()),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Arms the deadline after a write; a write stuck on a client that does not read fails
    /// at the deadline.
    fn after_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match (r, self.poll_deadline(cx)) {
            (Poll::Pending, Poll::Ready(e)) => Poll::Ready(Err(e)),
            (r, _) => r,
        }
    }

    fn expired(&self) -> bool {
        self.watch
            .deadline(&self.limits)
            .is_some_and(|at| at <= now())
    }

    fn timed_out() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connection deadline passed (listen.connections: header_timeout or idle_timeout)",
        )
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.expired() {
            return Poll::Ready(Err(Self::timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.watch.read(now());
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }
}

impl AsyncWrite for Conn {
    // Writing ends a response, after which the connection may be idle with no read
    // pending (hyper's HTTP/1 does not read again until the socket wakes it): the deadline
    // is armed after every write, so its timer wakes the task and the next read fails.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.expired() {
            return Poll::Ready(Err(Self::timed_out()));
        }
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.after_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.expired() {
            return Poll::Ready(Err(Self::timed_out()));
        }
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.after_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.after_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What tonic learns about a [`Conn`]: its addresses (as tonic's own TCP server gives
/// them) and its [`Watch`].
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The addresses, inserted in each request's extensions for `Request::remote_addr`.
    pub tcp: tonic::transport::server::TcpConnectInfo,
    /// The connection's watch.
    pub watch: Arc<Watch>,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tcp: tonic::transport::server::TcpConnectInfo {
                local_addr: self.io.local_addr().ok(),
                remote_addr: Some(self.peer),
            },
            watch: self.watch.clone(),
        }
    }
}

/// The boxed error a body read fails with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reading a request body failed because it did not arrive within `request_timeout`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the request body did not arrive within {} of its headers (listen.connections.request_timeout)",
    crate::units::format_duration(*.0)
)]
pub struct BodyTimedOut(pub Duration);

/// A request body that must arrive within a deadline, counted from when it is wrapped
/// (when the request's headers have arrived). Past it, reading fails with the error
/// `on_timeout` makes.
pub struct Deadline<B> {
    inner: B,
    within: Duration,
    timer: Pin<Box<Sleep>>,
    on_timeout: fn(Duration) -> BoxError,
}

impl<B> Deadline<B> {
    /// `inner`, to arrive within `within`; past it, reads fail with [`BodyTimedOut`].
    pub fn new(inner: B, within: Duration) -> Self {
        Self::with_error(inner, within, |d| Box::new(BodyTimedOut(d)))
    }

    /// `inner`, to arrive within `within`; past it, reads fail with `on_timeout(within)`.
    pub fn with_error(inner: B, within: Duration, on_timeout: fn(Duration) -> BoxError) -> Self {
        Self {
            inner,
            within,
            timer: Box::pin(tokio::time::sleep(within)),
            on_timeout,
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(f.map(|r| r.map_err(Into::into))),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err((this.on_timeout)(this.within)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The hyper server for the OTLP/HTTP and admin ports (HTTP/1.1 and h2c): hyper's timer
/// on both sides, HTTP/2 streams per connection capped, keep-alive pings on HTTP/2. The
/// header and idle deadlines are [`Conn`]'s (hyper's header timeout is off: it would also
/// close idle keep-alive connections at the header timeout).
pub fn http_builder(c: &Connections) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(c.max_streams)
        .keep_alive_interval(Some(KEEPALIVE_INTERVAL))
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    b
}

/// The tonic layer that tells each connection's [`Watch`] about its requests and holds
/// each request body to `request_timeout` (failing with `DEADLINE_EXCEEDED`).
#[derive(Debug, Clone, Copy)]
pub struct GrpcLayer {
    request_timeout: Duration,
}

impl GrpcLayer {
    /// Bodies must arrive within `request_timeout`.
    pub fn new(request_timeout: Duration) -> Self {
        Self { request_timeout }
    }
}

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcGuard<S>;

    fn layer(&self, inner: S) -> GrpcGuard<S> {
        GrpcGuard {
            inner,
            request_timeout: self.request_timeout,
        }
    }
}

/// The service [`GrpcLayer`] makes.
#[derive(Debug, Clone)]
pub struct GrpcGuard<S> {
    inner: S,
    request_timeout: Duration,
}

fn grpc_timed_out(d: Duration) -> BoxError {
    Box::new(tonic::Status::deadline_exceeded(
        BodyTimedOut(d).to_string(),
    ))
}

impl<S, R> tower::Service<http::Request<tonic::body::Body>> for GrpcGuard<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = R>,
    S::Future: Send + 'static,
{
    type Response = R;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<R, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let info = req.extensions().get::<ConnInfo>().cloned();
        let in_flight = info.map(|i| {
            req.extensions_mut().insert(i.tcp);
            i.watch.begin(true)
        });
        let within = self.request_timeout;
        let req =
            req.map(|b| tonic::body::Body::new(Deadline::with_error(b, within, grpc_timed_out)));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(in_flight);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::defaults::DEFAULT_CONNECTIONS;

    fn limits() -> Connections {
        Connections {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            ..DEFAULT_CONNECTIONS
        }
    }

    #[test]
    fn caps_fit_the_open_files_limit() {
        let c = Connections {
            max: 1024,
            admin_max: 64,
            ..DEFAULT_CONNECTIONS
        };
        assert_eq!(fit_caps(&c, None, 2), (1024, 64));
        assert_eq!(fit_caps(&c, Some(1_048_576), 2), (1024, 64));
        // 1024 files: 1024 - 64 - 256 = 704 for two ports.
        assert_eq!(fit_caps(&c, Some(1024), 2), (352, 64));
        assert_eq!(fit_caps(&c, Some(1024), 1), (704, 64));
        assert_eq!(fit_caps(&c, Some(100), 2), (16, 64));
        let small = Connections { max: 8, ..c };
        assert_eq!(fit_caps(&small, Some(100), 2), (8, 64));
    }

    #[test]
    fn the_gate_holds_its_cap_and_gives_places_back() {
        let stats = Stats::new().unwrap();
        let p = ["http"];
        let gate = Gate::new(
            2,
            stats.connections_open.with_label_values(&p),
            stats.connections_refused.with_label_values(&p),
        );
        let a = gate.enter().unwrap();
        let b = gate.enter().unwrap();
        assert!(gate.enter().is_none());
        assert!(gate.enter().is_none());
        assert_eq!(stats.connections_open.with_label_values(&p).get(), 2);
        assert_eq!(stats.connections_refused.with_label_values(&p).get(), 2);
        drop(a);
        let c = gate.enter().unwrap();
        drop((b, c));
        assert_eq!(stats.connections_open.with_label_values(&p).get(), 0);
    }

    #[test]
    fn accept_backoff_grows_to_a_second_and_starts_over() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(10));
    }

    #[test]
    fn warnings_are_held_to_one_per_period() {
        let t0 = now();
        let mut q = Quiet::new(Duration::from_secs(10));
        assert_eq!(q.due(t0), Some(0));
        assert_eq!(q.due(t0 + Duration::from_secs(1)), None);
        assert_eq!(q.due(t0 + Duration::from_secs(9)), None);
        assert_eq!(q.due(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(q.due(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn connection_deadlines() {
        let c = limits();
        let t0 = now();
        let s = |f: &dyn Fn(&mut WatchState)| {
            let mut w = WatchState {
                active: 0,
                begun: 0,
                idle_since: t0,
                read_since_idle: None,
                h2: false,
            };
            f(&mut w);
            w.deadline(&c)
        };
        let sec = Duration::from_secs;
        // A new connection must send a request's headers within the header timeout,
        // however it trickles them.
        assert_eq!(s(&|_| {}), Some(t0 + sec(10)));
        assert_eq!(
            s(&|w| w.read_since_idle = Some(t0 + sec(3))),
            Some(t0 + sec(10))
        );
        // In flight: the body's own deadline applies, not the connection's.
        assert_eq!(s(&|w| w.active = 1), None);
        // Between requests: idle until a byte arrives, then the header timeout.
        assert_eq!(s(&|w| w.begun = 1), Some(t0 + sec(120)));
        assert_eq!(
            s(&|w| {
                w.begun = 1;
                w.read_since_idle = Some(t0 + sec(50));
            }),
            Some(t0 + sec(60))
        );
        // HTTP/2's idle bytes are pings and settings: only the idle timeout.
        assert_eq!(
            s(&|w| {
                w.begun = 1;
                w.h2 = true;
                w.read_since_idle = Some(t0 + sec(50));
            }),
            Some(t0 + sec(120))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watch_follows_requests() {
        let c = limits();
        let t0 = now();
        let w = Arc::new(Watch::new(t0, false));
        w.read(t0 + Duration::from_secs(1));
        let a = w.begin(false);
        let b = w.begin(false);
        assert_eq!(w.deadline(&c), None);
        drop(a);
        assert_eq!(w.deadline(&c), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(b);
        let idle = now();
        assert_eq!(w.deadline(&c), Some(idle + c.idle_timeout));
        tokio::time::advance(Duration::from_secs(2)).await;
        w.read(now());
        assert_eq!(w.deadline(&c), Some(now() + c.header_timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_at_its_deadline() {
        use http_body_util::BodyExt as _;
        let (mut tx, rx) = futures_channel_body();
        let body = Deadline::new(rx, Duration::from_secs(30));
        tx.send(Bytes::from_static(b"part"));
        let started = now();
        let err = body.collect().await.unwrap_err();
        assert!(err.is::<BodyTimedOut>(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert!(err.to_string().contains("within 30s"), "{err}");
        drop(tx);
    }

    #[tokio::test]
    async fn past_the_cap_connections_are_closed_at_once_and_a_quiet_one_at_its_deadline() {
        use tokio::io::AsyncReadExt as _;
        let stats = Stats::new().unwrap();
        let limits = Connections {
            header_timeout: Duration::from_millis(300),
            ..DEFAULT_CONNECTIONS
        };
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut l = Listener::new(inner, Port::Http, 1, limits, &stats);
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut conn = l.accept().await;
        assert_eq!(stats.connections_open.with_label_values(&["http"]).get(), 1);
        let mut second = TcpStream::connect(addr).await.unwrap();
        let accepting = tokio::spawn(async move { l.accept().await.peer() });
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed at once: {n:?}");
        assert_eq!(
            stats.connections_refused.with_label_values(&["http"]).get(),
            1
        );
        // The first sends nothing: its read fails at the header timeout, and its place is
        // given back when it is dropped.
        let started = now();
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(conn);
        assert_eq!(stats.connections_open.with_label_values(&["http"]).get(), 0);
        assert_eq!(first.read(&mut buf).await.unwrap_or(0), 0);
        accepting.abort();
    }

    /// A body fed by hand: frames sent, then it stalls until the sender is dropped.
    fn futures_channel_body() -> (Feed, StreamBody) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Feed(tx), StreamBody(rx))
    }

    struct Feed(tokio::sync::mpsc::UnboundedSender<Bytes>);

    impl Feed {
        fn send(&mut self, b: Bytes) {
            self.0.send(b).unwrap();
        }
    }

    struct StreamBody(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl Body for StreamBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }
}
