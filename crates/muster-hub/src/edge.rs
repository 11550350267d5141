//! The hub's edge: the accept loop, and the limits that keep clients
//! without a token from locking out the fleet.
//!
//! Every accepted connection is registered until its socket closes (an
//! upgraded agent socket too: the registration travels with the socket).
//! A connection is *anonymous* until one of its requests presents a valid
//! admin or agent token, or a dashboard session (`Hub::caller` says so
//! through `CONN`); a run's task token does not count, since the code of a
//! run is not trusted with the hub's capacity. Anonymous connections are
//! capped per client address and all connections together; a new
//! connection over a cap makes room by closing the anonymous connection
//! that has waited longest without a request under way (idle, or still
//! sending its headers) or whose request has run longer than
//! `header_timeout` (a body trickled in). When nothing can be shed the new
//! connection is answered `503` at once and closed. Authenticated
//! connections, agent sockets among them, are never shed, so an agent and
//! `/livez` get through a flood that holds thousands of sockets.
//!
//! Slow headers are hyper's `header_read_timeout`, which runs whenever the
//! connection waits for a request head: it cuts slowloris headers and closes
//! keep-alive connections left idle alike. Slow bodies are tower-http's
//! `RequestBodyTimeout`.

use crate::Hub;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long a stopping hub waits for its connections' requests under way
/// before it lets them go: a client trickling a body must not hold it up.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The longest the accept loop waits after the system refused it a socket
/// (out of file descriptors or memory); it starts at 5 ms and doubles.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Connection limits, from `muster.toml` or flags; fixed while the hub runs.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeLimits {
    /// Connections open at once, all clients together; `None`: derived from
    /// the open-file limit when the hub starts.
    pub max_connections: Option<usize>,
    /// Anonymous connections open at once from one client address (an IPv4
    /// address, or an IPv6 /64).
    pub max_anonymous_per_address: usize,
    /// How long a connection may take to send a request's headers, counted
    /// from its connect or its last answer (so also how long an idle
    /// keep-alive connection is kept).
    pub header_timeout: Duration,
    /// How long a request body may go without sending anything.
    pub body_timeout: Duration,
}

impl Default for EdgeLimits {
    fn default() -> EdgeLimits {
        EdgeLimits {
            max_connections: None,
            max_anonymous_per_address: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Connections the open-file limit allows, leaving room for the database,
/// logs, backups and runs' pipes.
pub fn connections_for_file_limit(limit: u64) -> usize {
    let reserve = (limit / 16).clamp(128, 2048);
    limit.saturating_sub(reserve).max(16) as usize
}

/// The open-file limit in force (the soft one).
pub(crate) fn file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit with a pointer to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// Raises the soft open-file limit to the hard one and returns it (or the
/// soft limit, where raising is refused).
pub fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit with a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                tracing::info!(from = limit.rlim_cur, to = limit.rlim_max, "raised the open-file limit");
                return limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

tokio::task_local! {
    /// The connection the current request came on.
    pub(crate) static CONN: Arc<Conn>;
}

/// One open connection.
pub(crate) struct Conn {
    id: u64,
    pub addr: SocketAddr,
    key: IpAddr,
    opened: Instant,
    /// Requests under way on it.
    in_flight: AtomicU32,
    /// When its oldest request under way began, in milliseconds since `opened`.
    busy_since_ms: AtomicI64,
    authenticated: AtomicBool,
    /// Taken out of the count to make room; its task closes it.
    shed: AtomicBool,
    kill: tokio::sync::Notify,
    edge: Arc<Edge>,
}

impl Conn {
    /// A request presented a valid token: this connection is never shed.
    pub(crate) fn authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::SeqCst) {
            let mut r = self.edge.registry.lock().expect("edge lock poisoned");
            r.forget_anonymous(self.id, self.key);
        }
    }

    /// The client's address, when the current task serves a request.
    pub(crate) fn current_addr() -> Option<SocketAddr> {
        CONN.try_with(|c| c.addr).ok()
    }

    fn busy(self: &Arc<Conn>) -> Busy {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.busy_since_ms.store(self.opened.elapsed().as_millis() as i64, Ordering::SeqCst);
        }
        Busy(self.clone())
    }

    /// Can be closed to make room: anonymous, and with no request under
    /// way or one that has taken longer than `header_timeout` (no request
    /// that needs no token, such as `/livez`, `/metrics`, the dashboard's
    /// files or signing in, takes so long; a body sent a byte at a time does).
    fn sheddable(&self) -> bool {
        if self.authenticated.load(Ordering::SeqCst) {
            return false;
        }
        self.in_flight.load(Ordering::SeqCst) == 0 || {
            let since = Duration::from_millis(self.busy_since_ms.load(Ordering::SeqCst).max(0) as u64);
            self.opened.elapsed().saturating_sub(since) > self.edge.limits.header_timeout
        }
    }
}

struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The registration of one connection; dropping it (with the socket) ends it.
struct Admitted(Arc<Conn>);

impl Drop for Admitted {
    fn drop(&mut self) {
        let conn = &self.0;
        let mut r = conn.edge.registry.lock().expect("edge lock poisoned");
        if !conn.shed.load(Ordering::SeqCst) {
            r.open -= 1;
        }
        r.forget_anonymous(conn.id, conn.key);
        conn.edge.open_gauge.store(r.open as i64, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// Connections counted against the caps (not those shed, which are closing).
    open: usize,
    /// Anonymous connections, oldest first.
    anonymous: BTreeMap<u64, Arc<Conn>>,
    anonymous_by_key: HashMap<IpAddr, BTreeSet<u64>>,
}

impl Registry {
    fn forget_anonymous(&mut self, id: u64, key: IpAddr) {
        if self.anonymous.remove(&id).is_some()
            && let Some(ids) = self.anonymous_by_key.get_mut(&key)
        {
            ids.remove(&id);
            if ids.is_empty() {
                self.anonymous_by_key.remove(&key);
            }
        }
    }

    /// Takes the oldest sheddable anonymous connection (of `key`, or of
    /// anyone) out of the count and tells its task to close it.
    fn shed_one(&mut self, key: Option<IpAddr>) -> bool {
        let victim = match key {
            Some(key) => self
                .anonymous_by_key
                .get(&key)
                .and_then(|ids| ids.iter().map(|id| &self.anonymous[id]).find(|c| c.sheddable()).cloned()),
            None => self.anonymous.values().find(|c| c.sheddable()).cloned(),
        };
        let Some(victim) = victim else { return false };
        victim.shed.store(true, Ordering::SeqCst);
        self.open -= 1;
        self.forget_anonymous(victim.id, victim.key);
        victim.kill.notify_one();
        true
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Refusal {
    Address,
    Total,
}

/// The connection registry and what it counts.
pub(crate) struct Edge {
    limits: EdgeLimits,
    max_connections: usize,
    registry: Mutex<Registry>,
    pub open_gauge: AtomicI64,
    pub shed: muster_metrics::Family<muster_metrics::Counter>,
    pub refused: muster_metrics::Family<muster_metrics::Counter>,
    pub accept_errors: muster_metrics::Counter,
    /// Turned-away connections are logged at most this often.
    log_refusals: governor::DefaultDirectRateLimiter,
    refusals_unlogged: std::sync::atomic::AtomicU64,
}

impl Edge {
    pub(crate) fn new(limits: EdgeLimits, max_connections: usize) -> Arc<Edge> {
        Arc::new(Edge {
            limits,
            max_connections,
            registry: Mutex::new(Registry::default()),
            open_gauge: AtomicI64::new(0),
            shed: muster_metrics::Family::new(&["cap"], muster_metrics::Counter::default),
            refused: muster_metrics::Family::new(&["cap"], muster_metrics::Counter::default),
            accept_errors: muster_metrics::Counter::default(),
            log_refusals: governor::RateLimiter::direct(governor::Quota::per_second(
                std::num::NonZeroU32::new(1).expect("nonzero"),
            )),
            refusals_unlogged: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Registers a new connection from `addr`, shedding others to make
    /// room, or says which cap turned it away.
    fn admit(self: &Arc<Edge>, addr: SocketAddr) -> Result<Admitted, Refusal> {
        let key = address_key(addr.ip());
        let mut r = self.registry.lock().expect("edge lock poisoned");
        let from_key = r.anonymous_by_key.get(&key).map_or(0, BTreeSet::len);
        if from_key >= self.limits.max_anonymous_per_address {
            if !r.shed_one(Some(key)) {
                return Err(Refusal::Address);
            }
            self.shed.with(&["address"]).inc();
        }
        if r.open >= self.max_connections {
            if !r.shed_one(None) {
                return Err(Refusal::Total);
            }
            self.shed.with(&["total"]).inc();
        }
        r.next_id += 1;
        let conn = Arc::new(Conn {
            id: r.next_id,
            addr,
            key,
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            busy_since_ms: AtomicI64::new(0),
            authenticated: AtomicBool::new(false),
            shed: AtomicBool::new(false),
            kill: tokio::sync::Notify::new(),
            edge: self.clone(),
        });
        r.open += 1;
        r.anonymous.insert(conn.id, conn.clone());
        r.anonymous_by_key.entry(key).or_default().insert(conn.id);
        self.open_gauge.store(r.open as i64, Ordering::Relaxed);
        Ok(Admitted(conn))
    }

    fn refused(&self, refusal: Refusal, addr: SocketAddr) {
        let cap = match refusal {
            Refusal::Address => "address",
            Refusal::Total => "total",
        };
        self.refused.with(&[cap]).inc();
        if self.log_refusals.check().is_ok() {
            let also = self.refusals_unlogged.swap(0, Ordering::Relaxed);
            match refusal {
                Refusal::Address => tracing::warn!(
                    client = %addr.ip(),
                    cap = self.limits.max_anonymous_per_address,
                    also_refused = also,
                    "connection refused with 503: this address holds the most anonymous connections allowed, \
                     all of them busy (max_anonymous_per_address)"
                ),
                Refusal::Total => tracing::warn!(
                    client = %addr.ip(),
                    cap = self.max_connections,
                    also_refused = also,
                    "connection refused with 503: the hub holds the most connections allowed and none can be \
                     shed (max_connections)"
                ),
            }
        } else {
            self.refusals_unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Clients are counted by IPv4 address, or by IPv6 /64 (what one host
/// usually has to itself).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A socket that stays registered while it is open, through an upgrade too.
struct Tracked {
    io: Stream,
    _admitted: Admitted,
}

/// A connection as accepted, or once its TLS handshake is done.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Errors of one connection that never came to be; the next accept is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// Serves HTTP on `listener` until `stop` resolves, then lets each
/// connection finish its request under way and returns.
pub(crate) async fn serve(
    hub: Hub,
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let edge = hub.shared.edge.clone();
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(edge.limits.body_timeout));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(edge.limits.header_timeout).keep_alive(true);
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let (close_tx, close_rx) = tokio::sync::watch::channel(());
    tokio::pin!(stop);
    let mut backoff = Duration::ZERO;
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = Duration::ZERO;
                    accepted
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors or memory: make room, wait, and try again, never spinning.
                    edge.accept_errors.inc();
                    let freed = edge.registry.lock().expect("edge lock poisoned").shed_one(None);
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), MAX_ACCEPT_BACKOFF);
                    if edge.log_refusals.check().is_ok() {
                        tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, shed_one = freed,
                            "cannot accept a connection");
                    }
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(backoff) => continue,
                    }
                }
            },
        };
        // No Nagle: an `assign` frame goes out at once instead of waiting
        // for the agent to acknowledge the frame before it, which a delayed
        // ACK holds back for up to 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        let admitted = match edge.admit(addr) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                edge.refused(refusal, addr);
                tokio::spawn(refuse(tcp));
                continue;
            }
        };
        let conn = admitted.0.clone();
        let app = app.clone();
        let on_conn = conn.clone();
        let tls = hub.shared.tls.as_ref().map(|t| t.acceptor());
        let handshake_within = edge.limits.header_timeout;
        let http = http.clone();
        let mut stopping = stopping_rx.clone();
        let close = close_rx.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(addr));
            let conn = on_conn.clone();
            let app = app.clone();
            async move {
                let _busy = conn.busy();
                CONN.scope(conn.clone(), tower::ServiceExt::oneshot(app, request.map(axum::body::Body::new))).await
            }
        });
        tokio::spawn(async move {
            let _close = close;
            // The handshake runs here, not in the accept loop: a slow or
            // silent client holds up only its own connection.
            let io = match tls {
                None => Stream::Plain(tcp),
                Some(acceptor) => match tokio::time::timeout(handshake_within, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
            };
            let io = TokioIo::new(Tracked { io, _admitted: admitted });
            let served = http.serve_connection(io, service).with_upgrades();
            tokio::pin!(served);
            tokio::select! {
                _ = served.as_mut() => return,
                // Shed to make room: dropping the connection closes it.
                _ = conn.kill.notified() => return,
                _ = stopping.wait_for(|s| *s) => {}
            }
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    drop(close_rx);
    if tokio::time::timeout(STOP_GRACE, close_tx.closed()).await.is_err() {
        tracing::warn!(
            grace_s = STOP_GRACE.as_secs(),
            "connections still had requests under way; stopping without them"
        );
    }
    Ok(())
}

/// Answers a connection over the caps and closes it, giving it a second to
/// take the answer. What it sent meanwhile is read and dropped: closing a
/// socket with unread data resets it, and the reset can overtake the answer.
async fn refuse(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = muster_proto::to_json(&muster_proto::api::Problem {
        kind: "about:blank".into(),
        title: "unavailable".into(),
        status: 503,
        detail: "the hub has as many connections open as it allows; try again in a second".into(),
        field: None,
    });
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
