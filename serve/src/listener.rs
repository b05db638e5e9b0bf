//! The accept loop both binaries serve HTTP with, and the accounting of its connections that
//! seed 003's maintain API reads (`/maintain/v1/apiserver/conn`, `conn/stats`, `conn/close`).
//!
//! [`serve`] accepts on a `TcpListener`, registers each connection in [`Connections`] under the
//! listener's protocol name (`http` for the operator's API, `node` for the node-daemon's) with
//! its peer host and port and when it was accepted, and serves it with hyper-util's connection
//! builder. Every connection keeps a cancellation handle, so the maintain API can close all
//! connections of one client host, or the one with a given client port.
//!
//! Also here, because they belong to the same loop (Polaris's `connLimit`, and issue 16's slow
//! clients and shutdown):
//! - **limits** ([`ConnLimits`]): at most N connections per client host and M in total (0: no
//!   limit; hosts on a list are exempt from the per-host one). A connection over a limit is
//!   refused at accept — answered with a one-shot `503` when the socket takes it at once,
//!   then closed — and counted (`opsplane_connections_refused_total{protocol,reason}`).
//! - **timeouts** ([`ConnTimeouts`]): a request head must arrive within `header_read`, and a
//!   connection with no request in flight and no bytes for `idle` is closed. A new
//!   connection's first head is read into a small buffer of the listener's own before hyper
//!   takes the connection, so a client that trickles or sends nothing costs about a kilobyte,
//!   not the ~23 KiB of a hyper connection (10,000 slow clients stay far below 100 MB). After
//!   the first request, hyper's header-read timeout bounds each next head and the wait for it
//!   on a keep-alive connection.
//! - **graceful shutdown**: when `shutdown` resolves, the loop stops accepting, every connection
//!   finishes its request in flight and closes, and whatever is still open after `grace` is
//!   closed.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a host with no connection left stays in the counters (shown with 0), as Polaris's
/// `purgeCounterExpire` does.
const HOST_PURGE_AFTER: Duration = Duration::from_secs(60);

/// Connection limits of one listener (Polaris's `connLimit`). 0 means no limit; off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections one client host may hold at once.
    pub per_host: usize,
    /// Most connections the listener holds at once.
    pub total: usize,
    /// Hosts the per-host limit does not apply to.
    pub exempt: Vec<IpAddr>,
}

/// Timeouts of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTimeouts {
    /// A request head must be read within this (also the longest wait for the next request on
    /// an idle keep-alive connection).
    pub header_read: Duration,
    /// A connection with no request in flight and no traffic for this long is closed.
    pub idle: Duration,
    /// After the shutdown signal, how long requests in flight may take before their
    /// connections are closed.
    pub grace: Duration,
}

impl Default for ConnTimeouts {
    fn default() -> Self {
        ConnTimeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            grace: Duration::from_secs(5),
        }
    }
}

/// The process's open-file limit (soft), if it can be read.
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and nothing else.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (read == 0).then_some(limit.rlim_cur)
}

