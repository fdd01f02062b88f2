//! Worker threads: each runs a single-threaded tokio runtime that owns its
//! listeners, its client connections and its own connections to every server.
//! Nothing on the request path is shared between workers; what is process-wide
//! (configuration, routing tables, client counts) is in [`PoolShared`].

use crate::client;
use crate::conf::{PoolConf, ReadFrom, ServerAddr, ServerConf};
use crate::health::PoolHealth;
use crate::net::{StdListener, Stream};
use crate::proto::redis::request::{put_array_header, put_bulk};
use crate::route::Router;
use crate::server::{Backend, Dialect, HealthSink, ServerSlot};
use crate::stats::metrics::{PoolField, PoolStats, WorkerStats};
use bytes::Bytes;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every worker shares about a pool: one version of it (a reload that
/// changes the pool makes a new one, see [`PoolShared::succeed`]).
#[derive(Debug)]
pub struct PoolShared {
    pub conf: PoolConf,
    pub router: Router,
    pub health: Arc<PoolHealth>,
    /// Open client connections, across workers and versions (enforces
    /// `client_connections`).
    pub clients: Arc<AtomicU32>,
    /// Worker accept loops running for the pool (`/healthz`).
    pub listening: Arc<AtomicUsize>,
    /// Per server (in server order): the replicas Sentinel names, that
    /// were found healthy ([`crate::sentinel`]); read from with `read_from`.
    pub replicas: Vec<Vec<ServerAddr>>,
    /// `redis_cluster`: rung by workers when the slot map looks stale (a
    /// `MOVED`, a node that fails); the follower refreshes it
    /// ([`crate::cluster`]). The same across versions.
    pub cluster_refresh: Arc<tokio::sync::Notify>,
}

impl PoolShared {
    pub fn new(conf: PoolConf) -> PoolShared {
        let router = Router::new(
            conf.distribution,
            conf.hash,
            conf.hash_tag,
            conf.nodes(),
            conf.cluster_slots.clone(),
        );
        let health = Arc::new(PoolHealth::new(
            conf.auto_eject_hosts,
            conf.server_failure_limit,
            conf.server_retry_timeout,
            conf.servers.len(),
        ));
        let replicas = vec![Vec::new(); conf.servers.len()];
        PoolShared {
            conf,
            router,
            health,
            clients: Arc::default(),
            listening: Arc::default(),
            replicas,
            cluster_refresh: Arc::default(),
        }
    }

    /// Whether read-only commands may go to replicas.
    #[inline]
    pub fn reads_replicas(&self) -> bool {
        self.conf.read_from != ReadFrom::Master
    }

    /// The next version of `prev`'s pool, with a new configuration: new
    /// routing and health; the client count, the listeners' count and the
    /// ejection count go on.
    pub fn succeed(conf: PoolConf, prev: &PoolShared) -> PoolShared {
        let mut next = PoolShared::new(conf);
        next.clients = prev.clients.clone();
        next.listening = prev.listening.clone();
        next.cluster_refresh = prev.cluster_refresh.clone();
        next.health.ejects.store(
            prev.health.ejects.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        // A server keeps its replicas (by name) until Sentinel says otherwise.
        for (i, s) in next.conf.servers.iter().enumerate() {
            if let Some(j) = prev.conf.servers.iter().position(|p| p.name == s.name) {
                next.replicas[i] = prev.replicas.get(j).cloned().unwrap_or_default();
            }
        }
        next
    }

    /// What the stats side needs to know about the pool.
    pub fn meta(&self) -> crate::stats::PoolMeta {
        crate::stats::PoolMeta {
            name: self.conf.name.clone(),
            servers: self.conf.servers.iter().map(|s| s.name.clone()).collect(),
            addresses: self
                .conf
                .servers
                .iter()
                .map(|s| s.addr.to_string())
                .collect(),
            health: self.health.clone(),
            listening: self.listening.clone(),
            replicas: self
                .replicas
                .iter()
                .map(|r| r.iter().map(|a| a.to_string()).collect())
                .collect(),
        }
    }
}

impl HealthSink for PoolShared {
    fn failed(&self, server: usize) {
        if !self.conf.seeds.is_empty() {
            // A cluster node that fails: the map may have changed.
            self.cluster_refresh.notify_one();
            return;
        }
        self.health.failed(&self.router, server);
    }

    #[inline]
    fn replied(&self, server: usize) {
        self.health.replied(server);
    }
}

/// A pool as one worker sees it across reloads: the version new clients
/// take, and that existing clients move to between requests (see
/// [`crate::client::Session::refresh_pool`]).
#[derive(Debug)]
pub struct PoolCell {
    current: std::cell::RefCell<Rc<PoolLocal>>,
}

impl PoolCell {
    pub fn new(pool: Rc<PoolLocal>) -> PoolCell {
        PoolCell {
            current: std::cell::RefCell::new(pool),
        }
    }

    /// The pool's current version.
    #[inline]
    pub fn current(&self) -> Rc<PoolLocal> {
        self.current.borrow().clone()
    }

    /// `pool` is the current version.
    #[inline]
    pub fn is_current(&self, pool: &Rc<PoolLocal>) -> bool {
        Rc::ptr_eq(&self.current.borrow(), pool)
    }

    /// Makes `next` current; the previous version's server connections
    /// close once they have delivered what they carry.
    fn replace(&self, next: Rc<PoolLocal>) {
        let prev = self.current.replace(next);
        for s in &prev.servers {
            s.retire();
        }
        for r in prev.replicas.iter().flatten() {
            r.slot.retire();
        }
        for (_, s) in prev.extra.borrow().iter() {
            s.retire();
        }
    }
}

/// One change of a reload, for one worker.
#[derive(Debug)]
pub enum Change {
    /// A pool's new version (same listener).
    Update(Arc<PoolShared>),
    /// A new pool: this worker's listener for it, and its metrics.
    Add(Arc<PoolShared>, StdListener, Arc<PoolStats>),
    /// A pool whose listener changed: its new version and this worker's new
    /// listener. The old listener stops accepting; its clients drain.
    Relisten(Arc<PoolShared>, StdListener),
    /// A pool removed: its listener stops accepting; its clients drain.
    Remove(String),
    /// A pool's new version after a Sentinel failover: the old version's
    /// connections close at once (what is in flight there fails) instead of
    /// draining, so a demoted master acknowledges nothing more.
    Failover(Arc<PoolShared>),
}

/// A reload for one worker.
#[derive(Debug)]
pub struct Reload {
    pub changes: Vec<Change>,
    /// How long the clients of a listener that stopped accepting are served
    /// before they are closed (`--drain-timeout`).
    pub drain: Duration,
}

/// A pool as one worker sees it: the shared part, this worker's servers and
/// this worker's metrics.
#[derive(Debug)]
pub struct PoolLocal {
    pub shared: Arc<PoolShared>,
    pub servers: Vec<ServerSlot>,
    pub stats: Arc<PoolStats>,
    pub worker: Arc<WorkerStats>,
    /// Server connections this worker's clients have pinned in the pool
    /// (bounded by `session_connections`).
    pub pinned: std::cell::Cell<u32>,
    /// Per server: this worker's connections to its replicas.
    pub replicas: Vec<Vec<Rc<Replica>>>,
    /// Round-robin position among a server's replicas.
    next_replica: std::cell::Cell<usize>,
    /// `redis_cluster`: where this worker's redirections go (the same
    /// across versions).
    pub redirector: Option<Rc<Redirector>>,
    /// `redis_cluster`: nodes a redirection named that the slot map does
    /// not have yet, connected on demand.
    extra: std::cell::RefCell<Vec<(String, Rc<ServerSlot>)>>,
}

/// Most cluster redirections one request follows.
pub const MAX_REDIRECTS: u8 = 5;
/// How long a request that got `TRYAGAIN` waits before it is sent again.
pub const TRYAGAIN_DELAY: Duration = Duration::from_millis(50);

/// A cluster pool's redirections in one worker: `MOVED` and `ASK` replies
/// send the request to the node they name (and a `MOVED` asks for a new
/// slot map); `TRYAGAIN` sends it again shortly. The client sees none of
/// them, unless a request is redirected more than [`MAX_REDIRECTS`] times.
#[derive(Debug)]
pub struct Redirector {
    cell: std::cell::RefCell<std::rc::Weak<PoolCell>>,
    refresh: Arc<tokio::sync::Notify>,
}

impl Redirector {
    fn new(shared: &PoolShared) -> Option<Rc<Redirector>> {
        (!shared.conf.seeds.is_empty()).then(|| {
            Rc::new(Redirector {
                cell: Default::default(),
                refresh: shared.cluster_refresh.clone(),
            })
        })
    }
}

impl crate::server::Redirect for Redirector {
    fn redirect(
        &self,
        to: crate::server::Redirection,
        from: &ServerAddr,
        data: Bytes,
        slot: Rc<crate::msg::Slot>,
        dialect: crate::server::Dialect,
    ) -> bool {
        use crate::server::Redirection as R;
        let Some(cell) = self.cell.borrow().upgrade() else {
            return false;
        };
        let pool = cell.current();
        let kind = match &to {
            R::Moved(_) => 0,
            R::Ask(_) => 1,
            R::TryAgain => 2,
            R::Down => {
                self.refresh.notify_one();
                return false;
            }
        };
        if slot.hop() > MAX_REDIRECTS {
            slot.fill(Ok(Bytes::from(format!(
                "-ERR the cluster redirected this request more than {MAX_REDIRECTS} times\r\n"
            ))));
            return true;
        }
        pool.stats.redirects[kind].incr();
        // A node that cannot be reached by its address: the reply goes to
        // the client as it came (false), or, later, an error — never
        // nothing.
        match to {
            R::Moved(addr) => {
                self.refresh.notify_one();
                pool.node(&addr, |n| {
                    n.send_in(dialect, data, slot, std::time::Instant::now())
                })
            }
            R::Ask(addr) => pool.node(&addr, |n| n.send_asking(dialect, data, slot)),
            R::Down => false,
            R::TryAgain => {
                let addr = from.to_string();
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(TRYAGAIN_DELAY).await;
                    let pool = cell.current();
                    let failed = slot.clone();
                    let sent = pool.node(&addr, |n| {
                        n.send_in(dialect, data, slot, std::time::Instant::now())
                    });
                    if !sent {
                        failed.fill(Err(crate::msg::ErrKind::HostDown));
                    }
                });
                true
            }
        }
    }
}

