//! Transactions through the proxy: `MULTI … EXEC`, `DISCARD`, `WATCH`,
//! `UNWATCH`, on one server.
//!
//! A transaction runs on the server of its keys; all of them must route to
//! one server (hash tags arrange that), as in Redis Cluster. The proxy
//! queues the transaction itself: `MULTI` and every command after it are
//! answered here (`+OK`, `+QUEUED`, or the error Redis would give, which
//! makes `EXEC` answer `-EXECABORT` as Redis does), and `EXEC` sends
//! `MULTI`, the commands and `EXEC` back to back on one connection to that
//! server: nothing of another client comes between them, so the batch is one
//! transaction even on a shared connection, and a transaction whose first
//! commands have no key simply runs where its keys are. Only `EXEC`'s reply
//! goes to the client (the others are `+OK`/`+QUEUED`, or a queue-time
//! error that makes the server abort the transaction: never half of it).
//!
//! `WATCH` needs the server's state for this client: it pins a connection to
//! its keys' server (see [`super::pin`]); the client's requests to that
//! server go there until `EXEC`, `DISCARD` or `UNWATCH` ends the pin.

use super::{Pending, Session};
use crate::msg::Slot;
use crate::server::ReplyTo;
use crate::stats::metrics::Class;
use bytes::Bytes;

const QUEUED: &[u8] = b"+QUEUED\r\n";
const EXECABORT: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";
const UNWATCH: &[u8] = b"*1\r\n$7\r\nUNWATCH\r\n";
/// `-CROSSSLOT` for a key on another server than the transaction's.
pub const CROSSSLOT: &[u8] =
    b"-CROSSSLOT Keys in request don't hash to the same server as the transaction's other keys\r\n";

/// A client's transaction state (from `MULTI` or `WATCH` on).
#[derive(Debug, Default)]
pub struct Txn {
    /// The server every key routes to: chosen by `WATCH` or the first key.
    pub server: Option<usize>,
    /// `WATCH` is in effect on the pinned connection to `server`.
    pub watching: bool,
    /// Between `MULTI` and `EXEC`/`DISCARD`.
    pub multi: bool,
    /// A command was refused since `MULTI` (or a `WATCH` failed): `EXEC`
    /// answers `-EXECABORT`.
    pub dirty: bool,
    /// The queued commands, as they go to the server.
    pub queued: Vec<Bytes>,
    pub bytes: usize,
}

/// Where a command inside `MULTI` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// On this server (its keys are there).
    Server(usize),
    /// Anywhere: it has no key (`PING`, `TIME`).
    Any,
}