/// Raises the open-file limit to its hard limit (as Go's runtime and most servers do): the
/// default soft limit of 1,024 is what let about a thousand slow clients lock out every new
/// one. Returns the limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// The listener flags both binaries share (README "Configuration").
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Most connections one client host may hold open (0: no limit).
    #[arg(long, env = "OPSPLANE_MAX_CONNS_PER_HOST", default_value_t = 1024)]
    pub max_conns_per_host: usize,
    /// Most connections the listener holds open; 0: three quarters of the process's open-file
    /// limit (raised to its hard limit at start), so descriptors never run out for the rest.
    #[arg(long, env = "OPSPLANE_MAX_CONNS", default_value_t = 0)]
    pub max_conns: usize,
    /// Client addresses exempt from --max-conns-per-host (comma-separated IPs).
    #[arg(long, env = "OPSPLANE_CONN_LIMIT_EXEMPT", value_delimiter = ',')]
    pub conn_limit_exempt: Vec<IpAddr>,
    /// Longest time to receive a request head (and to wait for the next request on a
    /// keep-alive connection).
    #[arg(long, env = "OPSPLANE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection without a request in flight and without traffic for this long is closed.
    #[arg(long, env = "OPSPLANE_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// After SIGTERM, how long requests in flight may take before their connections are closed.
    #[arg(long, env = "OPSPLANE_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl ListenArgs {
    /// The limits these flags set (`--max-conns 0`: from the open-file limit now in force).
    pub fn limits(&self) -> ConnLimits {
        let total = match self.max_conns {
            0 => open_file_limit().map_or(0, |n| (n.saturating_mul(3) / 4) as usize),
            n => n,
        };
        ConnLimits {
            per_host: self.max_conns_per_host,
            total,
            exempt: self.conn_limit_exempt.clone(),
        }
    }

    /// The timeouts these flags set; zero durations are refused (they would close everything).
    pub fn timeouts(&self) -> Result<ConnTimeouts, String> {
        for (name, value) in [
            ("--header-read-timeout", self.header_read_timeout),
            ("--idle-timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be more than 0"));
            }
        }
        Ok(ConnTimeouts {
            header_read: self.header_read_timeout,
            idle: self.idle_timeout,
            grace: self.shutdown_grace,
        })
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its host holds the per-host maximum.
    PerHost,
    /// The listener holds its maximum.
    Total,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::PerHost => "per_host",
            Refusal::Total => "total",
        }
    }
}

/// The counts of one listener (`GET /maintain/v1/apiserver/conn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnCount {
    /// Connections open now.
    pub total: usize,
    /// Open connections by client host; hosts whose last connection closed recently show 0.
    pub hosts: BTreeMap<String, usize>,
}

/// One host's connections (`GET /maintain/v1/apiserver/conn/stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConns {
    /// The client host.
    pub host: IpAddr,
    /// Connections it holds open.
    pub amount: usize,
    /// When a connection from it was last accepted.
    pub last_access: SystemTime,
    /// `ip:port` of each open connection.
    pub actives: Vec<SocketAddr>,
}

struct Conn {
    peer: SocketAddr,
    close: CancellationToken,
}

#[derive(Clone, Copy)]
struct HostStat {
    live: usize,
    last_access: SystemTime,
    /// When `live` last dropped to 0.
    idle_since: Option<Instant>,
}

#[derive(Default)]
struct State {
    conns: HashMap<u64, Conn>,
    hosts: HashMap<IpAddr, HostStat>,
}

impl State {
    fn purge(&mut self, now: Instant) {
        self.hosts.retain(|_, h| {
            h.live > 0
                || h.idle_since
                    .is_none_or(|t| now.duration_since(t) < HOST_PURGE_AFTER)
        });
    }
}

/// One listener's connections.
struct Tracked {
    protocol: String,
    limits: ConnLimits,
    state: Mutex<State>,
    next_id: AtomicU64,
    metrics: ConnMetrics,
}

