//! Client connections: read requests, hand them to the protocol handler, and
//! write replies back strictly in request order.
//!
//! Each client owns an in-order queue of [`Pending`] replies. A request the proxy
//! answers itself is ready at once; a forwarded one waits on its [`Slot`]; a
//! fragmented one waits on all of its parts and is then coalesced. The loop
//! reads while the queue is short (bounded buffering: a slow reader is
//! back-pressured instead of growing memory), writes every ready reply at the
//! front with vectored writes, and sleeps until the socket or a slot wakes it.

pub mod frag;
pub mod mcbin;
pub mod memcache;
pub mod pin;
pub mod pubsub;
pub mod redis;
pub mod replica;
pub mod txn;

use crate::msg::{Protocol, Slot, Wake};
use crate::net::{Stream, WriteQueue};
use crate::proto::guard::Attack;
use crate::server::Dialect;
use crate::stats::metrics::{Class, PoolField};
use crate::worker::{PoolCell, PoolLocal, Shutdown};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

/// Requests a client may have in flight before we stop reading from it.
pub const MAX_PENDING: usize = 1024;
/// Default of `--client-buffer`: reply bytes a client may have unwritten
/// before we stop reading from it.
pub const DEFAULT_CLIENT_BUFFER: usize = 16 * 1024 * 1024;

static CLIENT_BUFFER: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(DEFAULT_CLIENT_BUFFER);

/// The per-client limit of unwritten reply bytes (`--client-buffer`).
pub fn client_buffer() -> usize {
    CLIENT_BUFFER.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sets the per-client limit of unwritten reply bytes (`--client-buffer`).
///
/// A client that does not read its replies stops being read once this many
/// bytes wait for it; what it can still cost is this plus the replies to the
/// requests it already sent (at most [`MAX_PENDING`] of them, and those of
/// one read).
pub fn set_client_buffer(bytes: usize) {
    CLIENT_BUFFER.store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
}
/// The read buffer of a client that has nothing in flight is released (an
/// idle client costs no buffer). Its next read gets one big enough for the
/// burst the client sent last time (a pipelining client's batch arrives in
/// one `recv`), at least 1 KiB, at most `READ_CHUNK`; later reads of the
/// same burst get `READ_CHUNK`. An unpipelined client gets and releases one
/// buffer per request, so its size matters: mimalloc serves blocks of up to
/// 1 KiB from its small-size fast path, larger ones from its generic aligned
/// path, ~200 instructions per allocation (callgrind, issue #21).
const FIRST_READ: usize = 1024;
const READ_CHUNK: usize = 16 * 1024;
/// Below this much free space, the buffer grows before a read.
const READ_MIN: usize = 1024;

/// One reply owed to the client, in request order.
#[derive(Debug)]
pub enum Pending {
    /// Answered by the proxy.
    Ready(Bytes),
    /// Forwarded: the backend's reply (or an error) lands in the slot.
    Wait(Rc<Slot>),
    /// Fragmented across servers: coalesced when every part is done.
    Frags(Box<frag::Frags>),
    /// A subscribe/unsubscribe confirmation: ready when every server it
    /// went to confirmed.
    Confirm(Rc<pubsub::Confirm>),
    /// A published message for a subscriber (no request, no latency).
    Push(Bytes),
    /// A memcache binary request's reply (see [`mcbin`]).
    Bin(Box<mcbin::BinWait>),
    /// A quiet memcache meta command's reply, sent with an `mn` after it:
    /// the client gets what came before the `MN` (possibly nothing).
    Fenced(Rc<Slot>),
    /// Close the connection once every earlier reply is written (QUIT).
    Close,
}

/// A reply owed, with what its latency is recorded under.
#[derive(Debug)]
pub struct Owed {
    pub reply: Pending,
    /// When the request was read.
    pub since: Instant,
    pub class: Class,
}

/// How a client connection ended (stats `client_eof` / `client_err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed (EOF) or sent QUIT.
    Eof,
    /// A read or write error, or the proxy closed it after a framing error.
    Error,
    /// The proxy is shutting down.
    Shutdown,
}