impl PoolLocal {
    /// Runs `f` with the server slot of the node at `addr` (`host:port`):
    /// a server of the slot map, or one connected on demand; false (and `f`
    /// not run) when `addr` is not `host:port`.
    pub fn node(&self, addr: &str, f: impl FnOnce(&ServerSlot)) -> bool {
        if let Some(s) = self.servers.iter().find(|s| s.name() == addr) {
            f(s);
            return true;
        }
        let found = self
            .extra
            .borrow()
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, s)| s.clone());
        let slot = match found {
            Some(s) => s,
            None => {
                let Some((host, port)) = addr.rsplit_once(':') else {
                    return false;
                };
                let Ok(port) = port.parse() else {
                    return false;
                };
                let conf = ServerConf {
                    spec: format!("{addr}:1"),
                    name: addr.to_string(),
                    named: false,
                    addr: ServerAddr::Tcp {
                        host: host.to_string(),
                        port,
                    },
                    weight: 1,
                };
                let mut b = node(&self.shared, &conf, &self.worker);
                b.redirect = self
                    .redirector
                    .clone()
                    .map(|r| r as Rc<dyn crate::server::Redirect>);
                let s = Rc::new(ServerSlot::new(b, self.shared.conf.server_connections));
                self.extra.borrow_mut().push((addr.to_string(), s.clone()));
                s
            }
        };
        f(&slot);
        true
    }
}