impl Session {
    /// Inside `MULTI`.
    #[inline]
    pub fn in_multi(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| t.multi)
    }

    /// A request refused inside `MULTI` (unknown command, wrong arity, a key
    /// elsewhere…): `EXEC` will abort, as Redis flags the transaction.
    pub fn txn_error(&mut self) {
        if let Some(t) = &mut self.txn {
            if t.multi {
                t.dirty = true;
            }
        }
    }

    /// `MULTI`.
    pub fn multi(&mut self) {
        let t = self.txn.get_or_insert_with(Default::default);
        if t.multi {
            // Not flagged, as Redis.
            return self.ready(&b"-ERR MULTI calls can not be nested\r\n"[..]);
        }
        t.multi = true;
        self.ready(&b"+OK\r\n"[..]);
    }

    /// Queues a command of the transaction (answered `+QUEUED`), or refuses
    /// it when its keys are not on the transaction's server.
    pub fn queue(&mut self, target: Target, wire: Bytes) {
        let limit = super::client_buffer();
        let Some(t) = &mut self.txn else { return };
        if let Target::Server(i) = target {
            if t.server.is_some_and(|s| s != i) {
                t.dirty = true;
                return self.ready(CROSSSLOT);
            }
            t.server = Some(i);
        }
        if t.bytes + wire.len() > limit {
            t.dirty = true;
            return self.ready(format!(
                "-ERR the transaction is larger than the proxy's --client-buffer ({limit} bytes)\r\n"
            ));
        }
        t.bytes += wire.len();
        t.queued.push(wire);
        self.ready(QUEUED);
    }

    /// `EXEC`: the whole transaction, back to back, on one connection of its
    /// server (the pinned one when it is watched); `placeholder` is the
    /// server of a transaction without keys.
    pub fn exec(&mut self, placeholder: Option<usize>) {
        let Some(t) = self.txn.take() else {
            return self.ready(&b"-ERR EXEC without MULTI\r\n"[..]);
        };
        if !t.multi {
            self.txn = Some(t);
            return self.ready(&b"-ERR EXEC without MULTI\r\n"[..]);
        }
        if t.dirty {
            self.end_watch(&t);
            return self.ready(EXECABORT);
        }
        let Some(server) = t.server.or(placeholder) else {
            self.end_watch(&t);
            return self.forward_error(crate::msg::ErrKind::Refused.redis_reply());
        };
        let slot = Slot::new(self.waker.clone());
        let batch = std::iter::once((Bytes::from_static(MULTI), ReplyTo::Swallow))
            .chain(t.queued.into_iter().map(|q| (q, ReplyTo::Swallow)))
            .chain(std::iter::once((
                Bytes::from_static(EXEC),
                ReplyTo::Slot(slot.clone()),
            )));
        let conn = if t.watching {
            self.pins.get(server).cloned()
        } else {
            None
        };
        self.pool.servers[server].send_batch(conn.as_ref(), self.dialect, batch, self.now);
        self.owe(Pending::Wait(slot), Class::Write);
        if conn.is_some() {
            // EXEC unwatches: the pin ends clean once its reply is in.
            self.pins.end_when_answered = true;
        }
    }

    /// `DISCARD`.
    pub fn discard(&mut self) {
        match self.txn.take() {
            Some(t) if t.multi => {
                self.end_watch(&t);
                self.ready(&b"+OK\r\n"[..]);
            }
            other => {
                self.txn = other;
                self.ready(&b"-ERR DISCARD without MULTI\r\n"[..]);
            }
        }
    }

    /// A transaction ended without EXEC reaching the server: a watch is
    /// dropped with `UNWATCH` (ahead of anything else on that connection),
    /// and the connection goes back clean.
    fn end_watch(&mut self, t: &Txn) {
        if let (true, Some(server)) = (t.watching, t.server) {
            if let Some(c) = self.pins.get(server).cloned() {
                self.pool.servers[server].send_pinned(
                    &c,
                    Bytes::from_static(UNWATCH),
                    ReplyTo::Swallow,
                    self.pool.servers[server].deadline(self.now),
                );
            }
            self.unpin_sessions(true);
        }
    }

    /// `UNWATCH` outside `MULTI`.
    pub fn unwatch(&mut self) {
        match self.txn.take() {
            Some(t) if t.watching => {
                self.end_watch(&t);
                self.ready(&b"+OK\r\n"[..]);
            }
            _ => self.ready(&b"+OK\r\n"[..]),
        }
    }

    /// `WATCH` of keys on `server`: the pin is taken (the caller made sure
    /// nothing is owed before it) and `WATCH` sent on it. A WATCH that
    /// cannot be had fails the next EXEC: optimistic locking is never
    /// silently dropped.
    pub fn watch(&mut self, server: Result<usize, Bytes>, wire: Bytes) {
        let t = self.txn.get_or_insert_with(Default::default);
        let server = match server {
            Ok(i) if t.server.is_none_or(|s| s == i) => i,
            Ok(_) => {
                t.dirty = true;
                return self.ready(CROSSSLOT);
            }
            Err(reply) => {
                t.dirty = true;
                return self.ready(reply);
            }
        };
        if let Err(e) = self.pin(server) {
            if let Some(t) = &mut self.txn {
                t.dirty = true;
            }
            return self.ready(format!("-ERR {e}\r\n"));
        }
        if let Some(t) = &mut self.txn {
            t.server = Some(server);
            t.watching = true;
        }
        let slot = Slot::new(self.waker.clone());
        self.send(server, wire, slot.clone());
        self.owe(Pending::Wait(slot), Class::Read);
    }

    /// `RESET` and friends: no transaction, no subscription, no pin.
    pub fn end_session(&mut self) {
        self.txn = None;
        self.subs = None;
        self.unpin_sessions(false);
        self.unpin_subs(false);
    }
}
