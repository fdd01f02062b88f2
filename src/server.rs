//! Server connections: one task per backend connection, owned by a worker.
//!
//! Requests from every client of the worker are queued on a connection, written
//! in batches with vectored writes, and matched to replies strictly FIFO. On a
//! new connection the proxy first sends `AUTH` (if `redis_auth`) and then
//! `SELECT` (if `redis_db` > 0), swallowing their replies — AUTH first, so both
//! work together (nutcracker sends SELECT first and silently loses the db).
//!
//! Any failure (connect error, reset, EOF, unparsable reply, transient error,
//! timeout) closes the connection and fails every request queued or in flight
//! on it with one error each; the next request opens a new connection.

use crate::conf::ServerAddr;
use crate::msg::{ErrKind, Frame, Protocol, Sink, Slot, Wake};
use crate::net::{self, Stream, WriteQueue};
use crate::proto::memcache;
use crate::proto::redis::pubsub;
use crate::proto::redis::reply::{is_transient_error, scan_frame, scan_reply};
use crate::proto::Scan;
use crate::stats::metrics::{ServerField as F, ServerStats, WorkerStats};
use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

/// Where a request's reply goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// To the client that sent it.
    Slot(Rc<Slot>),
    /// To the client, after a memcache request that ends with `mn`: its
    /// reply is every reply up to and including the `MN` (a quiet meta
    /// command's, which memcached may leave out, then the `MN`).
    Fenced(Rc<Slot>),
    /// Nowhere: read and dropped (the AUTH/SELECT preamble).
    Swallow,
    /// There is none (memcache `noreply`).
    Nothing,
}

/// A request on its way to a backend.
#[derive(Debug)]
pub struct Outgoing {
    pub data: Bytes,
    pub reply: ReplyTo,
    pub deadline: Option<Instant>,
    /// A cluster redirection (`MOVED`, `ASK`, `TRYAGAIN`) of its reply may
    /// send it elsewhere (shared-connection requests of cluster pools).
    pub redirect: bool,
}

/// What a cluster node's error reply says to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirection {
    /// `-MOVED <slot> <host:port>`: the slot is served there now.
    Moved(String),
    /// `-ASK <slot> <host:port>`: this once, there, after `ASKING`.
    Ask(String),
    /// `-TRYAGAIN`: a multi-key request during a migration; again shortly.
    TryAgain,
    /// `-CLUSTERDOWN`: the reply goes to the client, but the slot map may
    /// have changed.
    Down,
}

impl Redirection {
    /// The redirection a reply asks for, if any.
    pub fn of(reply: &[u8]) -> Option<Redirection> {
        let line = reply.strip_suffix(b"\r\n")?;
        let text = std::str::from_utf8(line.strip_prefix(b"-")?).ok()?;
        let mut w = text.split(' ');
        let kind = w.next()?;
        // `<slot> <host:port>`, the port a number: anything else is passed
        // to the client as the node sent it.
        let mut target = || {
            let slot = w.next()?;
            let addr = w.next()?;
            let (_, port) = addr.rsplit_once(':')?;
            (slot.parse::<u16>().is_ok() && port.parse::<u16>().is_ok()).then(|| addr.to_string())
        };
        match kind {
            "MOVED" => Some(Redirection::Moved(target()?)),
            "ASK" => Some(Redirection::Ask(target()?)),
            "TRYAGAIN" => Some(Redirection::TryAgain),
            "CLUSTERDOWN" => Some(Redirection::Down),
            _ => None,
        }
    }
}

#[cfg(test)]
mod redirection_tests {
    use super::Redirection;