/// A replica of a server, as one worker reads from it.
#[derive(Debug)]
pub struct Replica {
    pub slot: ServerSlot,
    /// After a failed read: not read from before this (`server_retry_timeout`).
    down_until: std::cell::Cell<Option<std::time::Instant>>,
}

impl Replica {
    /// A read failed here: skip it for `server_retry_timeout`.
    pub fn failed(&self, retry: Duration) {
        self.down_until.set(Some(std::time::Instant::now() + retry));
    }

    fn usable(&self, now: std::time::Instant) -> bool {
        self.down_until.get().is_none_or(|t| now >= t)
    }
}

impl PoolLocal {
    /// A replica of server `idx` to read from (round-robin over those not
    /// recently failed).
    pub fn pick_replica(&self, idx: usize) -> Option<&Rc<Replica>> {
        let rs = self.replicas.get(idx)?;
        if rs.is_empty() {
            return None;
        }
        let start = self.next_replica.get();
        self.next_replica.set(start.wrapping_add(1));
        let now = std::time::Instant::now();
        (0..rs.len())
            .map(|k| &rs[(start + k) % rs.len()])
            .find(|r| r.usable(now))
    }
}

/// Replicas report no health to the pool: their failures never eject the
/// master (a failed read is retried elsewhere, see [`Replica::failed`]).
#[derive(Debug)]
struct NoHealth;

