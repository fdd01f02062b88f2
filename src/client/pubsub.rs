//! Pub/sub through the proxy: `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE` and
//! their `UN…` on subscribed connections pinned for the client.
//!
//! A channel is routed like a key (`hash_tag` included), so `PUBLISH ch`
//! and `SUBSCRIBE ch` meet on one server; a pattern can match channels
//! anywhere, so `PSUBSCRIBE` subscribes on every server. The client holds at
//! most one subscribed connection per server; each is told one channel per
//! command, so every command has exactly one confirmation. What those
//! connections read comes to the client through its [`Sink`] in order:
//! confirmations complete the client's [`Confirm`]s, messages are queued
//! for the client before any confirmation still due from the same server
//! (so a message never comes after an `UNSUBSCRIBE` confirmation its server
//! sent after it).
//!
//! The proxy keeps the client's channels and patterns and writes the
//! confirmations itself, with the counts Redis would give (channels +
//! patterns; shard channels apart), once every server it asked has
//! confirmed. `UNSUBSCRIBE` without arguments names the client's channels.
//! A subscribed connection that fails ends the client's connection after an
//! error: its subscriptions are gone, and clients resubscribe when they
//! reconnect.

use super::{Pending, Session};
use crate::msg::{Frame, Sink};
use crate::proto::redis::pubsub::{confirmation, subscribed_pong};
use crate::proto::redis::request::{put_array_header, put_bulk};
use crate::server::{Dialect, ReplyTo};
use crate::stats::metrics::Class;
use bytes::Bytes;
use smallvec::SmallVec;
use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;
use std::rc::Rc;

/// A client's subscriptions.
#[derive(Debug)]
pub struct Subs {
    pub sink: Rc<Sink>,
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    shard: HashSet<Bytes>,
    /// Every subscription is gone: the subscribed connections are released
    /// once the confirmations are in.
    pub ending: bool,
}

/// A subscribe/unsubscribe confirmation owed to the client: ready once every
/// server it was sent to has confirmed.
#[derive(Debug)]
pub struct Confirm {
    reply: RefCell<Bytes>,
    waiting: RefCell<SmallVec<[u32; 4]>>,
}

impl Confirm {
    pub fn is_done(&self) -> bool {
        self.waiting.borrow().is_empty()
    }

    pub fn take(&self) -> Bytes {
        std::mem::take(&mut *self.reply.borrow_mut())
    }

    fn waits_for(&self, server: usize) -> bool {
        self.waiting.borrow().contains(&(server as u32))
    }

    /// The server confirmed (or failed, with the error to give instead).
    fn confirmed(&self, server: usize, error: Option<Bytes>) {
        let mut w = self.waiting.borrow_mut();
        if let Some(i) = w.iter().position(|&s| s == server as u32) {
            w.remove(i);
            if let Some(e) = error {
                *self.reply.borrow_mut() = e;
            }
        }
    }
}

/// The three kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Channel,
    Pattern,
    Shard,
}

impl Kind {
    /// From a subscriber command's name (lower case): the kind, and whether
    /// it subscribes.
    pub fn of(name: &str) -> Option<(Kind, bool)> {
        Some(match name {
            "subscribe" => (Kind::Channel, true),
            "unsubscribe" => (Kind::Channel, false),
            "psubscribe" => (Kind::Pattern, true),
            "punsubscribe" => (Kind::Pattern, false),
            "ssubscribe" => (Kind::Shard, true),
            "sunsubscribe" => (Kind::Shard, false),
            _ => return None,
        })
    }

    fn word(self, subscribe: bool) -> &'static [u8] {
        match (self, subscribe) {
            (Kind::Channel, true) => b"subscribe",
            (Kind::Channel, false) => b"unsubscribe",
            (Kind::Pattern, true) => b"psubscribe",
            (Kind::Pattern, false) => b"punsubscribe",
            (Kind::Shard, true) => b"ssubscribe",
            (Kind::Shard, false) => b"sunsubscribe",
        }
    }
}