    #[test]
    fn redirections_and_what_passes_through() {
        assert_eq!(
            Redirection::of(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirection::Moved("127.0.0.1:6381".into()))
        );
        assert_eq!(
            Redirection::of(b"-ASK 12182 [::1]:7000\r\n"),
            Some(Redirection::Ask("[::1]:7000".into()))
        );
        assert_eq!(
            Redirection::of(b"-TRYAGAIN Multiple keys\r\n"),
            Some(Redirection::TryAgain)
        );
        assert_eq!(
            Redirection::of(b"-CLUSTERDOWN The cluster is down\r\n"),
            Some(Redirection::Down)
        );
        // Malformed: the client gets the node's reply itself.
        for bad in [
            &b"-MOVED 3999\r\n"[..],
            b"-MOVED x 127.0.0.1:6381\r\n",
            b"-MOVED 3999 127.0.0.1:port\r\n",
            b"-MOVED 3999 127.0.0.1\r\n",
            b"-ERR MOVED\r\n",
            b"+OK\r\n",
        ] {
            assert_eq!(
                Redirection::of(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

/// Where a cluster pool's redirections go (implemented by the worker's
/// pool, so this side needs no knowledge of pools).
pub trait Redirect: std::fmt::Debug {
    /// Sends `data` where `to` says (`from` answered it); `false` lets the
    /// reply through to the client.
    fn redirect(
        &self,
        to: Redirection,
        from: &ServerAddr,
        data: Bytes,
        slot: Rc<Slot>,
        dialect: Dialect,
    ) -> bool;
}

/// Where server connections report their health (process-wide, see
/// [`crate::health`]). Implemented by the pool, so this side needs no
/// knowledge of pools.
pub trait HealthSink: std::fmt::Debug {
    /// A connection to the server closed (connect error, reset, EOF, timeout,
    /// bad reply, transient error): one failure.
    fn failed(&self, server: usize);
    /// A complete reply arrived from the server.
    fn replied(&self, server: usize);
}

/// What a server connection needs to know about its backend.
#[derive(Debug)]
pub struct Backend {
    /// The server's index in its pool.
    pub index: usize,
    pub health: std::sync::Arc<dyn HealthSink + Send + Sync>,
    pub proto: Protocol,
    pub addr: ServerAddr,
    pub name: String,
    pub timeout: Option<Duration>,
    /// Requests sent on every new connection before any other (AUTH, SELECT),
    /// per [`Dialect`].
    pub preamble: [Vec<Bytes>; 3],
    /// This worker's metrics for the server, and for the worker (connection
    /// counts).
    pub stats: Arc<ServerStats>,
    pub worker: Arc<WorkerStats>,
    /// `server_tls`: how to reach the server over TLS.
    pub tls: Option<crate::tls::Connector>,
    /// `redis_cluster`: where redirections go.
    pub redirect: Option<Rc<dyn Redirect>>,
}

/// Which set of connections to a server a request uses. Redis clients that
/// switched to RESP3 (`HELLO 3`) need backend connections that speak RESP3;
/// everyone else shares the plain ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Plain = 0,
    Resp3 = 1,
    /// memcache's binary protocol: memcached fixes a connection's protocol
    /// by its first byte, so binary clients get connections of their own.
    Binary = 2,
}

/// The queue side of one backend connection.
#[derive(Debug, Default)]
pub struct ServerConn {
    queue: RefCell<VecDeque<Outgoing>>,
    wake: Wake,
    alive: Cell<bool>,
    /// Set by [`ServerConn::close`]: the proxy closes the connection on
    /// purpose (a pinned connection whose state is unknown); not a failure.
    closing: Cell<bool>,
    /// The connection's server left the pool's current version (a reload):
    /// it closes once it has nothing queued or in flight.
    draining: Cell<bool>,
    /// A subscribed connection's client: every frame read goes there, in
    /// order (messages come unasked between the replies).
    sink: RefCell<Option<Rc<Sink>>>,
    /// Why the connection ended, once it has.
    failure: Cell<Option<ErrKind>>,
    /// Which set of connections it belongs to.
    dialect: Cell<Option<Dialect>>,
}

impl ServerConn {
    /// Closes the connection (what is queued or in flight fails): for a
    /// pinned connection that must not be reused, such as one whose client
    /// left while blocked (the server must not hand it a popped element).
    pub fn close(&self) {
        self.closing.set(true);
        self.wake.wake();
    }

    /// Closes the connection once what it carries is delivered.
    pub fn drain(&self) {
        self.draining.set(true);
        self.wake.wake();
    }

    /// Makes this (pinned) connection a subscriber's: what it reads goes to
    /// `sink`; `None` makes it an ordinary connection again.
    pub fn set_sink(&self, sink: Option<Rc<Sink>>) {
        *self.sink.borrow_mut() = sink;
    }

    /// Open (or opening), and not closing.
    pub fn is_usable(&self) -> bool {
        self.alive.get() && !self.closing.get()
    }

    /// Queues a request (stat `in_queue`). On a connection that is gone (a
    /// pinned one whose server failed, or that a failover closed), the
    /// request fails at once: nothing would ever send it.
    fn push(&self, out: Outgoing, stats: &ServerStats) {
        if !self.alive.get() {
            if let ReplyTo::Slot(s) | ReplyTo::Fenced(s) = out.reply {
                s.fill(Err(self.failure.get().unwrap_or(ErrKind::ServerEof)));
            }
            return;
        }
        stats.get(F::InQueue).incr();
        stats.get(F::InQueueBytes).add(out.data.len() as i64);
        self.queue.borrow_mut().push_back(out);
        self.wake.wake();
    }

    fn fail_queue(&self, err: ErrKind, stats: &ServerStats) {
        let drained: Vec<Outgoing> = self.queue.borrow_mut().drain(..).collect();
        for o in drained {
            stats.get(F::InQueue).decr();
            stats.get(F::InQueueBytes).add(-(o.data.len() as i64));
            if let ReplyTo::Slot(s) | ReplyTo::Fenced(s) = o.reply {
                s.fill(Err(err));
            }
        }
    }
}

/// Up to `server_connections` connections, picked round-robin.
#[derive(Debug)]
struct ConnSet {
    conns: RefCell<Vec<Option<Rc<ServerConn>>>>,
    next: Cell<usize>,
}

/// The connections of one worker to one server (at most `server_connections`
/// per dialect), picked round-robin; a dead or missing one is (re)opened by the
/// next request. Besides them, the server connections clients pin for their
/// sessions (see [`ServerSlot::pin`]), and a few idle ones kept for the next
/// session.
#[derive(Debug)]
pub struct ServerSlot {
    backend: Rc<Backend>,
    sets: [ConnSet; 3],
    idle: [RefCell<Vec<Rc<ServerConn>>>; 3],
    /// Part of a pool version a reload replaced: its connections drain.
    retired: Cell<bool>,
    /// The connections clients have pinned (a failover closes them),
    /// shared with the server's slots in the pool's other versions.
    pinned: Pins,
}

/// The pinned connections to one server, across the pool's versions (a
/// session keeps the version it pinned on).
pub type Pins = Rc<RefCell<Vec<std::rc::Weak<ServerConn>>>>;

/// Clean pinned connections kept per server and dialect for the next session.
const IDLE_PINNED: usize = 4;

impl ServerSlot {
    pub fn new(backend: Backend, max_conns: u32) -> ServerSlot {
        let set = || ConnSet {
            conns: RefCell::new(vec![None; max_conns.max(1) as usize]),
            next: Cell::new(0),
        };
        ServerSlot {
            backend: Rc::new(backend),
            sets: [set(), set(), set()],
            idle: Default::default(),
            retired: Cell::new(false),
            pinned: Pins::default(),
        }
    }

    /// Shares `pins` (the server's pinned connections in the pool's other
    /// versions).
    pub fn with_pins(mut self, pins: Pins) -> ServerSlot {
        self.pinned = pins;
        self
    }

    /// The pinned connections to this server, across versions.
    pub fn pins(&self) -> Pins {
        self.pinned.clone()
    }

    pub fn name(&self) -> &str {
        &self.backend.name
    }

    pub fn addr(&self) -> &ServerAddr {
        &self.backend.addr
    }

    /// Closes this slot's shared and idle connections now (a failover: what
    /// is in flight on them fails with an error reply).
    pub fn close_all(&self) {
        self.end(true);
    }

    /// The pool version this server belongs to was replaced (a reload): its
    /// connections close once they have delivered what they carry; one
    /// opened later (for a client still on this version) closes likewise.
    pub fn retire(&self) {
        self.end(false);
    }

    fn end(&self, now: bool) {
        self.retired.set(true);
        for set in &self.sets {
            for c in set.conns.borrow().iter().flatten() {
                if now {
                    c.close();
                } else {
                    c.drain();
                }
            }
        }
        for idle in &self.idle {
            for c in idle.borrow_mut().drain(..) {
                c.close();
            }
        }
        if now {
            // A failover: a session pinned to a demoted master (WATCH,
            // blocked, subscribed) gets an error, not its acknowledgements.
            for c in self.pinned.borrow_mut().drain(..) {
                if let Some(c) = c.upgrade() {
                    c.close();
                }
            }
        }
    }

    /// A server connection for one client's session alone (a transaction
    /// with WATCH, a blocking command, subscriptions): an idle one, or a new
    /// one (which starts with the preamble, as every connection). Counted in
    /// `shardproxy_pinned_connections` until [`ServerSlot::unpin`].
    pub fn pin(&self, dialect: Dialect) -> Rc<ServerConn> {
        self.backend.stats.pinned.incr();
        let c = self.idle_or_new(dialect);
        let mut pinned = self.pinned.borrow_mut();
        pinned.retain(|w| w.strong_count() > 0);
        pinned.push(Rc::downgrade(&c));
        c
    }

    fn idle_or_new(&self, dialect: Dialect) -> Rc<ServerConn> {
        let mut idle = self.idle[dialect as usize].borrow_mut();
        while let Some(c) = idle.pop() {
            if c.is_usable() {
                return c;
            }
        }
        drop(idle);
        self.open(dialect)
    }

    /// Ends a pin: a `clean` connection (no session state left on the server:
    /// its EXEC, UNWATCH or blocking reply came back) is kept for the next
    /// session; any other is closed.
    pub fn unpin(&self, dialect: Dialect, conn: Rc<ServerConn>, clean: bool) {
        self.backend.stats.pinned.decr();
        conn.set_sink(None);
        let mut idle = self.idle[dialect as usize].borrow_mut();
        if clean && conn.is_usable() && idle.len() < IDLE_PINNED && !self.retired.get() {
            idle.push(conn);
        } else {
            conn.close();
        }
    }

    /// Queues a request on a given connection (a pinned one), with its own
    /// deadline (a blocking command's is its block time plus `timeout`;
    /// `None` waits as long as it takes).
    pub fn send_pinned(
        &self,
        conn: &ServerConn,
        data: Bytes,
        reply: ReplyTo,
        deadline: Option<Instant>,
    ) {
        self.forwarded(&data);
        conn.push(
            Outgoing {
                data,
                reply,
                deadline,
                redirect: false,
            },
            &self.backend.stats,
        );
    }

    /// Queues `ASKING` and then the request, back to back on one shared
    /// connection (a cluster's `ASK` redirection).
    pub fn send_asking(&self, dialect: Dialect, data: Bytes, slot: Rc<Slot>) {
        let asking = Bytes::from_static(b"*1\r\n$6\r\nASKING\r\n");
        self.send_batch(
            None,
            dialect,
            [(asking, ReplyTo::Swallow), (data, ReplyTo::Slot(slot))],
            std::time::Instant::now(),
        );
    }

    /// The deadline of a request read at `read`: `timeout` after it.
    pub fn deadline(&self, read: std::time::Instant) -> Option<Instant> {
        self.backend.timeout.map(|t| Instant::from_std(read) + t)
    }

    /// The pool's `timeout`.
    pub fn timeout(&self) -> Option<Duration> {
        self.backend.timeout
    }

    /// Queues requests back to back on one connection (`conn`, or a shared
    /// one of `dialect`): nothing of another client comes between them, so
    /// a `MULTI … EXEC` batch runs as one transaction even on a shared
    /// connection.
    pub fn send_batch(
        &self,
        conn: Option<&Rc<ServerConn>>,
        dialect: Dialect,
        batch: impl IntoIterator<Item = (Bytes, ReplyTo)>,
        read: std::time::Instant,
    ) {
        let deadline = self.deadline(read);
        let conn = match conn {
            Some(c) => c.clone(),
            None => self.conn(dialect),
        };
        for (data, reply) in batch {
            self.send_pinned(&conn, data, reply, deadline);
        }
    }

    /// Queues a request that expects a reply in `slot`. Its `timeout` runs
    /// from `read`, when the client's request was read (microseconds before
    /// it is queued; nutcracker starts it when queueing): no clock read per
    /// request.
    pub fn send(&self, data: Bytes, slot: Rc<Slot>, read: std::time::Instant) {
        self.send_in(Dialect::Plain, data, slot, read);
    }

    /// Queues a request on a connection of the given dialect.
    pub fn send_in(&self, dialect: Dialect, data: Bytes, slot: Rc<Slot>, read: std::time::Instant) {
        let deadline = self.backend.timeout.map(|t| Instant::from_std(read) + t);
        self.forwarded(&data);
        self.conn(dialect).push(
            Outgoing {
                data,
                reply: ReplyTo::Slot(slot),
                deadline,
                redirect: self.backend.redirect.is_some(),
            },
            &self.backend.stats,
        );
    }

    /// Queues a memcache request that ends with `mn`: its reply is
    /// everything up to the `MN` ([`ReplyTo::Fenced`]).
    pub fn send_fenced(&self, data: Bytes, slot: Rc<Slot>, read: std::time::Instant) {
        let deadline = self.deadline(read);
        self.forwarded(&data);
        self.conn(Dialect::Plain).push(
            Outgoing {
                data,
                reply: ReplyTo::Fenced(slot),
                deadline,
                redirect: false,
            },
            &self.backend.stats,
        );
    }

    /// Queues a request that gets no reply (memcache `noreply`): it never
    /// times out (spec §7.2).
    pub fn send_noreply(&self, data: Bytes) {
        self.forwarded(&data);
        self.conn(Dialect::Plain).push(
            Outgoing {
                data,
                reply: ReplyTo::Nothing,
                deadline: None,
                redirect: false,
            },
            &self.backend.stats,
        );
    }

    /// Stats `requests` and `request_bytes`: counted when queued, as
    /// nutcracker (a request that then fails is still counted).
    #[inline]
    fn forwarded(&self, data: &Bytes) {
        let st = &self.backend.stats;
        st.get(F::Requests).incr();
        st.get(F::RequestBytes).add(data.len() as i64);
    }

    /// Opens a connection now (`preconnect`).
    pub fn preconnect(&self) {
        let _ = self.conn(Dialect::Plain);
    }

    fn conn(&self, dialect: Dialect) -> Rc<ServerConn> {
        let set = &self.sets[dialect as usize];
        let mut conns = set.conns.borrow_mut();
        let i = set.next.get() % conns.len();
        set.next.set(i + 1);
        if let Some(c) = &conns[i] {
            if c.alive.get() {
                return c.clone();
            }
        }
        let c = self.open(dialect);
        conns[i] = Some(c.clone());
        c
    }

    /// Opens a connection: its preamble is queued first.
    fn open(&self, dialect: Dialect) -> Rc<ServerConn> {
        let c = Rc::new(ServerConn::default());
        c.dialect.set(Some(dialect));
        c.draining.set(self.retired.get());
        c.alive.set(true);
        let deadline = self.backend.timeout.map(|t| Instant::now() + t);
        for p in &self.backend.preamble[dialect as usize] {
            c.push(
                Outgoing {
                    data: p.clone(),
                    reply: ReplyTo::Swallow,
                    deadline,
                    redirect: false,
                },
                &self.backend.stats,
            );
        }
        tokio::task::spawn_local(run(c.clone(), self.backend.clone()));
        c
    }
}

/// The replies up to and including the first `MN` (a fenced request's).
fn fenced_reply(buf: &[u8]) -> Result<Scan, ErrKind> {
    let mut pos = 0;
    loop {
        match memcache::scan_reply(&buf[pos..]) {
            Ok(Scan::Complete(n)) => {
                let end = pos + n;
                if &buf[pos..end] == b"MN\r\n" {
                    return Ok(Scan::Complete(end));
                }
                pos = end;
            }
            Ok(Scan::Incomplete { hint }) => return Ok(Scan::Incomplete { hint: pos + hint }),
            Err(_) => return Err(ErrKind::Invalid),
        }
    }
}

/// A TLS handshake with the server failed (already logged and counted).
#[derive(Debug)]
struct TlsFailed;

impl std::fmt::Display for TlsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TLS handshake failed")
    }
}

impl std::error::Error for TlsFailed {}

async fn run(conn: Rc<ServerConn>, backend: Rc<Backend>) {
    backend.worker.opened();
    let connect = net::connect(&backend.addr);
    let first_deadline = conn.queue.borrow().front().and_then(|o| o.deadline);
    let stream = match first_deadline {
        Some(d) => match tokio::time::timeout_at(d, connect).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        },
        None => connect.await,
    };
    let stream = match (stream, &backend.tls) {
        (Ok(Stream::Tcp(tcp)), Some(tls)) => {
            let host = match &backend.addr {
                ServerAddr::Tcp { host, .. } => host.as_str(),
                ServerAddr::Unix { .. } => "",
            };
            match crate::tls::connect(tls, host, tcp, first_deadline).await {
                Ok(s) => Ok(Stream::Tls(Box::new(s))),
                Err(e) => {
                    crate::tls::failed(crate::tls::Side::Server, &e, |why| {
                        tracing::warn!(
                            "TLS handshake with server '{}' ({}) failed ({why}): {e}",
                            backend.name,
                            backend.addr
                        );
                    });
                    Err(std::io::Error::other(TlsFailed))
                }
            }
        }
        (s, _) => s,
    };
    let err = match stream {
        Ok(stream) => {
            tracing::debug!("connected to server '{}'", backend.name);
            backend.stats.get(F::ServerConnections).incr();
            let mut state = Conn {
                stream,
                inflight: VecDeque::new(),
                sending: WriteQueue::default(),
            };
            let failure = state.serve(&conn, &backend).await;
            backend.stats.get(F::ServerConnections).decr();
            failure
        }
        Err(e) if e.get_ref().is_some_and(|i| i.is::<TlsFailed>()) => (ErrKind::Tls, Vec::new()),
        Err(e) => {
            tracing::debug!("connect to server '{}' failed: {e}", backend.name);
            (ErrKind::from_io(&e), Vec::new())
        }
    };
    let (kind, inflight) = err;
    conn.alive.set(false);
    conn.failure.set(Some(kind));
    backend.worker.closed();
    let st = &backend.stats;
    if !conn.closing.get() {
        st.get(match kind {
            ErrKind::ServerEof => F::ServerEof,
            ErrKind::TimedOut => F::ServerTimedout,
            _ => F::ServerErr,
        })
        .incr();
        backend.health.failed(backend.index);
    }
    if let Some(sink) = conn.sink.borrow_mut().take() {
        sink.push(backend.index, Frame::Closed(kind));
    }
    for f in inflight {
        st.get(F::OutQueue).decr();
        st.get(F::OutQueueBytes).add(-(f.bytes as i64));
        if let Some(slot) = f.slot {
            slot.fill(Err(kind));
        }
    }
    conn.fail_queue(kind, st);
}

/// The read buffer of a server connection grows by this much at a time.
/// Replies are split off it zero-copy, so a chunk lives until its last reply
/// is written to its client; 64 KB chunks (fewer `recv` calls) measured
/// slower than 16 KB ones, which the allocator recycles.
const SERVER_READ: usize = 16 * 1024;

/// A request written (or being written) to the backend, awaiting its reply.
struct Inflight {
    /// None for the preamble, whose replies are swallowed.
    slot: Option<Rc<Slot>>,
    /// Its reply runs to an `MN` ([`ReplyTo::Fenced`]).
    fenced: bool,
    /// The request, kept while a redirection may send it elsewhere.
    data: Option<Bytes>,
    deadline: Option<Instant>,
    /// When it was taken off the queue to be written.
    sent: Instant,
    bytes: usize,
}

struct Conn {
    stream: Stream,
    /// Requests written (or being written), awaiting replies, FIFO.
    inflight: VecDeque<Inflight>,
    /// Bytes still to write.
    sending: WriteQueue,
}

type Failure = (ErrKind, Vec<Inflight>);

impl Conn {
    fn fail(&mut self, kind: ErrKind) -> Failure {
        (kind, self.inflight.drain(..).collect())
    }