impl HealthSink for NoHealth {
    fn failed(&self, _: usize) {}
    fn replied(&self, _: usize) {}
}

fn command(args: &[&[u8]]) -> Bytes {
    let mut out = Vec::new();
    put_array_header(&mut out, args.len());
    for a in args {
        put_bulk(&mut out, a);
    }
    out.into()
}

fn backend(
    pool: &Arc<PoolShared>,
    index: usize,
    s: &ServerConf,
    stats: &PoolStats,
    worker: &Arc<WorkerStats>,
) -> Backend {
    let mut b = node(pool, s, worker);
    b.index = index;
    b.health = pool.clone();
    b.stats = stats.servers.load().get(index).cloned().unwrap_or_default();
    b
}

/// A replica of server `s`, at `addr`: its own (unreported) connection
/// metrics, no health.
fn replica_backend(
    pool: &Arc<PoolShared>,
    s: &ServerConf,
    addr: &ServerAddr,
    worker: &Arc<WorkerStats>,
) -> Backend {
    let mut b = node(pool, s, worker);
    b.addr = addr.clone();
    b.name = format!("{} replica {addr}", s.name);
    if !pool.conf.seeds.is_empty() {
        // A cluster replica serves reads only on a READONLY connection.
        for p in b.preamble.iter_mut() {
            p.push(command(&[b"READONLY"]));
        }
    }
    b
}

/// A data node of the pool (a server or a replica of one).
fn node(pool: &Arc<PoolShared>, s: &ServerConf, worker: &Arc<WorkerStats>) -> Backend {
    let conf = &pool.conf;
    let mut preamble = [Vec::new(), Vec::new(), Vec::new()];
    if conf.redis {
        for (dialect, p) in preamble.iter_mut().enumerate() {
            match (&conf.redis_username, &conf.redis_auth) {
                (Some(user), Some(pw)) => {
                    p.push(command(&[b"AUTH", user.as_bytes(), pw.as_bytes()]))
                }
                (None, Some(pw)) => p.push(command(&[b"AUTH", pw.as_bytes()])),
                _ => {}
            }
            if dialect == Dialect::Resp3 as usize {
                p.push(command(&[b"HELLO", b"3"]));
            }
            if conf.redis_db > 0 {
                p.push(command(&[
                    b"SELECT",
                    itoa::Buffer::new().format(conf.redis_db).as_bytes(),
                ]));
            }
        }
    }
    Backend {
        index: 0,
        health: Arc::new(NoHealth),
        proto: crate::msg::Protocol::of(conf.redis),
        addr: s.addr.clone(),
        name: s.name.clone(),
        timeout: conf.timeout,
        preamble,
        stats: Arc::default(),
        worker: worker.clone(),
        tls: conf.tls_loaded.as_ref().and_then(|t| t.connector.clone()),
        redirect: None,
    }
}

/// SIGINT/SIGTERM as the workers see it. Client loops check a flag (one
/// load per wake-up) and park on the token only once: re-polling a
/// `CancellationToken` future takes its mutex every time.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Shutdown {
    /// Stops every worker: the flag first, so a task woken by the token sees it.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    #[inline]
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