/// Per-connection state the protocol handler works with.
#[derive(Debug)]
pub struct Session {
    /// The version of the pool this client's requests use.
    pub pool: Rc<PoolLocal>,
    /// The pool across reloads.
    pub cell: Rc<PoolCell>,
    pub proto: Protocol,
    /// Which backend connections this client's requests use (RESP3 after
    /// `HELLO 3`).
    pub dialect: Dialect,
    pub waker: Rc<Wake>,
    pub pending: VecDeque<Owed>,
    /// When the requests being handled were read.
    pub now: Instant,
    pub authenticated: bool,
    /// Set when the connection must close after the queued replies (QUIT, a
    /// framing error).
    pub closing: bool,
    /// Set with `closing` when it is for a framing error.
    pub broken: bool,
    /// memcache: bytes of a malformed request still to discard as they arrive.
    pub swallow: usize,
    /// memcache: then discard through the next newline (a bad data block).
    pub swallow_line: bool,
    /// Scanner scratch space, reused for every request of the connection.
    pub args: Vec<std::ops::Range<usize>>,
    pub mc: crate::proto::memcache::Request,
    /// Set when the client sent what no cache client sends (an HTTP request,
    /// a TLS hello): the connection is closing; the loop logs it once.
    pub attack: Option<Attack>,
    /// redis: `CLIENT SETNAME`.
    pub client_name: Option<Bytes>,
    /// redis: the `client_users` user it authenticated as, if that user is
    /// `readonly` (as of the login); `None` for the others.
    pub readonly_user: Option<Box<str>>,
    /// redis: the transaction, from `MULTI` or `WATCH` on.
    pub txn: Option<txn::Txn>,
    /// redis: pinned server connections, and a request held until the
    /// replies before it are in.
    pub pins: pin::Pins,
    /// redis: the client's subscriptions.
    pub subs: Option<Box<pubsub::Subs>>,
    /// redis: while set, requests sent on pinned connections get this
    /// deadline instead of `timeout` (a blocking command's own, or none).
    pub block_deadline: Option<Option<tokio::time::Instant>>,
    /// redis: the request being sent is a read that may go to a replica
    /// (`read_from`; see [`replica`]).
    pub replica_read: bool,
    /// memcache: the protocol the connection speaks, fixed by its first
    /// byte (`0x80`: binary).
    pub mc_mode: mcbin::Mode,
    /// The connection (its addresses, for `CLUSTER SLOTS`).
    pub stream: Rc<Stream>,
}

impl Session {
    /// Moves the client to the pool's current version (after a reload)
    /// between requests, unless it holds state on the version it has:
    /// pinned connections (watching, blocked, subscribed) or a transaction.
    #[inline]
    pub fn refresh_pool(&mut self) {
        if !self.cell.is_current(&self.pool)
            && self.pins.is_empty()
            && self
                .txn
                .as_ref()
                .is_none_or(|t| !t.multi && t.server.is_none())
        {
            self.pool = self.cell.current();
        }
    }

    /// Queues a reply owed to the client, in request order.
    #[inline]
    pub fn owe(&mut self, reply: Pending, class: Class) {
        self.pending.push_back(Owed {
            reply,
            since: self.now,
            class,
        });
    }

    /// Queues a reply the proxy makes itself.
    #[inline]
    pub fn ready(&mut self, bytes: impl Into<Bytes>) {
        self.owe(Pending::Ready(bytes.into()), Class::Local);
    }

    /// Queues the proxy's error reply for a request it could not forward
    /// (stat `forward_error`).
    pub fn forward_error(&mut self, bytes: impl Into<Bytes>) {
        self.pool.stats.get(PoolField::ForwardError).incr();
        self.ready(bytes);
    }

    /// memcache: discards what an earlier refused request still spans
    /// (`swallow` bytes); false while more of it is to come.
    pub fn swallow_bytes(&mut self, rbuf: &mut BytesMut) -> bool {
        if self.swallow > 0 {
            let n = self.swallow.min(rbuf.len());
            bytes::Buf::advance(rbuf, n);
            self.swallow -= n;
        }
        self.swallow == 0
    }

    /// Closes the connection after the queued replies because the byte stream
    /// cannot be resynchronised.
    pub fn break_off(&mut self) {
        self.closing = true;
        self.broken = true;
    }

    /// Closes the connection because of what it sent (see [`crate::proto::guard`]):
    /// nothing after it runs, nothing is answered to it; replies to earlier
    /// requests are still written. Counted in `client_err` and
    /// `shardproxy_security_rejects_total`.
    pub fn reject(&mut self, attack: Attack) {
        self.pool.stats.security[attack as usize].incr();
        self.attack = Some(attack);
        self.break_off();
    }
}

/// A pool whose clients need not authenticate: no `redis_auth`, no
/// `client_users`.
pub fn open_pool(conf: &crate::conf::PoolConf) -> bool {
    conf.redis_auth.is_none() && conf.client_users.is_empty()
}

/// A printable, bounded rendering of a client-supplied name for error replies.
pub fn printable(b: &[u8]) -> String {
    b.iter()
        .take(64)
        .map(|&c| if c.is_ascii_graphic() { c as char } else { '?' })
        .collect()
}