    async fn serve(&mut self, conn: &ServerConn, backend: &Backend) -> Failure {
        let mut rbuf = BytesMut::with_capacity(SERVER_READ);
        let mut need = 0usize;
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut requeued = false;
        loop {
            if conn.closing.get() {
                return self.fail(ErrKind::ServerEof);
            }
            if conn.draining.get()
                && self.inflight.is_empty()
                && self.sending.is_empty()
                && conn.queue.borrow().is_empty()
            {
                // Drained after a reload: a deliberate close.
                conn.closing.set(true);
                return self.fail(ErrKind::ServerEof);
            }
            // Requests queued by a task this turn: let the other tasks the
            // same turn woke queue theirs first (the task goes to the back
            // of the run queue), so one write carries them all.
            if !requeued && !conn.queue.borrow().is_empty() {
                requeued = true;
                requeue().await;
                continue;
            }
            requeued = false;
            // Take everything queued: it is written in order, so replies match FIFO.
            {
                let mut q = conn.queue.borrow_mut();
                if !q.is_empty() {
                    let st = &backend.stats;
                    let sent = Instant::now();
                    let (mut n, mut bytes, mut out_n, mut out_bytes) = (0i64, 0i64, 0i64, 0i64);
                    while let Some(o) = q.pop_front() {
                        let len = o.data.len();
                        n += 1;
                        bytes += len as i64;
                        let fenced = matches!(o.reply, ReplyTo::Fenced(_));
                        let slot = match o.reply {
                            ReplyTo::Slot(s) | ReplyTo::Fenced(s) => Some(Some(s)),
                            ReplyTo::Swallow => Some(None),
                            ReplyTo::Nothing => None,
                        };
                        if let Some(slot) = slot {
                            out_n += 1;
                            out_bytes += len as i64;
                            self.inflight.push_back(Inflight {
                                slot,
                                fenced,
                                data: o.redirect.then(|| o.data.clone()),
                                deadline: o.deadline,
                                sent,
                                bytes: len,
                            });
                        }
                        self.sending.push(o.data);
                    }
                    st.get(F::InQueue).add(-n);
                    st.get(F::InQueueBytes).add(-bytes);
                    st.get(F::OutQueue).add(out_n);
                    st.get(F::OutQueueBytes).add(out_bytes);
                }
            }
            if let Err(e) = self.sending.write_to(&self.stream) {
                return self.fail(ErrKind::from_io(&e));
            }
            // The timer is armed at the earliest deadline and, when it fires
            // early (that request was answered), re-armed at the next one:
            // one timer operation per timeout period, not per request.
            if armed.is_none() {
                if let Some(d) = self.inflight.iter().find_map(|f| f.deadline) {
                    timer.as_mut().reset(d);
                    armed = Some(d);
                }
            }
            let sending = !self.sending.is_empty() || self.stream.wants_write();
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = self.stream.poll_read_ready(cx) {
                    return Poll::Ready(Event::Readable(r));
                }
                if sending {
                    if let Poll::Ready(r) = self.stream.poll_write_ready(cx) {
                        return Poll::Ready(Event::Writable(r));
                    }
                }
                if conn.wake.poll(cx).is_ready() {
                    return Poll::Ready(Event::Queued);
                }
                if armed.is_some() && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Readable(r) => {
                    if let Err(e) = r {
                        return self.fail(ErrKind::from_io(&e));
                    }
                    if rbuf.capacity() - rbuf.len() < 4096 || need > rbuf.capacity() {
                        rbuf.reserve(need.saturating_sub(rbuf.len()).max(SERVER_READ));
                    }
                    match self.stream.try_read_buf(&mut rbuf) {
                        Ok(0) => return self.fail(ErrKind::ServerEof),
                        Ok(_) => match self.replies(&mut rbuf, conn, backend) {
                            Ok(n) => need = n,
                            Err(kind) => return self.fail(kind),
                        },
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return self.fail(ErrKind::from_io(&e)),
                    }
                }
                Event::Writable(r) => {
                    if let Err(e) = r {
                        return self.fail(ErrKind::from_io(&e));
                    }
                }
                Event::Queued => {}
                Event::Timer => {
                    armed = None;
                    let first = self.inflight.iter().find_map(|f| f.deadline);
                    if first.is_some_and(|d| d <= Instant::now()) {
                        return self.fail(ErrKind::TimedOut);
                    }
                }
            }
        }
    }