const TOO_MANY: &[u8] = b"-ERR max number of clients reached\r\n";

/// How long in-flight requests get to finish after SIGINT/SIGTERM.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// This worker's view of one version of a pool: its server slots (each
/// with its connections), its metrics.
fn local(
    shared: Arc<PoolShared>,
    pool_stats: Arc<PoolStats>,
    stats: &Arc<WorkerStats>,
    prev: Option<&PoolLocal>,
) -> PoolLocal {
    let redirector = match prev {
        Some(p) => p.redirector.clone(),
        None => Redirector::new(&shared),
    };
    let servers = shared
        .conf
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let pins = prev
                .and_then(|p| p.servers.iter().find(|x| x.name() == s.name))
                .map(ServerSlot::pins)
                .unwrap_or_default();
            let mut b = backend(&shared, i, s, &pool_stats, stats);
            b.redirect = redirector
                .clone()
                .map(|r| r as Rc<dyn crate::server::Redirect>);
            ServerSlot::new(b, shared.conf.server_connections).with_pins(pins)
        })
        .collect();
    let replicas = shared
        .conf
        .servers
        .iter()
        .zip(&shared.replicas)
        .map(|(s, addrs)| {
            addrs
                .iter()
                .map(|a| {
                    let mut b = replica_backend(&shared, s, a, stats);
                    b.redirect = redirector
                        .clone()
                        .map(|r| r as Rc<dyn crate::server::Redirect>);
                    Rc::new(Replica {
                        slot: ServerSlot::new(b, shared.conf.server_connections),
                        down_until: Default::default(),
                    })
                })
                .collect()
        })
        .collect();
    let pool = PoolLocal {
        shared,
        servers,
        stats: pool_stats,
        worker: stats.clone(),
        pinned: Default::default(),
        replicas,
        next_replica: Default::default(),
        redirector,
        extra: Default::default(),
    };
    if pool.shared.conf.preconnect {
        for s in &pool.servers {
            s.preconnect();
        }
        if pool.shared.reads_replicas() {
            for r in pool.replicas.iter().flatten() {
                r.slot.preconnect();
            }
        }
    }
    pool
}

/// The cell of a pool's first version (its redirector, if any, learns it).
fn new_cell(first: PoolLocal) -> Rc<PoolCell> {
    let redirector = first.redirector.clone();
    let cell = Rc::new(PoolCell::new(Rc::new(first)));
    if let Some(r) = redirector {
        *r.cell.borrow_mut() = Rc::downgrade(&cell);
    }
    cell
}

/// A pool in one worker: its versions' cell, and the accept loop of its
/// listener with the clients it accepted.
struct WorkerPool {
    name: String,
    cell: Rc<PoolCell>,
    accepting: Accepting,
}

/// One listener's accept loop: `stop` ends it; `clients` is what its
/// clients see as shutdown (the process's, or the end of their drain).
struct Accepting {
    stop: CancellationToken,
    clients: Shutdown,
}

impl Accepting {
    fn start(
        listeners: Vec<StdListener>,
        cell: Rc<PoolCell>,
        tracker: &TaskTracker,
        groups: &mut Vec<Shutdown>,
    ) -> Accepting {
        let stop = CancellationToken::new();
        let clients = Shutdown::default();
        groups.push(clients.clone());
        for listener in listeners {
            match Listener::new(listener) {
                Ok(l) => {
                    tokio::task::spawn_local(accept_loop(
                        l,
                        cell.clone(),
                        stop.clone(),
                        clients.clone(),
                        tracker.clone(),
                    ));
                }
                Err(e) => tracing::error!(
                    "pool '{}': cannot register listener: {e}",
                    cell.current().shared.conf.name
                ),
            }
        }
        Accepting { stop, clients }
    }

    /// Stops accepting; the clients are closed after `drain` unless they
    /// leave first.
    fn retire(self, name: &str, drain: Duration) {
        self.stop.cancel();
        let name = name.to_string();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(drain).await;
            if !self.clients.is_set() {
                tracing::info!(
                    "pool '{name}': closing the clients of a retired listener after {drain:?}"
                );
                self.clients.trigger();
            }
        });
    }
}

