//! What flows between a client and the server connections of its worker: the
//! reply slot a request's response lands in, and the errors the proxy answers
//! with. Both sides share only these types.

use crate::net::Stream;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

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
    /// The TLS handshake with the backend failed (the log says why).
    Tls,
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
            ErrKind::Tls => "TLS handshake with the server failed",
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

/// Wakes one task of the same worker thread: a server connection when a
/// request is queued for it, a client when a reply landed in its slot.
///
/// tokio's `Notify` is built for wakers on other threads (a mutex and atomic
/// state on every wait); on one thread a flag and the parked task's waker do.
/// A wake-up with no task parked is kept until the next poll (a permit).
#[derive(Default)]
pub struct Wake {
    woken: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wake")
            .field("woken", &self.woken.get())
            .finish()
    }
}

impl Wake {
    /// Wakes the task (or leaves a permit for its next poll).
    #[inline]
    pub fn wake(&self) {
        if !self.woken.replace(true) {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    /// Ready once per wake-up (consuming it); otherwise parks `cx`'s task.
    #[inline]
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.replace(false) {
            return Poll::Ready(());
        }
        match self.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => self.waker.set(Some(w)),
            _ => self.waker.set(Some(cx.waker().clone())),
        }
        Poll::Pending
    }
}

/// What a subscribed server connection hands its client, in the order it
/// read them: with pub/sub, messages come unasked, between the replies.
#[derive(Debug)]
pub enum Frame {
    /// The reply to the oldest request on the connection (a confirmation).
    Reply(Bytes),
    /// A published message.
    Message(Bytes),
    /// The connection is gone: its subscriptions with it.
    Closed(ErrKind),
}

/// Where a client's subscribed server connections put their frames, tagged
/// with the server's index; the client takes them in order.
#[derive(Debug)]
pub struct Sink {
    frames: RefCell<std::collections::VecDeque<(usize, Frame)>>,
    waker: Rc<Wake>,
}

impl Sink {
    pub fn new(waker: Rc<Wake>) -> Rc<Sink> {
        Rc::new(Sink {
            frames: RefCell::default(),
            waker,
        })
    }

    /// Adds a frame and wakes the client.
    pub fn push(&self, server: usize, frame: Frame) {
        self.frames.borrow_mut().push_back((server, frame));
        self.waker.wake();
    }

    /// The oldest frame.
    pub fn pop(&self) -> Option<(usize, Frame)> {
        self.frames.borrow_mut().pop_front()
    }
}

/// The outcome of a forwarded request: the backend's raw reply, or an error.
pub type Outcome = Result<Bytes, ErrKind>;

/// What a failed request may do instead of failing: given the error, it
/// sends the request elsewhere (true: the slot stays open) or gives up.
pub type Retry = Box<dyn FnOnce(ErrKind) -> bool>;

/// Where one forwarded request's outcome lands. The client that owns it holds
/// it in its in-order reply queue; the server connection fills it and wakes the
/// client. If the client is gone, filling it is harmless.
pub struct Slot {
    outcome: RefCell<Option<Outcome>>,
    waker: Rc<Wake>,
    /// For the parts of a split request: how many parts are still unanswered;
    /// the owner is woken by the last one only (one wake-up per request).
    countdown: Option<Rc<Cell<u32>>>,
    /// A read sent to a replica: where it goes if that fails (see
    /// [`Slot::on_error`]).
    retry: Cell<Option<Retry>>,
    /// Cluster redirections followed so far.
    hops: Cell<u8>,
    /// Set while the reply may be written straight to the client's socket
    /// by whoever fills the slot (see [`Slot::direct`]).
    direct: Cell<Option<Weak<Stream>>>,
    /// When the reply was written that way.
    delivered: Cell<Option<Instant>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("outcome", &self.outcome)
            .field("countdown", &self.countdown)
            .finish()
    }
}

impl Slot {
    pub fn new(waker: Rc<Wake>) -> Rc<Slot> {
        Rc::new(Slot {
            outcome: RefCell::new(None),
            waker,
            countdown: None,
            retry: Cell::new(None),
            hops: Cell::new(0),
            direct: Cell::new(None),
            delivered: Cell::new(None),
        })
    }

    /// A part of a split request whose parts share `countdown` (set to the
    /// number of parts).
    pub fn part(waker: Rc<Wake>, countdown: Rc<Cell<u32>>) -> Rc<Slot> {
        Rc::new(Slot {
            outcome: RefCell::new(None),
            waker,
            countdown: Some(countdown),
            retry: Cell::new(None),
            hops: Cell::new(0),
            direct: Cell::new(None),
            delivered: Cell::new(None),
        })
    }

    /// One more cluster redirection: how many so far, this one included.
    pub fn hop(&self) -> u8 {
        let n = self.hops.get().saturating_add(1);
        self.hops.set(n);
        n
    }