impl Subs {
    fn set(&mut self, kind: Kind) -> &mut HashSet<Bytes> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard,
        }
    }

    /// The count Redis puts in a confirmation of this kind.
    fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.shard.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    fn total(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shard.len()
    }
}

const ALLOWED: &str =
    "only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context";

impl Session {
    /// In RESP2 subscribed mode (at least one subscription): only the
    /// subscriber commands, PING, QUIT and RESET run.
    #[inline]
    pub fn resp2_subscribed(&self) -> bool {
        self.dialect == Dialect::Plain && self.subs.as_ref().is_some_and(|s| s.total() > 0)
    }

    /// The error for another command in RESP2 subscribed mode.
    pub fn not_in_subscribed_mode(&mut self, name: &str) {
        self.ready(format!(
            "-ERR Can't execute '{}': {ALLOWED}\r\n",
            name.replace(' ', "|")
        ));
    }

    /// `PING` in RESP2 subscribed mode.
    pub fn subscribed_ping(&mut self, msg: Option<&[u8]>) {
        self.ready(subscribed_pong(msg));
    }

    /// SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE.
    pub fn subscribe(&mut self, kind: Kind, req: &Bytes, args: &[Range<usize>]) {
        let resp3 = self.dialect == Dialect::Resp3;
        let subs = self.subs.get_or_insert_with(|| {
            Box::new(Subs {
                sink: Sink::new(self.waker.clone()),
                channels: HashSet::new(),
                patterns: HashSet::new(),
                shard: HashSet::new(),
                ending: false,
            })
        });
        subs.ending = false;
        let sink = subs.sink.clone();
        let command = kind.word(true).to_ascii_uppercase();
        for a in &args[1..] {
            let name = req.slice(a.clone());
            let servers: SmallVec<[usize; 4]> = match kind {
                Kind::Pattern => (0..self.pool.servers.len()).collect(),
                _ => match self.pool.shared.router.dispatch(&name) {
                    Ok(i) => std::iter::once(i).collect(),
                    Err(_) => {
                        self.forward_error(crate::msg::ErrKind::Refused.redis_reply());
                        continue;
                    }
                },
            };
            let Some(subs) = self.subs.as_mut() else {
                return;
            };
            let new = subs.set(kind).insert(name.clone());
            let reply = confirmation(resp3, kind.word(true), Some(&name), subs.count(kind));
            if !new {
                // Already subscribed: Redis confirms again.
                self.ready(reply);
                continue;
            }
            let mut conns = SmallVec::<[_; 4]>::new();
            for &i in &servers {
                match self.pin_sub(i, &sink) {
                    Ok(c) => conns.push((i, c)),
                    Err(e) => {
                        if let Some(subs) = self.subs.as_mut() {
                            subs.set(kind).remove(&name);
                        }
                        self.ready(format!("-ERR {e}\r\n"));
                        conns.clear();
                        break;
                    }
                }
            }
            if conns.is_empty() {
                continue;
            }
            let wire = command_for(&command, &name);
            for (i, c) in &conns {
                let server = &self.pool.servers[*i];
                server.send_pinned(c, wire.clone(), ReplyTo::Swallow, server.deadline(self.now));
            }
            self.owe_confirm(reply, servers.iter().map(|&i| i as u32).collect());
        }
    }