impl Tracked {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the accounting; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an accepted connection, or says why it is refused.
    fn admit(&self, peer: SocketAddr) -> Result<(u64, CancellationToken), Refusal> {
        let host = canonical(peer.ip());
        let mut state = self.lock();
        if self.limits.total > 0 && state.conns.len() >= self.limits.total {
            return Err(Refusal::Total);
        }
        let live = state.hosts.get(&host).map_or(0, |h| h.live);
        if self.limits.per_host > 0
            && live >= self.limits.per_host
            && !self.limits.exempt.iter().any(|e| canonical(*e) == host)
        {
            return Err(Refusal::PerHost);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        state.conns.insert(
            id,
            Conn {
                peer,
                close: close.clone(),
            },
        );
        state.hosts.insert(
            host,
            HostStat {
                live: live + 1,
                last_access: SystemTime::now(),
                idle_since: None,
            },
        );
        self.metrics.open.with_label_values(&[&self.protocol]).inc();
        Ok((id, close))
    }

    fn release(&self, id: u64) {
        let mut state = self.lock();
        let Some(conn) = state.conns.remove(&id) else {
            return;
        };
        // Give back the table a burst of connections grew (10,000 slow clients leave ~0.5 MiB).
        if state.conns.capacity() > 256 && state.conns.len() < state.conns.capacity() / 4 {
            let keep = state.conns.len() * 2;
            state.conns.shrink_to(keep);
        }
        if let Some(h) = state.hosts.get_mut(&canonical(conn.peer.ip())) {
            h.live = h.live.saturating_sub(1);
            if h.live == 0 {
                h.idle_since = Some(Instant::now());
            }
        }
        self.metrics.open.with_label_values(&[&self.protocol]).dec();
    }
}

/// An IPv4-mapped IPv6 address counts as the IPv4 host it is.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[derive(Clone)]
struct ConnMetrics {
    accepted: IntCounterVec,
    refused: IntCounterVec,
    closed: IntCounterVec,
    open: IntGaugeVec,
}

/// Every listener's connections, by protocol name; what the maintain API reads and closes.
#[derive(Clone)]
pub struct Connections {
    listeners: Arc<RwLock<BTreeMap<String, Arc<Tracked>>>>,
    metrics: ConnMetrics,
}

impl Connections {
    /// An empty registry whose counters are registered in `registry`:
    /// `opsplane_connections_accepted_total`, `_refused_total{reason}`, `_closed_total{reason}`
    /// and the gauge `opsplane_connections_open`, all by `protocol`.
    pub fn new(registry: &Registry) -> Result<Connections, prometheus::Error> {
        let accepted = IntCounterVec::new(
            Opts::new(
                "opsplane_connections_accepted_total",
                "TCP connections accepted, by listener protocol",
            ),
            &["protocol"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "opsplane_connections_refused_total",
                "TCP connections refused at accept by a connection limit, by listener protocol and limit (per_host, total)",
            ),
            &["protocol", "reason"],
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                "opsplane_connections_closed_total",
                "TCP connections closed by the server rather than the client, by listener protocol and reason (maintain, idle, header_timeout, shutdown)",
            ),
            &["protocol", "reason"],
        )?;
        let open = IntGaugeVec::new(
            Opts::new(
                "opsplane_connections_open",
                "TCP connections open now, by listener protocol",
            ),
            &["protocol"],
        )?;
        registry.register(Box::new(accepted.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        registry.register(Box::new(open.clone()))?;
        Ok(Connections {
            listeners: Default::default(),
            metrics: ConnMetrics {
                accepted,
                refused,
                closed,
                open,
            },
        })
    }

    fn tracked(&self, protocol: &str) -> Option<Arc<Tracked>> {
        self.listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(protocol)
            .cloned()
    }

    fn register(&self, protocol: &str, limits: ConnLimits) -> Arc<Tracked> {
        let tracked = Arc::new(Tracked {
            protocol: protocol.to_owned(),
            limits,
            state: Mutex::default(),
            next_id: AtomicU64::new(0),
            metrics: self.metrics.clone(),
        });
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(protocol.to_owned(), tracked.clone());
        tracked
    }

    /// The protocol names of the listeners registered.
    pub fn protocols(&self) -> Vec<String> {
        self.listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Open connections of the listener `protocol`, in total and by host (only `host` when
    /// given: 0 when it holds none). `None`: no such listener.
    pub fn count(&self, protocol: &str, host: Option<IpAddr>) -> Option<ConnCount> {
        let tracked = self.tracked(protocol)?;
        let mut state = tracked.lock();
        state.purge(Instant::now());
        let hosts = match host.map(canonical) {
            Some(host) => BTreeMap::from([(
                host.to_string(),
                state.hosts.get(&host).map_or(0, |h| h.live),
            )]),
            None => state
                .hosts
                .iter()
                .map(|(ip, h)| (ip.to_string(), h.live))
                .collect(),
        };
        Some(ConnCount {
            total: state.conns.len(),
            hosts,
        })
    }

    /// Per-host statistics of the listener `protocol` (only `host` when given), with the
    /// number of hosts before the filter; `min_amount > 0` keeps hosts holding at least that
    /// many connections. Sorted by host. `None`: no such listener.
    pub fn stats(
        &self,
        protocol: &str,
        host: Option<IpAddr>,
        min_amount: usize,
    ) -> Option<(usize, Vec<HostConns>, usize)> {
        let tracked = self.tracked(protocol)?;
        let mut state = tracked.lock();
        state.purge(Instant::now());
        let mut actives: HashMap<IpAddr, Vec<SocketAddr>> = HashMap::new();
        for conn in state.conns.values() {
            actives
                .entry(canonical(conn.peer.ip()))
                .or_default()
                .push(conn.peer);
        }
        let host = host.map(canonical);
        let mut all: Vec<HostConns> = state
            .hosts
            .iter()
            .filter(|(ip, _)| host.is_none_or(|h| h == **ip))
            .map(|(ip, h)| {
                let mut peers = actives.remove(ip).unwrap_or_default();
                peers.sort();
                HostConns {
                    host: *ip,
                    amount: h.live,
                    last_access: h.last_access,
                    actives: peers,
                }
            })
            .collect();
        all.sort_by_key(|h| h.host);
        let before = all.len();
        if min_amount > 0 {
            all.retain(|h| h.amount >= min_amount);
        }
        Some((state.conns.len(), all, before))
    }

    /// Closes the connections of `host` on the listener `protocol`: only the one from `port`
    /// when given and open, else every one of the host (Polaris does the same when the port is
    /// not found). Returns how many were closed; `None`: no such listener.
    pub async fn close(&self, protocol: &str, host: IpAddr, port: Option<u16>) -> Option<usize> {
        let tracked = self.tracked(protocol)?;
        let host = canonical(host);
        let chosen: Vec<u64> = {
            let state = tracked.lock();
            let of_host: Vec<(u64, &Conn)> = state
                .conns
                .iter()
                .filter(|(_, c)| canonical(c.peer.ip()) == host)
                .map(|(id, c)| (*id, c))
                .collect();
            let one: Vec<(u64, &Conn)> = match port {
                Some(port) => of_host
                    .iter()
                    .copied()
                    .filter(|(_, c)| c.peer.port() == port)
                    .collect(),
                None => Vec::new(),
            };
            let chosen = if one.is_empty() { of_host } else { one };
            for (_, conn) in &chosen {
                conn.close.cancel();
            }
            chosen.into_iter().map(|(id, _)| id).collect()
        };
        tracked
            .metrics
            .closed
            .with_label_values(&[&tracked.protocol, "maintain"])
            .inc_by(chosen.len() as u64);
        // Answer once the sockets are really closed (a connection's task releases its entry
        // after dropping the socket), so a client told "closed" finds them closed; bounded.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline
            && chosen
                .iter()
                .any(|id| tracked.lock().conns.contains_key(id))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Some(chosen.len())
    }
}

/// What a listener serves and under which rules.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The name its connections are counted under (`http`, `node`).
    pub protocol: String,
    /// Connection limits.
    pub limits: ConnLimits,
    /// Timeouts.
    pub timeouts: ConnTimeouts,
}

/// The time of a connection's last traffic or request, and its requests in flight.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `start`.
    last: AtomicU64,
}

impl Activity {
    fn touch(&self, start: Instant) {
        self.last
            .store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self, start: Instant) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        start.elapsed().saturating_sub(last)
    }
}

/// A socket that first gives back the head [`read_first_head`] read, and notes when bytes pass.
struct Watched {
    inner: TcpStream,
    /// The bytes read before hyper took over; freed once hyper has read them.
    head: Vec<u8>,
    head_read: usize,
    activity: Arc<Activity>,
    start: Instant,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.head_read < this.head.len() {
            let n = (this.head.len() - this.head_read).min(buf.remaining());
            buf.put_slice(&this.head[this.head_read..this.head_read + n]);
            this.head_read += n;
            if this.head_read == this.head.len() {
                this.head = Vec::new();
                this.head_read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch(this.start);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch(this.start);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<Activity>, Instant);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch(self.1);
    }
}

/// The answer to a connection over a limit, written only if the socket takes it at once.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 21\r\nconnection: close\r\nretry-after: 1\r\n\r\ntoo many connections\n";

/// Serves `router` on `listener` until `shutdown` resolves, counting connections in
/// `connections` under `config.protocol` (see the module documentation). Handlers see the
/// peer as `ConnectInfo<SocketAddr>`. Returns once every connection is closed (at most the
/// grace period after the signal).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: &Connections,
    config: ListenerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tracked = connections.register(&config.protocol, config.limits.clone());
    let timeouts = config.timeouts;
    // `stop` asks connections to finish and close; `kill` closes them at once.
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors and the like: keep serving those already open and
                    // try again shortly instead of spinning.
                    tracing::warn!(%error, protocol = %config.protocol, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // Reap finished connection tasks so the set does not grow without end.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        tracked
            .metrics
            .accepted
            .with_label_values(&[&config.protocol])
            .inc();
        let (id, close) = match tracked.admit(peer) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                tracked
                    .metrics
                    .refused
                    .with_label_values(&[&config.protocol, refusal.as_str()])
                    .inc();
                tracing::debug!(%peer, reason = refusal.as_str(), "connection refused over the limit");
                // Never wait on a client we are refusing: write what the socket takes now.
                let _ = stream.try_write(REFUSED);
                drop(stream);
                continue;
            }
        };
        tracing::debug!(%peer, protocol = %config.protocol, "connection accepted");
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tracked = tracked.clone();
        let task = ConnTask {
            peer,
            router,
            timeouts,
            close,
            stop: stop.clone(),
            kill: kill.clone(),
        };
        tasks.spawn(async move {
            serve_connection(stream, task, &tracked).await;
            tracked.release(id);
        });
    }
    drop(listener);
    tracing::info!(protocol = %config.protocol, open = tasks.len(), grace = ?timeouts.grace, "stopped accepting; finishing requests in flight");
    stop.cancel();
    let drained = tokio::time::timeout(timeouts.grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(protocol = %config.protocol, open = tasks.len(), "grace period over; closing the connections left");
        tracked
            .metrics
            .closed
            .with_label_values(&[&config.protocol, "shutdown"])
            .inc_by(tasks.len() as u64);
        kill.cancel();
        while tasks.join_next().await.is_some() {}
    }
    Ok(())
}