    /// Hands every complete reply in `rbuf` to its request. Returns the size
    /// hint of the next, incomplete reply.
    fn replies(
        &mut self,
        rbuf: &mut BytesMut,
        conn: &ServerConn,
        backend: &Backend,
    ) -> Result<usize, ErrKind> {
        let proto = backend.proto;
        let st = &backend.stats;
        let now = Instant::now();
        let sink = conn.sink.borrow().clone();
        if let Some(sink) = sink {
            return self.frames(rbuf, &sink, backend);
        }
        let binary = conn.dialect.get() == Some(Dialect::Binary);
        loop {
            let fenced = self.inflight.front().is_some_and(|f| f.fenced);
            let scanned = match proto {
                Protocol::Memcache if fenced => fenced_reply(rbuf),
                Protocol::Redis => scan_reply(rbuf).map_err(|_| ErrKind::Invalid),
                Protocol::Memcache if binary => {
                    memcache::binary::scan_reply(rbuf).map_err(|_| ErrKind::Invalid)
                }
                Protocol::Memcache => memcache::scan_reply(rbuf).map_err(|_| ErrKind::Invalid),
            };
            match scanned {
                Ok(Scan::Complete(n)) => {
                    let reply = rbuf.split_to(n).freeze();
                    let Some(f) = self.inflight.pop_front() else {
                        // A reply nobody asked for: the stream is out of sync.
                        return Err(ErrKind::Invalid);
                    };
                    st.get(F::OutQueue).decr();
                    st.get(F::OutQueueBytes).add(-(f.bytes as i64));
                    if proto == Protocol::Redis && is_transient_error(&reply) {
                        // nutcracker (spec §5.3): not forwarded; the connection closes.
                        if let Some(s) = f.slot {
                            s.fill(Err(ErrKind::Invalid));
                        }
                        return Err(ErrKind::Invalid);
                    }
                    backend.health.replied(backend.index);
                    if let (Some(r), Some(data), Some(s)) = (&backend.redirect, &f.data, &f.slot) {
                        if reply.first() == Some(&b'-') {
                            if let Some(to) = Redirection::of(&reply) {
                                let dialect = conn.dialect.get().unwrap_or(Dialect::Plain);
                                if r.redirect(to, &backend.addr, data.clone(), s.clone(), dialect) {
                                    continue;
                                }
                            }
                        }
                    }
                    if let Some(s) = f.slot {
                        st.get(F::Responses).incr();
                        st.get(F::ResponseBytes).add(reply.len() as i64);
                        st.latency.observe(now.saturating_duration_since(f.sent));
                        s.fill_at(Ok(reply), Some(now.into_std()));
                    }
                }
                Ok(Scan::Incomplete { hint }) => return Ok(hint),
                Err(kind) => return Err(kind),
            }
        }
    }
}