/// Runs one worker until `shutdown`, then drains its clients; applies the
/// reloads it is sent meanwhile.
pub fn run(
    pools: Vec<(Arc<PoolShared>, Vec<StdListener>)>,
    stats: Arc<WorkerStats>,
    shutdown: Shutdown,
    mut reloads: tokio::sync::mpsc::UnboundedReceiver<Reload>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local_set = tokio::task::LocalSet::new();
    local_set.block_on(&rt, async move {
        let tracker = TaskTracker::new();
        // Every client group, so that shutdown reaches draining ones too.
        let mut groups: Vec<Shutdown> = Vec::new();
        let mut live: Vec<WorkerPool> = Vec::with_capacity(pools.len());
        let initial = stats.pools.load_full();
        for (index, (shared, listeners)) in pools.into_iter().enumerate() {
            let pool_stats = initial
                .get(index)
                .cloned()
                .unwrap_or_else(|| Arc::new(PoolStats::new(shared.conf.servers.len())));
            let name = shared.conf.name.clone();
            let cell = new_cell(local(shared, pool_stats, &stats, None));
            let accepting = Accepting::start(listeners, cell.clone(), &tracker, &mut groups);
            live.push(WorkerPool {
                name,
                cell,
                accepting,
            });
        }
        loop {
            tokio::select! {
                _ = shutdown.token().cancelled() => break,
                Some(reload) = reloads.recv() => {
                    apply(reload, &mut live, &stats, &tracker, &mut groups);
                }
            }
        }
        for g in &groups {
            g.trigger();
        }
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "{} client connection(s) still busy after {:?}; closing them",
                tracker.len(),
                DRAIN_TIMEOUT
            );
        }
    });
    Ok(())
}

/// Applies a reload's changes to this worker's pools.
fn apply(
    reload: Reload,
    live: &mut Vec<WorkerPool>,
    stats: &Arc<WorkerStats>,
    tracker: &TaskTracker,
    groups: &mut Vec<Shutdown>,
) {
    groups.retain(|g| !g.is_set());
    for change in reload.changes {
        match change {
            Change::Update(shared) => {
                if let Some(p) = live.iter().find(|p| p.name == shared.conf.name) {
                    let prev = p.cell.current();
                    let next = local(shared, prev.stats.clone(), stats, Some(&prev));
                    p.cell.replace(Rc::new(next));
                }
            }
            Change::Failover(shared) => {
                if let Some(p) = live.iter().find(|p| p.name == shared.conf.name) {
                    let prev = p.cell.current();
                    let next = local(shared, prev.stats.clone(), stats, Some(&prev));
                    // The servers that moved: their connections close now,
                    // pinned ones of every version included (the others
                    // drain, as in any new version).
                    let moved: Vec<usize> = (0..prev.servers.len())
                        .filter(|&i| {
                            next.servers.get(i).map(ServerSlot::addr)
                                != Some(prev.servers[i].addr())
                        })
                        .collect();
                    p.cell.replace(Rc::new(next));
                    for i in moved {
                        prev.servers[i].close_all();
                    }
                }
            }
            Change::Relisten(shared, listener) => {
                if let Some(p) = live.iter_mut().find(|p| p.name == shared.conf.name) {
                    let prev = p.cell.current();
                    let next = local(shared, prev.stats.clone(), stats, Some(&prev));
                    p.cell.replace(Rc::new(next));
                    let next = Accepting::start(vec![listener], p.cell.clone(), tracker, groups);
                    std::mem::replace(&mut p.accepting, next).retire(&p.name, reload.drain);
                }
            }
            Change::Add(shared, listener, pool_stats) => {
                let name = shared.conf.name.clone();
                let cell = new_cell(local(shared, pool_stats, stats, None));
                let accepting = Accepting::start(vec![listener], cell.clone(), tracker, groups);
                live.push(WorkerPool {
                    name,
                    cell,
                    accepting,
                });
            }
            Change::Remove(name) => {
                if let Some(i) = live.iter().position(|p| p.name == name) {
                    // Its clients keep the pool's last version until they
                    // leave or their drain ends.
                    let p = live.remove(i);
                    p.accepting.retire(&p.name, reload.drain);
                }
            }
        }
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    fn new(l: StdListener) -> std::io::Result<Listener> {
        Ok(match l {
            StdListener::Tcp(l) => Listener::Tcp(tokio::net::TcpListener::from_std(l)?),
            StdListener::Unix(l) => Listener::Unix(tokio::net::UnixListener::from_std(l)?),
        })
    }

    async fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Listener::Unix(l) => Ok(Stream::Unix(l.accept().await?.0)),
        }
    }
}

