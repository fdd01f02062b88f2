//! What flows between a client and the server connections of its worker: the
//! reply slot a request's response lands in, and the errors the proxy answers
//! with. Both sides share only these types.

use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tokio::sync::Notify;

/// Why the proxy answers a request itself with an error (spec §5.3: nutcracker
/// replies with strerror's text; so do we, where the cause is an errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrKind {
    /// The backend refused the connection (or every server is ejected).
    Refused,
    /// The request's `timeout` expired.
    TimedOut,
    /// The connection to the backend was reset.
    Reset,
    /// The backend host name did not resolve.
    HostDown,
    /// The backend sent a reply the proxy cannot parse, or a transient error.
    Invalid,
    /// Writing to the backend failed.
    BrokenPipe,
    /// The backend closed the connection.
    ServerEof,
    /// Another I/O error.
    Io,
}

impl ErrKind {
    /// The text after `-ERR ` / `SERVER_ERROR `.
    pub fn text(self) -> &'static str {
        match self {
            ErrKind::Refused => "Connection refused",
            ErrKind::TimedOut => "Connection timed out",
            ErrKind::Reset => "Connection reset by peer",
            ErrKind::HostDown => "Host is down",
            ErrKind::Invalid => "Invalid argument",
            ErrKind::BrokenPipe => "Broken pipe",
            ErrKind::ServerEof => "Connection closed by server",
            ErrKind::Io => "Input/output error",
        }
    }

    /// Classifies an I/O error.
    pub fn from_io(e: &std::io::Error) -> ErrKind {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => ErrKind::Refused,
            K::TimedOut => ErrKind::TimedOut,
            K::ConnectionReset | K::ConnectionAborted => ErrKind::Reset,
            K::BrokenPipe => ErrKind::BrokenPipe,
            K::UnexpectedEof => ErrKind::ServerEof,
            K::NotFound | K::AddrNotAvailable => ErrKind::HostDown,
            _ => ErrKind::Io,
        }
    }

    /// The redis error reply for this error.
    pub fn redis_reply(self) -> Bytes {
        Bytes::from(format!("-ERR {}\r\n", self.text()))
    }

    /// The memcache error reply for this error.
    pub fn memcache_reply(self) -> Bytes {
        Bytes::from(format!("SERVER_ERROR {}\r\n", self.text()))
    }
}

/// A pool's wire protocol. Everything else (routing, server connections,
/// ordering, backpressure) is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Redis,
    Memcache,
}

impl Protocol {
    pub fn of(redis: bool) -> Protocol {
        if redis {
            Protocol::Redis
        } else {
            Protocol::Memcache
        }
    }

    /// The proxy's own error reply.
    pub fn error_reply(self, e: ErrKind) -> Bytes {
        match self {
            Protocol::Redis => e.redis_reply(),
            Protocol::Memcache => e.memcache_reply(),
        }
    }

    /// The client's reply for a forwarded request's outcome.
    pub fn outcome_reply(self, o: Outcome) -> Bytes {
        match o {
            Ok(b) => b,
            Err(e) => self.error_reply(e),
        }
    }
}

/// The outcome of a forwarded request: the backend's raw reply, or an error.
pub type Outcome = Result<Bytes, ErrKind>;

/// Where one forwarded request's outcome lands. The client that owns it holds
/// it in its in-order reply queue; the server connection fills it and wakes the
/// client. If the client is gone, filling it is harmless.
#[derive(Debug)]
pub struct Slot {
    outcome: RefCell<Option<Outcome>>,
    waker: Rc<Notify>,
    /// For the parts of a split request: how many parts are still unanswered;
    /// the owner is woken by the last one only (one wake-up per request).
    countdown: Option<Rc<Cell<u32>>>,
}

impl Slot {
    pub fn new(waker: Rc<Notify>) -> Rc<Slot> {
        Rc::new(Slot {
            outcome: RefCell::new(None),
            waker,
            countdown: None,
        })
    }

    /// A part of a split request whose parts share `countdown` (set to the
    /// number of parts).
    pub fn part(waker: Rc<Notify>, countdown: Rc<Cell<u32>>) -> Rc<Slot> {
        Rc::new(Slot {
            outcome: RefCell::new(None),
            waker,
            countdown: Some(countdown),
        })
    }

    /// Sets the outcome (first one wins) and wakes the owner (for a part: once
    /// every part has its outcome).
    pub fn fill(&self, outcome: Outcome) {
        let mut o = self.outcome.borrow_mut();
        if o.is_none() {
            *o = Some(outcome);
            drop(o);
            if let Some(c) = &self.countdown {
                let left = c.get().saturating_sub(1);
                c.set(left);
                if left > 0 {
                    return;
                }
            }
            self.waker.notify_one();
        }
    }

    pub fn is_done(&self) -> bool {
        self.outcome.borrow().is_some()
    }

    /// Takes the outcome out (once it is done).
    pub fn take(&self) -> Option<Outcome> {
        self.outcome.borrow_mut().take()
    }
}
