//! Pinned server connections: what a client session holds while it is in a
//! stateful mode (WATCH, a blocking command, WAIT).
//!
//! A client is *shared* (its requests are pipelined on the worker's shared
//! server connections with everyone else's) until a request needs server
//! state of its own; then it *pins* a connection to that server — an idle
//! one of the worker, or a new one — and every request it sends to that
//! server goes there until the pin ends. The shared path pays one branch
//! for this: [`Session::send`] looks for a pin only when there is one.
//!
//! Order across the switch: a request that pins waits (is *held*, with
//! everything after it unread) until every reply owed before it has come
//! back, so it runs after them on the server, as it would on a direct
//! connection; a pin that ends with a reply (EXEC on a pinned connection, a
//! blocking command) holds the next request until that reply is in.
//! A pin ends clean (the connection goes back to the worker's idle ones) or
//! not (it is closed): a client that leaves while blocked never leaves a
//! server connection that may still hand it a popped element.

use super::Session;
use crate::msg::{Sink, Slot};
use crate::server::{ReplyTo, ServerConn};
use bytes::Bytes;
use std::ops::Range;
use std::rc::Rc;

/// The connections a client has pinned, by server index.
#[derive(Debug, Default)]
pub struct Pins {
    /// For WATCH, a blocking command, WAIT: the client's requests to the
    /// server go there.
    conns: Vec<(usize, Rc<ServerConn>)>,
    /// Subscribed connections (see [`super::pubsub`]): only subscriber
    /// commands go there; what they read comes through the client's sink.
    subs: Vec<(usize, Rc<ServerConn>)>,
    /// The pins end once every owed reply is in (a blocking command's, an
    /// EXEC's); until then the next request is held.
    pub end_when_answered: bool,
    /// A request read but held until the replies before it are in (see
    /// the module docs), with its argument ranges.
    pub held: Option<(Bytes, Vec<Range<usize>>)>,
}

impl Pins {
    /// No connection pinned, of either kind.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty() && self.subs.is_empty()
    }

    /// The subscribed connection to server `server`, if any.
    pub fn sub(&self, server: usize) -> Option<&Rc<ServerConn>> {
        self.subs.iter().find(|(i, _)| *i == server).map(|(_, c)| c)
    }

    #[inline]
    pub fn get(&self, server: usize) -> Option<&Rc<ServerConn>> {
        if self.conns.is_empty() {
            return None;
        }
        self.conns
            .iter()
            .find(|(i, _)| *i == server)
            .map(|(_, c)| c)
    }
}

/// Why a pin could not be had.
#[derive(Debug)]
pub struct TooMany(pub u32);

impl Session {
    /// Sends a request expecting a reply in `slot` to server `idx`: on the
    /// client's pinned connection to it, if any, else on a shared one.
    #[inline]
    pub fn send(&self, idx: usize, data: Bytes, slot: Rc<Slot>) {
        let server = &self.pool.servers[idx];
        match self.pins.get(idx) {
            None if self.replica_read => self.send_read(idx, data, slot),
            None => server.send_in(self.dialect, data, slot, self.now),
            Some(c) => {
                let deadline = self
                    .block_deadline
                    .unwrap_or_else(|| server.deadline(self.now));
                server.send_pinned(c, data, ReplyTo::Slot(slot), deadline)
            }
        }
    }

    /// Pins a connection to server `idx` (if this client has none yet).
    /// Past the pool's `session_connections` for this worker: an error.
    pub fn pin(&mut self, idx: usize) -> Result<&Rc<ServerConn>, TooMany> {
        if self.pins.get(idx).is_none() {
            let c = self.take_pin(idx)?;
            self.pins.conns.push((idx, c));
        }
        match self.pins.conns.iter().find(|(i, _)| *i == idx) {
            Some((_, c)) => Ok(c),
            None => Err(TooMany(0)),
        }
    }

    /// The subscribed connection to server `idx`: pinned (if this client
    /// has none yet) and made to deliver to `sink`.
    pub fn pin_sub(&mut self, idx: usize, sink: &Rc<Sink>) -> Result<Rc<ServerConn>, TooMany> {
        if let Some(c) = self.pins.sub(idx) {
            return Ok(c.clone());
        }
        let c = self.take_pin(idx)?;
        c.set_sink(Some(sink.clone()));
        self.pins.subs.push((idx, c.clone()));
        Ok(c)
    }

    fn take_pin(&mut self, idx: usize) -> Result<Rc<ServerConn>, TooMany> {
        let limit = self.pool.shared.conf.session_connections;
        if self.pool.pinned.get() >= limit {
            return Err(TooMany(limit));
        }
        self.pool.pinned.set(self.pool.pinned.get() + 1);
        Ok(self.pool.servers[idx].pin(self.dialect))
    }

    /// Ends the session pins (WATCH, blocking, WAIT): `clean` connections go
    /// back to the worker's idle ones, others are closed.
    pub fn unpin_sessions(&mut self, clean: bool) {
        let conns = std::mem::take(&mut self.pins.conns);
        self.unpin(conns, clean);
        self.pins.end_when_answered = false;
    }

    /// Ends the subscribed connections: `clean` ones (every subscription
    /// confirmed gone) go back to the idle ones.
    pub fn unpin_subs(&mut self, clean: bool) {
        let subs = std::mem::take(&mut self.pins.subs);
        self.unpin(subs, clean);
    }

    fn unpin(&mut self, conns: Vec<(usize, Rc<ServerConn>)>, clean: bool) {
        for (idx, c) in conns {
            self.pool
                .pinned
                .set(self.pool.pinned.get().saturating_sub(1));
            self.pool.servers[idx].unpin(self.dialect, c, clean);
        }
    }

    /// Holds this request until every reply owed before it is in; the
    /// client loop hands it back (see [`Session::take_held`]).
    pub fn hold(&mut self, req: Bytes, args: &[Range<usize>]) {
        self.pins.held = Some((req, args.to_vec()));
    }

    /// Whether reading and handling requests waits for replies owed.
    #[inline]
    pub fn holding(&self) -> bool {
        self.pins.held.is_some()
    }

    /// The held request, once nothing is owed before it.
    pub fn take_held(&mut self) -> Option<(Bytes, Vec<Range<usize>>)> {
        if self.pending.is_empty() {
            self.pins.held.take()
        } else {
            None
        }
    }

    /// True when a request must wait for the owed replies before it can
    /// run: an ended pin is released first (clean: its reply is in).
    pub fn must_wait(&mut self) -> bool {
        if !self.pins.end_when_answered {
            return false;
        }
        if !self.pending.is_empty() {
            return true;
        }
        self.unpin_sessions(true);
        false
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A client that leaves with a pin: its server state is unknown
        // (blocked, watching, subscribed): close those connections.
        self.unpin_sessions(false);
        self.unpin_subs(false);
    }
}

impl std::fmt::Display for TooMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "too many sessions: this pool's session_connections ({}) are all pinned; try again later",
            self.0
        )
    }
}