impl Conn {
    /// A subscribed connection's replies: every frame to the sink, in order;
    /// messages answer no request.
    fn frames(
        &mut self,
        rbuf: &mut BytesMut,
        sink: &Sink,
        backend: &Backend,
    ) -> Result<usize, ErrKind> {
        let st = &backend.stats;
        loop {
            match scan_frame(rbuf).map_err(|_| ErrKind::Invalid)? {
                Scan::Complete(n) => {
                    let reply = rbuf.split_to(n).freeze();
                    st.get(F::Responses).incr();
                    st.get(F::ResponseBytes).add(reply.len() as i64);
                    if pubsub::frame(&reply) == pubsub::Frame::Message {
                        sink.push(backend.index, Frame::Message(reply));
                        continue;
                    }
                    let Some(f) = self.inflight.pop_front() else {
                        return Err(ErrKind::Invalid);
                    };
                    st.get(F::OutQueue).decr();
                    st.get(F::OutQueueBytes).add(-(f.bytes as i64));
                    backend.health.replied(backend.index);
                    sink.push(backend.index, Frame::Reply(reply));
                }
                Scan::Incomplete { hint } => return Ok(hint),
            }
        }
    }
}

/// Ready on the second poll: the task wakes itself and goes to the back of
/// its worker's run queue, behind every task already woken.
fn requeue() -> impl Future<Output = ()> {
    let mut once = false;
    std::future::poll_fn(move |cx| {
        if once {
            return Poll::Ready(());
        }
        once = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// What woke a server connection's loop.
enum Event {
    Readable(std::io::Result<()>),
    Writable(std::io::Result<()>),
    /// A request was queued.
    Queued,
    /// The armed deadline passed.
    Timer,
}