    /// Gives the request one more chance if it fails (an error outcome, not
    /// an error reply): `retry` runs instead of the fill. Reads from replicas
    /// use it, so a replica that dies costs no failed read.
    pub fn on_error(&self, retry: Retry) {
        self.retry.set(Some(retry));
    }

    /// Lets the next fill with a reply write it to `client` itself, with no
    /// wake-up: the client's one outstanding reply, with nothing before it
    /// unwritten (an unpipelined request, the common case). Armed by the
    /// client each time it parks on such a reply and withdrawn
    /// ([`Slot::undirect`]) each time it wakes, so nothing can have been
    /// queued for the client meanwhile: order holds. A reply the socket does
    /// not take whole (or an error) lands in the slot as usual, the rest to
    /// be written by the client.
    pub fn direct(&self, client: Weak<Stream>) {
        self.direct.set(Some(client));
    }

    /// Withdraws [`Slot::direct`].
    pub fn undirect(&self) {
        self.direct.set(None);
    }

    /// When the reply was written to the client by [`Slot::direct`].
    pub fn delivered(&self) -> Option<Instant> {
        self.delivered.get()
    }

    /// Sets the outcome (first one wins) and wakes the owner (for a part: once
    /// every part has its outcome).
    pub fn fill(&self, outcome: Outcome) {
        self.fill_at(outcome, None)
    }

    /// [`Slot::fill`], with the time the reply was read (`now`; saves a
    /// clock read when the reply is written directly).
    pub fn fill_at(&self, mut outcome: Outcome, now: Option<Instant>) {
        if let Err(e) = outcome {
            if let Some(retry) = self.retry.take() {
                if retry(e) {
                    return;
                }
            }
        }
        if self.delivered.get().is_some() {
            return;
        }
        if let (Ok(reply), Some(client)) = (&outcome, self.direct.take()) {
            if let Some(stream) = client.upgrade() {
                match stream.try_write(reply) {
                    Ok(n) if n == reply.len() => {
                        self.delivered.set(Some(now.unwrap_or_else(Instant::now)));
                        return;
                    }
                    // The client writes the rest.
                    Ok(n) => outcome = Ok(reply.slice(n..)),
                    // Would block, or failed: the client's own write sees it.
                    Err(_) => {}
                }
            }
        }
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
            self.waker.wake();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake as TaskWake;

    struct Count(AtomicUsize);
    impl TaskWake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wake_parks_wakes_once_and_keeps_a_permit() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let w = Wake::default();
        // Nothing yet: parked.
        assert_eq!(w.poll(&mut cx), Poll::Pending);
        // Two wake-ups before the task runs: one task wake, one Ready.
        w.wake();
        w.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(w.poll(&mut cx), Poll::Ready(()));
        assert_eq!(w.poll(&mut cx), Poll::Pending);
        // A wake-up while nobody is parked is a permit for the next poll.
        let w2 = Wake::default();
        w2.wake();
        assert_eq!(w2.poll(&mut cx), Poll::Ready(()));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn parts_wake_their_owner_once_when_the_last_one_lands() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let owner = Rc::new(Wake::default());
        assert_eq!(owner.poll(&mut cx), Poll::Pending);
        let countdown = Rc::new(Cell::new(3));
        let parts: Vec<_> = (0..3)
            .map(|_| Slot::part(owner.clone(), countdown.clone()))
            .collect();
        parts[0].fill(Ok(Bytes::from_static(b"+a\r\n")));
        parts[0].fill(Err(ErrKind::Io)); // first outcome wins, counted once
        parts[2].fill(Err(ErrKind::TimedOut));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        parts[1].fill(Ok(Bytes::from_static(b"+b\r\n")));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(owner.poll(&mut cx), Poll::Ready(()));
        assert_eq!(parts[0].take(), Some(Ok(Bytes::from_static(b"+a\r\n"))));
        assert_eq!(parts[2].take(), Some(Err(ErrKind::TimedOut)));
    }

    #[test]
    fn a_retry_takes_the_first_error_only() {
        let owner = Rc::new(Wake::default());
        let slot = Slot::new(owner.clone());
        let tried = Rc::new(Cell::new(None));
        let t = tried.clone();
        slot.on_error(Box::new(move |e| {
            t.set(Some(e));
            true
        }));
        // The error is retried (not filled); the next outcome is the reply.
        slot.fill(Err(ErrKind::Reset));
        assert_eq!(tried.get(), Some(ErrKind::Reset));
        assert!(!slot.is_done());
        slot.fill(Err(ErrKind::Refused));
        assert_eq!(slot.take(), Some(Err(ErrKind::Refused)));
        // A retry that gives up lets the error through; a reply never retries.
        let slot = Slot::new(owner.clone());
        slot.on_error(Box::new(|_| false));
        slot.fill(Err(ErrKind::TimedOut));
        assert_eq!(slot.take(), Some(Err(ErrKind::TimedOut)));
        let slot = Slot::new(owner);
        slot.on_error(Box::new(|_| panic!("a reply is not retried")));
        slot.fill(Ok(Bytes::from_static(b"$1\r\nx\r\n")));
        assert!(slot.is_done());
    }

