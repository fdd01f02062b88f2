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
pub mod memcache;
pub mod redis;

use crate::msg::{Protocol, Slot};
use crate::net::{Stream, WriteQueue};
use crate::server::Dialect;
use crate::worker::PoolLocal;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::rc::Rc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Requests a client may have in flight before we stop reading from it.
const MAX_PENDING: usize = 16 * 1024;
/// Reply bytes a client may have unwritten before we stop reading from it.
const MAX_UNWRITTEN: usize = 64 * 1024 * 1024;

/// One reply owed to the client, in request order.
#[derive(Debug)]
pub enum Pending {
    /// Answered by the proxy.
    Ready(Bytes),
    /// Forwarded: the backend's reply (or an error) lands in the slot.
    Wait(Rc<Slot>),
    /// Fragmented across servers: coalesced when every part is done.
    Frags(Box<frag::Frags>),
    /// Close the connection once every earlier reply is written (QUIT).
    Close,
}

/// Per-connection state the protocol handler works with.
#[derive(Debug)]
pub struct Session {
    pub pool: Rc<PoolLocal>,
    pub proto: Protocol,
    /// Which backend connections this client's requests use (RESP3 after
    /// `HELLO 3`).
    pub dialect: Dialect,
    pub waker: Rc<Notify>,
    pub pending: VecDeque<Pending>,
    pub authenticated: bool,
    /// Set when the connection must close after the queued replies (QUIT, a
    /// framing error).
    pub closing: bool,
    /// memcache: bytes of a malformed request still to discard as they arrive.
    pub swallow: usize,
    /// memcache: then discard through the next newline (a bad data block).
    pub swallow_line: bool,
    /// Scanner scratch space, reused for every request of the connection.
    pub args: Vec<std::ops::Range<usize>>,
    pub mc: crate::proto::memcache::Request,
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

/// Serves one client connection until it closes.
pub async fn serve(stream: Stream, pool: Rc<PoolLocal>, shutdown: CancellationToken) {
    let authenticated = pool.shared.conf.redis_auth.is_none();
    let proto = Protocol::of(pool.shared.conf.redis);
    let mut s = Session {
        pool,
        proto,
        dialect: Dialect::Plain,
        waker: Rc::new(Notify::new()),
        pending: VecDeque::new(),
        authenticated,
        closing: false,
        swallow: 0,
        swallow_line: false,
        args: Vec::new(),
        mc: Default::default(),
    };
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut need = 0usize;
    let mut out = WriteQueue::default();
    let mut eof = false;
    loop {
        if !s.closing {
            need = match proto {
                Protocol::Redis => redis::handle_requests(&mut s, &mut rbuf),
                Protocol::Memcache => memcache::handle_requests(&mut s, &mut rbuf),
            };
        }
        // Move every ready reply at the front of the queue to the output.
        let mut close_now = false;
        while let Some(front) = s.pending.front_mut() {
            let ready = match front {
                Pending::Ready(b) => Some(std::mem::take(b)),
                Pending::Wait(slot) => slot.take().map(|o| proto.outcome_reply(o)),
                Pending::Frags(f) => f.is_done().then(|| f.coalesce()),
                Pending::Close => {
                    close_now = true;
                    break;
                }
            };
            let Some(bytes) = ready else { break };
            s.pending.pop_front();
            out.push(bytes);
        }
        // Write without waiting.
        if out.write_to(&stream).is_err() {
            return;
        }
        if out.is_empty() && (close_now || ((eof || s.closing) && s.pending.is_empty())) {
            return;
        }
        let can_read =
            !eof && !s.closing && s.pending.len() < MAX_PENDING && out.len() < MAX_UNWRITTEN;
        let waiting = !s.pending.is_empty();
        tokio::select! {
            r = stream.readable(), if can_read => {
                if r.is_err() {
                    return;
                }
                if rbuf.capacity() - rbuf.len() < 4096 || need > rbuf.capacity() {
                    rbuf.reserve(need.saturating_sub(rbuf.len()).max(16 * 1024));
                }
                match stream.try_read_buf(&mut rbuf) {
                    Ok(0) => eof = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            r = stream.writable(), if !out.is_empty() => {
                if r.is_err() {
                    return;
                }
            }
            _ = s.waker.notified(), if waiting => {}
            _ = shutdown.cancelled(), if !s.closing => {
                // Stop taking requests; deliver what is in flight, then close.
                s.closing = true;
            }
        }
    }
}