    /// UNSUBSCRIBE / PUNSUBSCRIBE / SUNSUBSCRIBE: of the names given, or of
    /// every one of that kind.
    pub fn unsubscribe(&mut self, kind: Kind, req: &Bytes, args: &[Range<usize>]) {
        let resp3 = self.dialect == Dialect::Resp3;
        let word = kind.word(false);
        let Some(subs) = self.subs.as_mut() else {
            return self.ready(confirmation(resp3, word, None, 0));
        };
        let mut names: Vec<Bytes> = args[1..].iter().map(|a| req.slice(a.clone())).collect();
        if names.is_empty() {
            names = subs.set(kind).iter().cloned().collect();
            names.sort();
            if names.is_empty() {
                let reply = confirmation(resp3, word, None, subs.count(kind));
                return self.ready(reply);
            }
        }
        let command = word.to_ascii_uppercase();
        for name in names {
            let Some(subs) = self.subs.as_mut() else {
                return;
            };
            let was = subs.set(kind).remove(&name);
            let reply = confirmation(resp3, word, Some(&name), subs.count(kind));
            if !was {
                self.ready(reply);
                continue;
            }
            let servers: SmallVec<[usize; 4]> = match kind {
                Kind::Pattern => (0..self.pool.servers.len()).collect(),
                _ => self
                    .pool
                    .shared
                    .router
                    .dispatch(&name)
                    .into_iter()
                    .collect(),
            };
            let wire = command_for(&command, &name);
            let mut waiting = SmallVec::new();
            for &i in &servers {
                if let Some(c) = self.pins.sub(i).cloned() {
                    let server = &self.pool.servers[i];
                    server.send_pinned(
                        &c,
                        wire.clone(),
                        ReplyTo::Swallow,
                        server.deadline(self.now),
                    );
                    waiting.push(i as u32);
                }
            }
            self.owe_confirm(reply, waiting);
        }
        if let Some(subs) = self.subs.as_mut() {
            if subs.total() == 0 {
                subs.ending = true;
            }
        }
    }

    fn owe_confirm(&mut self, reply: Vec<u8>, waiting: SmallVec<[u32; 4]>) {
        if waiting.is_empty() {
            return self.ready(reply);
        }
        self.owe(
            Pending::Confirm(Rc::new(Confirm {
                reply: RefCell::new(reply.into()),
                waiting: RefCell::new(waiting),
            })),
            Class::Local,
        );
    }

    /// Takes what the subscribed connections read, in order: confirmations
    /// complete their [`Confirm`], messages are queued, a lost connection
    /// ends the client's.
    pub fn drain_sink(&mut self) {
        let Some(sink) = self.subs.as_ref().map(|s| s.sink.clone()) else {
            return;
        };
        while let Some((server, frame)) = sink.pop() {
            match frame {
                Frame::Reply(reply) => {
                    let error = (reply.first() == Some(&b'-')).then_some(reply);
                    if let Some(c) = self.first_confirm_of(server) {
                        c.confirmed(server, error);
                    }
                }
                Frame::Message(m) => {
                    let at = self.pending.iter().position(
                        |o| matches!(&o.reply, Pending::Confirm(c) if c.waits_for(server)),
                    );
                    let owed = super::Owed {
                        reply: Pending::Push(m),
                        since: self.now,
                        class: Class::Local,
                    };
                    match at {
                        Some(i) => self.pending.insert(i, owed),
                        None => self.pending.push_back(owed),
                    }
                }
                Frame::Closed(kind) => {
                    let error = Bytes::from(format!(
                        "-ERR the connection to server '{}' was lost ({}): this connection's subscriptions ended; subscribe again\r\n",
                        self.pool.shared.conf.servers.get(server).map_or("?", |s| s.name.as_str()),
                        kind.text()
                    ));
                    while let Some(c) = self.first_confirm_of(server) {
                        c.confirmed(server, Some(error.clone()));
                    }
                    self.ready(error);
                    self.break_off();
                }
            }
        }
    }

    fn first_confirm_of(&self, server: usize) -> Option<Rc<Confirm>> {
        self.pending.iter().find_map(|o| match &o.reply {
            Pending::Confirm(c) if c.waits_for(server) => Some(c.clone()),
            _ => None,
        })
    }

    /// Every subscription is gone and confirmed: the subscribed connections
    /// go back clean.
    pub fn settle_subs(&mut self) {
        if self.subs.as_ref().is_some_and(|s| s.ending)
            && !self
                .pending
                .iter()
                .any(|o| matches!(o.reply, Pending::Confirm(_)))
        {
            self.subs = None;
            self.unpin_subs(true);
        }
    }
}

/// `SUBSCRIBE name` (or another subscriber command) as RESP.
fn command_for(command: &[u8], name: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(32 + name.len());
    put_array_header(&mut out, 2);
    put_bulk(&mut out, command);
    put_bulk(&mut out, name);
    out.into()
}