/// The first bytes of a connection are read into a buffer this large (it grows as a head needs).
const HEAD_BUFFER: usize = 256;
/// A head longer than this is handed to hyper before it is complete: a client that sends that
/// much at once is not trickling, and hyper's own limits apply to the rest.
const HEAD_HANDOVER: usize = 4096;

/// How the wait for a connection's first request head ended.
enum Head {
    /// The head is complete (or long enough to hand over): the bytes read so far.
    Read(Vec<u8>),
    /// The client closed, the read failed, or the connection is to be closed now.
    Gone,
    /// The header-read timeout passed first.
    TimedOut,
}

/// Waits for the first request head of a new connection with a small buffer of our own, before
/// hyper (whose read and write buffers take 16 KiB the moment it starts) is involved. A slow or
/// silent client thus costs about a kilobyte while it trickles, not the ~23 KiB a hyper
/// connection takes: 10,000 of them fit in a few tens of MiB (issue 16, defect 1).
async fn read_first_head(
    stream: &TcpStream,
    timeouts: ConnTimeouts,
    close: &CancellationToken,
    stop: &CancellationToken,
    kill: &CancellationToken,
) -> Head {
    let mut head = Vec::new();
    let mut deadline = pin!(tokio::time::sleep(timeouts.header_read));
    loop {
        tokio::select! {
            ready = stream.readable() => {
                if ready.is_err() {
                    return Head::Gone;
                }
            }
            _ = &mut deadline => return Head::TimedOut,
            // Closed through the maintain API, or the grace period is over.
            _ = close.cancelled() => return Head::Gone,
            _ = kill.cancelled() => return Head::Gone,
            // Shutting down: a connection that has sent nothing has no request in flight; one
            // that is sending a head is let finish it (and is served, then closed).
            _ = stop.cancelled(), if head.is_empty() => return Head::Gone,
        }
        if head.capacity() == head.len() {
            head.reserve(if head.is_empty() {
                HEAD_BUFFER
            } else {
                head.len()
            });
        }
        let had = head.len();
        match stream.try_read_buf(&mut head) {
            Ok(0) => return Head::Gone,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return Head::Gone,
        }
        // Only the new bytes (and the three before them) can complete the blank line.
        let fresh = &head[had.saturating_sub(3)..];
        if head.len() >= HEAD_HANDOVER || fresh.windows(4).any(|w| w == b"\r\n\r\n") {
            return Head::Read(head);
        }
    }
}