    /// A connected pair: the proxy's side as a [`Stream`], the client's as
    /// a blocking std socket.
    async fn pair() -> (Rc<Stream>, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        a.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
        let a = Stream::Unix(tokio::net::UnixStream::from_std(a).unwrap_or_else(|e| panic!("{e}")));
        // (tokio writes once it has seen the socket writable.)
        a.writable().await.unwrap_or_else(|e| panic!("{e}"));
        b.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        (Rc::new(a), b)
    }

    fn counted() -> (Arc<Count>, Rc<Wake>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let owner = Rc::new(Wake::default());
        let mut cx = Context::from_waker(&waker);
        assert_eq!(owner.poll(&mut cx), Poll::Pending);
        (count, owner, waker)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_direct_reply_is_written_by_the_filler_and_wakes_nobody() {
        runtime().block_on(async {
            use std::io::Read;
            let (stream, mut client) = pair().await;
            let (count, owner, _w) = counted();
            let slot = Slot::new(owner);
            slot.direct(Rc::downgrade(&stream));
            let t = Instant::now();
            slot.fill_at(Ok(Bytes::from_static(b"$1\r\nx\r\n")), Some(t));
            assert_eq!(slot.delivered(), Some(t));
            assert_eq!(slot.take(), None);
            assert_eq!(count.0.load(Ordering::SeqCst), 0);
            let mut got = [0u8; 7];
            client
                .read_exact(&mut got)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&got, b"$1\r\nx\r\n");
            // Delivered: a later outcome (a timeout racing it) is ignored.
            slot.fill(Err(ErrKind::TimedOut));
            assert_eq!(slot.take(), None);
            assert_eq!(count.0.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn errors_withdrawn_and_orphaned_directs_land_in_the_slot() {
        runtime().block_on(async {
            let (stream, _client) = pair().await;
            // An error is the client's to render: stored, owner woken.
            let (count, owner, _w) = counted();
            let slot = Slot::new(owner);
            slot.direct(Rc::downgrade(&stream));
            slot.fill(Err(ErrKind::Reset));
            assert_eq!(slot.delivered(), None);
            assert_eq!(slot.take(), Some(Err(ErrKind::Reset)));
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
            // Withdrawn (the client woke for something else): stored.
            let (count, owner, _w) = counted();
            let slot = Slot::new(owner);
            slot.direct(Rc::downgrade(&stream));
            slot.undirect();
            slot.fill(Ok(Bytes::from_static(b"+OK\r\n")));
            assert_eq!(slot.take(), Some(Ok(Bytes::from_static(b"+OK\r\n"))));
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
            // The client is gone: stored, harmlessly.
            let (count, owner, _w) = counted();
            let slot = Slot::new(owner);
            slot.direct(Rc::downgrade(&stream));
            drop(stream);
            slot.fill(Ok(Bytes::from_static(b"+OK\r\n")));
            assert!(slot.is_done());
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn what_the_socket_does_not_take_is_left_for_the_client_in_order() {
        runtime().block_on(async {
            use std::io::{Read, Write};
            let (stream, mut client) = pair().await;
            // Fill the socket to the brim behind tokio's back (it still
            // thinks it writable), then open a window smaller than the reply.
            let Stream::Unix(s) = &*stream else {
                unreachable!()
            };
            let fd = std::os::fd::AsFd::as_fd(s)
                .try_clone_to_owned()
                .unwrap_or_else(|e| panic!("{e}"));
            let mut raw = std::os::unix::net::UnixStream::from(fd);
            let mut queued = 0usize;
            loop {
                match raw.write(&[b'.'; 4096]) {
                    Ok(n) => queued += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(queued > 8192, "the socket took {queued} bytes");
            let mut window = vec![0u8; 8192];
            client
                .read_exact(&mut window)
                .unwrap_or_else(|e| panic!("{e}"));
            queued -= window.len();
            let reply: Bytes = (0..200_000u32)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>()
                .into();
            let (count, owner, _w) = counted();
            let slot = Slot::new(owner);
            slot.direct(Rc::downgrade(&stream));
            slot.fill(Ok(reply.clone()));
            assert_eq!(slot.delivered(), None);
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
            let Some(Ok(rest)) = slot.take() else {
                panic!("the rest of the reply is in the slot")
            };
            assert!(rest.len() < reply.len(), "part of it was written");
            // The filler wrote a prefix; the client writes the rest after it.
            let mut sent = vec![0u8; queued + reply.len() - rest.len()];
            client
                .read_exact(&mut sent)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(sent[..queued].iter().all(|&b| b == b'.'));
            let mut whole = sent[queued..].to_vec();
            whole.extend_from_slice(&rest);
            assert_eq!(whole, reply.as_ref());
        });
    }
}