/// The error text for a key whose token names no server of a `server_name` pool.
pub fn unroutable(s: &Session, key: &[u8]) -> String {
    format!(
        "no server named '{}' in pool '{}'",
        printable(crate::route::server_token(&s.pool.shared.conf, key)),
        s.pool.shared.conf.name
    )
}

/// What woke a client's loop.
enum Event {
    Readable(std::io::Result<()>),
    Writable(std::io::Result<()>),
    /// A reply landed in one of its slots.
    Woken,
    Shutdown,
}

/// Serves one client connection until it closes.
pub async fn serve(stream: Stream, cell: Rc<PoolCell>, shutdown: Shutdown) -> End {
    let plain = stream.plain();
    let stream = Rc::new(stream);
    let pool = cell.current();
    let authenticated = open_pool(&pool.shared.conf);
    let proto = Protocol::of(pool.shared.conf.redis);
    let mut s = Session {
        pool,
        cell,
        proto,
        dialect: Dialect::Plain,
        waker: Rc::new(Wake::default()),
        pending: VecDeque::new(),
        now: Instant::now(),
        authenticated,
        closing: false,
        broken: false,
        swallow: 0,
        swallow_line: false,
        args: Vec::new(),
        mc: Default::default(),
        attack: None,
        client_name: None,
        readonly_user: None,
        txn: None,
        pins: Default::default(),
        block_deadline: None,
        subs: None,
        replica_read: false,
        mc_mode: mcbin::Mode::Unknown,
        stream: stream.clone(),
    };
    let mut rbuf = BytesMut::new();
    // Bytes read since the buffer was last released, and so the size of the
    // next first read.
    let mut burst = 0usize;
    let mut first_read = FIRST_READ;
    let mut need = 0usize;
    let mut out = WriteQueue::default();
    let mut eof = false;
    let mut stopping = false;
    let max_unwritten = CLIENT_BUFFER.load(std::sync::atomic::Ordering::Relaxed);
    let mut fresh = false;
    let stop = shutdown.token().cancelled();
    tokio::pin!(stop);
    let mut parked_on_shutdown = false;
    loop {
        if !s.closing && fresh {
            s.refresh_pool();
            need = match proto {
                Protocol::Redis => redis::handle_requests(&mut s, &mut rbuf),
                Protocol::Memcache => memcache::handle_requests(&mut s, &mut rbuf),
            };
            fresh = false;
            if let Some(attack) = s.attack.take() {
                tracing::warn!(
                    "pool '{}': closing the connection from {}: it sent {}",
                    s.pool.shared.conf.name,
                    stream.peer(),
                    attack.describe()
                );
            }
        }
        if s.subs.is_some() {
            s.drain_sink();
        }
        // Move every ready reply at the front of the queue to the output.
        let mut close_now = false;
        let mut now = None;
        let stats = &s.pool.stats;
        while let Some(front) = s.pending.front_mut() {
            let ready = match &mut front.reply {
                Pending::Ready(b) => Some(std::mem::take(b)),
                Pending::Wait(slot) => match slot.delivered() {
                    // Written to the socket already (see `direct` below).
                    Some(at) => {
                        stats.latency[front.class as usize]
                            .observe(at.saturating_duration_since(front.since));
                        s.pending.pop_front();
                        continue;
                    }
                    None => slot.take().map(|o| {
                        if o.is_err() {
                            stats.get(PoolField::ForwardError).incr();
                        }
                        proto.outcome_reply(o)
                    }),
                },
                Pending::Frags(f) => f.is_done().then(|| {
                    let (bytes, failed) = f.coalesce();
                    if failed {
                        stats.get(PoolField::ForwardError).incr();
                    }
                    bytes
                }),
                Pending::Confirm(c) => c.is_done().then(|| c.take()),
                Pending::Push(m) => Some(std::mem::take(m)),
                Pending::Fenced(slot) => slot.take().map(|o| match o {
                    Ok(mut r) => {
                        if r.ends_with(b"MN\r\n") {
                            r.truncate(r.len() - 4);
                        }
                        r
                    }
                    Err(e) => {
                        stats.get(PoolField::ForwardError).incr();
                        proto.error_reply(e)
                    }
                }),
                Pending::Bin(b) => b.slot.take().map(|o| {
                    if o.is_err() {
                        stats.get(PoolField::ForwardError).incr();
                    }
                    b.reply(o)
                }),
                Pending::Close => {
                    close_now = true;
                    break;
                }
            };
            let Some(bytes) = ready else { break };
            if !matches!(front.reply, Pending::Push(_)) {
                let now = *now.get_or_insert_with(Instant::now);
                stats.latency[front.class as usize]
                    .observe(now.saturating_duration_since(front.since));
            }
            s.pending.pop_front();
            out.push(bytes);
        }
        // Write without waiting.
        if out.write_to(&stream).is_err() {
            return End::Error;
        }
        if s.pins.end_when_answered && s.pending.is_empty() {
            // The reply a pin ended with is in: the connection is clean.
            s.unpin_sessions(true);
        }
        if s.subs.is_some() {
            if out.len() > max_unwritten {
                tracing::warn!(
                    "pool '{}': closing the subscriber connection from {}: {} bytes of messages unread (--client-buffer)",
                    s.pool.shared.conf.name,
                    stream.peer(),
                    out.len()
                );
                return End::Error;
            }
            s.settle_subs();
        }
        if s.holding() && s.pending.is_empty() && !s.closing {
            // The replies a held request waited for are in: run it (and
            // what was read after it).
            fresh = true;
            continue;
        }
        if out.is_empty() && (close_now || ((eof || s.closing) && s.pending.is_empty())) {
            return if stopping {
                End::Shutdown
            } else if s.broken {
                End::Error
            } else {
                End::Eof
            };
        }
        // The one reply owed, nothing unwritten before it, no session state
        // that looks at replies: whoever fills its slot writes it to the
        // socket, and this task is not woken for it (see `Slot::direct`).
        let direct = match s.pending.front() {
            Some(Owed {
                reply: Pending::Wait(slot),
                ..
            }) if s.pending.len() == 1
                && out.is_empty()
                && plain
                && !s.closing
                && s.subs.is_none()
                && s.pins.is_empty()
                && s.txn.is_none() =>
            {
                slot.direct(Rc::downgrade(&stream));
                Some(slot.clone())
            }
            _ => None,
        };
        if (s.pending.is_empty() || direct.is_some()) && rbuf.is_empty() && rbuf.capacity() > 0 {
            rbuf = BytesMut::new();
            // Room for one byte more than the burst: a read that does not
            // fill the buffer is known to have drained the socket.
            first_read = (burst + 1)
                .next_power_of_two()
                .clamp(FIRST_READ, READ_CHUNK);
            burst = 0;
        }
        // While a request is held, reading goes on (a client that leaves
        // while blocked is seen) but only up to a bound.
        let can_read = !eof
            && !s.closing
            && s.pending.len() < MAX_PENDING
            && out.len() < max_unwritten
            && (!s.holding() || rbuf.len() < READ_CHUNK * 4);
        // A subscriber is woken by messages too. (With `direct`, a reply
        // that is not written directly wakes the task as usual.)
        let waiting = !s.pending.is_empty() || s.subs.is_some();
        let event = std::future::poll_fn(|cx| {
            if !s.closing {
                if shutdown.is_set() {
                    return Poll::Ready(Event::Shutdown);
                }
                if !parked_on_shutdown {
                    // Once: the token keeps this task's waker from now on.
                    if stop.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Shutdown);
                    }
                    parked_on_shutdown = true;
                }
            }
            if waiting && s.waker.poll(cx).is_ready() {
                return Poll::Ready(Event::Woken);
            }
            if can_read {
                if let Poll::Ready(r) = stream.poll_read_ready(cx) {
                    return Poll::Ready(Event::Readable(r));
                }
            }
            if !out.is_empty() || stream.wants_write() {
                if let Poll::Ready(r) = stream.poll_write_ready(cx) {
                    return Poll::Ready(Event::Writable(r));
                }
            }
            Poll::Pending
        })
        .await;
        if let Some(slot) = direct {
            slot.undirect();
        }
        match event {
            Event::Readable(r) => {
                if r.is_err() {
                    return End::Error;
                }
                if rbuf.capacity() - rbuf.len() < READ_MIN || need > rbuf.capacity() {
                    let chunk = if rbuf.capacity() == 0 {
                        first_read
                    } else {
                        READ_CHUNK
                    };
                    rbuf.reserve(need.saturating_sub(rbuf.len()).max(chunk));
                }
                match stream.try_read_buf(&mut rbuf) {
                    // A client that leaves while it holds a pinned
                    // connection (blocked, subscribed, watching) is gone at
                    // once, as from Redis: its connections are closed.
                    Ok(0) if !s.pins.is_empty() => return End::Eof,
                    Ok(0) => eof = true,
                    Ok(n) => {
                        burst += n;
                        s.now = Instant::now();
                        fresh = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return End::Error,
                }
            }
            Event::Writable(r) => {
                if r.is_err() {
                    return End::Error;
                }
            }
            Event::Woken => {}
            Event::Shutdown => {
                if !s.pins.is_empty() {
                    // Blocked or watching: what it waits for may never come.
                    return End::Shutdown;
                }
                // Stop taking requests; deliver what is in flight, then close.
                s.closing = true;
                stopping = true;
            }
        }
    }
}