async fn accept_loop(
    listener: Listener,
    cell: Rc<PoolCell>,
    stop: CancellationToken,
    shutdown: Shutdown,
    tracker: TaskTracker,
) {
    let listening = cell.current().shared.listening.clone();
    listening.fetch_add(1, Ordering::Relaxed);
    let _down = scopeguard(move || {
        listening.fetch_sub(1, Ordering::Relaxed);
    });
    loop {
        let stream = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.token().cancelled() => return,
            _ = stop.cancelled() => return,
        };
        let pool = cell.current();
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("pool '{}': accept failed: {e}", pool.shared.conf.name);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Stream::Tcp(s) = &stream {
            if pool.shared.conf.tcpkeepalive {
                let _ = socket2::SockRef::from(s).set_keepalive(true);
            }
        }
        let limit = pool.shared.conf.client_connections;
        let n = pool.shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
        let pool2 = pool.clone();
        let cell2 = cell.clone();
        let shutdown2 = shutdown.clone();
        let acceptor = pool
            .shared
            .conf
            .tls_loaded
            .as_ref()
            .and_then(|t| t.acceptor.clone());
        tracker.spawn_local(async move {
            let stream = match (acceptor, stream) {
                (Some(acceptor), Stream::Tcp(tcp)) => {
                    let peer = tcp
                        .peer_addr()
                        .map_or_else(|_| "an unknown peer".into(), |a| a.to_string());
                    match crate::tls::accept(&acceptor, tcp).await {
                        Ok(s) => Some(Stream::Tls(Box::new(s))),
                        Err(e) => {
                            crate::tls::failed(crate::tls::Side::Client, &e, |why| {
                                tracing::warn!(
                                    "pool '{}': TLS handshake with client {peer} failed ({why}): {e}",
                                    pool2.shared.conf.name
                                );
                            });
                            None
                        }
                    }
                }
                (_, s) => Some(s),
            };
            if let Some(stream) = stream {
                serve_accepted(stream, &pool2, cell2, shutdown2, limit, n).await;
            }
            pool2.shared.clients.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Serves (or refuses, over `client_connections`) an accepted client.
async fn serve_accepted(
    stream: Stream,
    pool: &Rc<PoolLocal>,
    cell: Rc<PoolCell>,
    shutdown: Shutdown,
    limit: u32,
    n: u32,
) {
    if limit > 0 && n > limit {
        return refuse(stream).await;
    }
    let (w, p) = (&pool.worker, &pool.stats);
    w.opened();
    p.get(PoolField::ClientConnections).incr();
    let end = client::serve(stream, cell, shutdown).await;
    // Header count first: a reader that sees the pool gauge at 0
    // sees the connection gone from `curr_connections` too (the stats
    // snapshot reads them in the other order, after an Acquire fence).
    w.closed();
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    p.get(PoolField::ClientConnections).decr();
    match end {
        client::End::Eof => p.get(PoolField::ClientEof).incr(),
        client::End::Error => p.get(PoolField::ClientErr).incr(),
        client::End::Shutdown => {}
    }
}

/// Runs `f` when dropped (also when the task is cancelled at shutdown).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Over `client_connections`: say why, then close.
async fn refuse(stream: Stream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut off = 0;
        while off < TOO_MANY.len() {
            if stream.writable().await.is_err() {
                return;
            }
            match stream.try_write_vectored(&[std::io::IoSlice::new(&TOO_MANY[off..])]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}