/// What a connection's task is given besides its socket.
struct ConnTask {
    peer: SocketAddr,
    router: Router,
    timeouts: ConnTimeouts,
    /// Closes this connection (the maintain API).
    close: CancellationToken,
    /// Asks it to finish and close (shutdown).
    stop: CancellationToken,
    /// Closes it at once (the grace period is over).
    kill: CancellationToken,
}

async fn serve_connection(stream: TcpStream, task: ConnTask, tracked: &Tracked) {
    let start = Instant::now();
    let head = match read_first_head(&stream, task.timeouts, &task.close, &task.stop, &task.kill)
        .await
    {
        Head::Read(head) => head,
        Head::Gone => return,
        Head::TimedOut => {
            tracing::debug!(peer = %task.peer, "closing a connection that sent no request head in time");
            tracked
                .metrics
                .closed
                .with_label_values(&[&tracked.protocol, "header_timeout"])
                .inc();
            return;
        }
    };
    // Boxed, so that a connection still waiting for its head holds only the small future above.
    Box::pin(serve_http(stream, head, start, task, tracked)).await;
}

async fn serve_http(
    stream: TcpStream,
    head: Vec<u8>,
    start: Instant,
    task: ConnTask,
    tracked: &Tracked,
) {
    let ConnTask {
        peer,
        router,
        timeouts,
        close,
        stop,
        kill,
    } = task;
    let activity = Arc::new(Activity::default());
    activity.touch(start);
    let io = TokioIo::new(Watched {
        inner: stream,
        head,
        head_read: 0,
        activity: activity.clone(),
        start,
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        requests.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(requests.clone(), start);
        request.extensions_mut().insert(ConnectInfo(peer));
        let request = request.map(Body::new);
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(guard);
            response
        }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
    let mut ticks = tokio::time::interval((timeouts.idle / 4).max(Duration::from_millis(50)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut finishing = false;
    loop {
        tokio::select! {
            // The connection first: its first poll reads the head already here and starts the
            // request, so a shutdown noticed below finds it in flight (served, then closed).
            biased;
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            // Closed through the maintain API (counted there) or the grace period is over:
            // drop the connection, whatever it is doing.
            _ = close.cancelled() => return,
            _ = kill.cancelled() => return,
            _ = stop.cancelled(), if !finishing => {
                finishing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = ticks.tick(), if !finishing => {
                if activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.idle_for(start) >= timeouts.idle
                {
                    tracing::debug!(%peer, "closing an idle connection");
                    tracked
                        .metrics
                        .closed
                        .with_label_values(&[&tracked.protocol, "idle"])
                        .inc();
                    finishing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::io::{Read, Write};

    /// A server on 127.0.0.1 with `limits` and `timeouts`; its shutdown trigger.
    async fn server(
        limits: ConnLimits,
        timeouts: ConnTimeouts,
    ) -> (
        SocketAddr,
        Connections,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Connections::new(&Registry::new()).unwrap();
        let router = Router::new()
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    "done"
                }),
            );
        let stop = CancellationToken::new();
        let config = ListenerConfig {
            protocol: "http".into(),
            limits,
            timeouts,
        };
        let served = {
            let connections = connections.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                serve(
                    listener,
                    router,
                    &connections,
                    config,
                    stop.cancelled_owned(),
                )
                .await
                .unwrap();
            })
        };
        // The listener registers at once; wait until it has.
        while connections.count("http", None).is_none() {
            tokio::task::yield_now().await;
        }
        (addr, connections, stop, served)
    }

    /// A keep-alive client connection from `from` (a loopback address).
    fn connect_from(from: &str, to: SocketAddr) -> std::net::TcpStream {
        let local: SocketAddr = format!("{from}:0").parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stream = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(local).unwrap();
            socket.connect(to).await.unwrap()
        });
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    /// One keep-alive GET on `stream`; the body.
    fn get_on(stream: &mut std::net::TcpStream, path: &str) -> String {
        write!(stream, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed before the response");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    return body[..len].to_string();
                }
            }
        }
    }

    /// Whether the server closed `stream` (EOF or reset within the read timeout).
    fn closed(stream: &mut std::net::TcpStream) -> bool {
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    #[tokio::test]
    async fn connections_are_counted_by_host_from_the_accept_loop() {
        let (addr, connections, stop, served) =
            server(ConnLimits::default(), ConnTimeouts::default()).await;
        let clients = blocking(move || {
            let mut a = connect_from("127.0.0.2", addr);
            let mut b = connect_from("127.0.0.2", addr);
            let mut c = connect_from("127.0.0.3", addr);
            // The handler sees the peer the listener accepted.
            assert!(get_on(&mut a, "/peer").starts_with("127.0.0.2:"));
            get_on(&mut b, "/peer");
            get_on(&mut c, "/peer");
            (a, b, c)
        })
        .await;
        let count = connections.count("http", None).unwrap();
        assert_eq!(count.total, 3);
        assert_eq!(count.hosts["127.0.0.2"], 2);
        assert_eq!(count.hosts["127.0.0.3"], 1);
        let one = connections
            .count("http", Some("127.0.0.9".parse().unwrap()))
            .unwrap();
        assert_eq!(one.hosts, BTreeMap::from([("127.0.0.9".to_string(), 0)]));
        let (total, stats, before) = connections.stats("http", None, 2).unwrap();
        assert_eq!((total, before), (3, 2));
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].host.to_string(), "127.0.0.2");
        assert_eq!(stats[0].actives.len(), 2);
        assert!(connections.count("grpc", None).is_none());
        drop(clients);
        // The closes are seen by the server: the count drops to 0, the hosts stay with 0.
        let deadline = Instant::now() + Duration::from_secs(5);
        while connections.count("http", None).unwrap().total > 0 {
            assert!(Instant::now() < deadline, "connections not released");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            connections.count("http", None).unwrap().hosts["127.0.0.2"],
            0
        );
        stop.cancel();
        served.await.unwrap();
    }

    #[tokio::test]
    async fn closing_a_host_closes_only_its_connections_and_a_port_only_that_one() {
        let (addr, connections, stop, served) =
            server(ConnLimits::default(), ConnTimeouts::default()).await;
        let (a1, a2, b) = blocking(move || {
            let mut a1 = connect_from("127.0.0.2", addr);
            let mut a2 = connect_from("127.0.0.2", addr);
            let mut b = connect_from("127.0.0.3", addr);
            for s in [&mut a1, &mut a2, &mut b] {
                get_on(s, "/peer");
            }
            (a1, a2, b)
        })
        .await;
        let port = a1.local_addr().unwrap().port();
        let closed_count = connections
            .close("http", "127.0.0.2".parse().unwrap(), Some(port))
            .await
            .unwrap();
        assert_eq!(closed_count, 1);
        let (a1, a2, b) = blocking(move || {
            let (mut a1, mut a2, b) = (a1, a2, b);
            assert!(closed(&mut a1), "the named port's connection stays open");
            assert!(get_on(&mut a2, "/peer").starts_with("127.0.0.2:"));
            (a1, a2, b)
        })
        .await;
        assert_eq!(
            connections
                .close("http", "127.0.0.2".parse().unwrap(), None)
                .await
                .unwrap(),
            1
        );
        blocking(move || {
            let (_a1, mut a2, mut b) = (a1, a2, b);
            assert!(closed(&mut a2));
            // The other host's keep-alive connection still serves.
            assert!(get_on(&mut b, "/peer").starts_with("127.0.0.3:"));
        })
        .await;
        assert_eq!(
            connections
                .close("nope", "127.0.0.2".parse().unwrap(), None)
                .await,
            None
        );
        stop.cancel();
        served.await.unwrap();
    }

    #[tokio::test]
    async fn connections_over_the_limits_are_refused_at_accept_and_counted() {
        let registry_probe = ConnLimits {
            per_host: 2,
            total: 3,
            exempt: vec!["127.0.0.4".parse().unwrap()],
        };
        let (addr, connections, stop, served) =
            server(registry_probe, ConnTimeouts::default()).await;
        let metrics = connections.metrics.clone();
        blocking(move || {
            let mut a1 = connect_from("127.0.0.2", addr);
            let mut a2 = connect_from("127.0.0.2", addr);
            get_on(&mut a1, "/peer");
            get_on(&mut a2, "/peer");
            // A third from the same host: refused politely and closed.
            let mut a3 = connect_from("127.0.0.2", addr);
            let mut answer = String::new();
            let _ = a3.read_to_string(&mut answer);
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
            // Another host still gets in, up to the total of 3 ...
            let mut b = connect_from("127.0.0.3", addr);
            get_on(&mut b, "/peer");
            // ... and then nobody, not even an exempt host.
            let mut c = connect_from("127.0.0.4", addr);
            let mut answer = String::new();
            let _ = c.read_to_string(&mut answer);
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
            drop((a1, a2, b));
        })
        .await;
        assert_eq!(
            metrics
                .refused
                .with_label_values(&["http", "per_host"])
                .get(),
            1
        );
        assert_eq!(
            metrics.refused.with_label_values(&["http", "total"]).get(),
            1
        );
        stop.cancel();
        served.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_sending_no_head_or_idling_is_closed_after_its_timeout() {
        let timeouts = ConnTimeouts {
            header_read: Duration::from_millis(300),
            idle: Duration::from_millis(300),
            grace: Duration::from_secs(1),
        };
        let (addr, connections, stop, served) = server(ConnLimits::default(), timeouts).await;
        blocking(move || {
            // Half a request head, then nothing.
            let mut slow = connect_from("127.0.0.2", addr);
            slow.write_all(b"GET /peer HTTP/1.1\r\nhos").unwrap();
            // A served keep-alive client that then stays idle.
            let mut idle = connect_from("127.0.0.3", addr);
            get_on(&mut idle, "/peer");
            let started = Instant::now();
            assert!(closed(&mut slow));
            assert!(closed(&mut idle));
            assert!(started.elapsed() < Duration::from_secs(3));
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while connections.count("http", None).unwrap().total > 0 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        served.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_finishes_requests_in_flight_and_closes_the_rest_after_the_grace() {
        let timeouts = ConnTimeouts {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(30),
            grace: Duration::from_millis(1500),
        };
        let (addr, _connections, stop, served) = server(ConnLimits::default(), timeouts).await;
        let in_flight = tokio::task::spawn_blocking(move || {
            let mut s = connect_from("127.0.0.2", addr);
            get_on(&mut s, "/slow")
        });
        // A client holding a half-sent head, which would otherwise keep the server up.
        let stuck = blocking(move || {
            let mut s = connect_from("127.0.0.3", addr);
            s.write_all(b"GET /peer HTTP/1.1\r\n").unwrap();
            s
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        stop.cancel();
        // Nothing new is accepted once the loop stopped.
        assert_eq!(in_flight.await.unwrap(), "done");
        served.await.unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1400), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert!(std::net::TcpStream::connect(addr).is_err());
        blocking(move || {
            let mut stuck = stuck;
            assert!(closed(&mut stuck));
        })
        .await;
    }
}
