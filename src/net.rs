//! Sockets: listeners (TCP with backlog/reuseport, unix with permissions),
//! backend connects, and a stream type over TCP and unix sockets.

use crate::conf::{Listen, ServerAddr};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::task::{Context, Poll};

/// A listening socket, ready to be handed to a worker.
#[derive(Debug)]
pub enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl StdListener {
    /// A duplicate of the socket's descriptor (for a hand-over).
    pub fn dup_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        Ok(match self.try_clone()? {
            StdListener::Tcp(t) => std::os::fd::OwnedFd::from(t),
            StdListener::Unix(u) => std::os::fd::OwnedFd::from(u),
        })
    }

    pub fn try_clone(&self) -> io::Result<StdListener> {
        Ok(match self {
            StdListener::Tcp(l) => StdListener::Tcp(l.try_clone()?),
            StdListener::Unix(l) => StdListener::Unix(l.try_clone()?),
        })
    }
}

/// Binds a pool's listener. `reuseport` sets `SO_REUSEPORT` (one socket per
/// worker thread then shares the port, balanced by the kernel).
pub fn bind(listen: &Listen, backlog: u32, reuseport: bool) -> io::Result<StdListener> {
    let backlog = backlog.min(i32::MAX as u32) as i32;
    match listen {
        Listen::Tcp { addr, .. } => {
            let s = Socket::new(
                Domain::for_address(*addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            s.set_reuse_address(true)?;
            if reuseport {
                s.set_reuse_port(true)?;
            }
            s.set_nonblocking(true)?;
            s.bind(&(*addr).into())?;
            s.listen(backlog)?;
            Ok(StdListener::Tcp(s.into()))
        }
        Listen::Unix { path, perm } => {
            let _ = std::fs::remove_file(path);
            let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            s.set_nonblocking(true)?;
            s.bind(&socket2::SockAddr::unix(path)?)?;
            s.listen(backlog)?;
            if let Some(mode) = perm {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
            }
            Ok(StdListener::Unix(s.into()))
        }
    }
}

/// A connected stream (client or backend).
#[derive(Debug)]
pub enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
    /// TCP with TLS (see [`crate::tls`]).
    Tls(Box<crate::tls::TlsStream>),
}

impl Stream {
    /// Ready when the socket may be read (parks `cx`'s task otherwise). Polled
    /// directly, not through `readable()`: that future joins a waiter list
    /// under a mutex each time it is created.
    #[inline]
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            Stream::Tls(s) => s.poll_read_ready(cx),
        }
    }

    /// Ready when the socket may be written (parks `cx`'s task otherwise).
    #[inline]
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_write_ready(cx),
            Stream::Unix(s) => s.poll_write_ready(cx),
            Stream::Tls(s) => s.poll_write_ready(cx),
        }
    }

    /// Bytes the stream itself holds wait to be written (TLS records):
    /// wait for writability even with nothing else to write.
    #[inline]
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Tls(s) => s.wants_write(),
            _ => false,
        }
    }

    /// Writes what the stream itself holds (TLS records) as far as the
    /// socket takes it.
    #[inline]
    pub fn flush(&self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }

    /// The peer's address, for logs (`unix` for a unix socket client).
    pub fn peer(&self) -> String {
        match self {
            Stream::Tcp(s) => s
                .peer_addr()
                .map_or_else(|_| "an unknown peer".into(), |a| a.to_string()),
            Stream::Tls(s) => s
                .tcp
                .peer_addr()
                .map_or_else(|_| "an unknown peer".into(), |a| a.to_string()),
            Stream::Unix(_) => "a unix socket client".into(),
        }
    }

    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.writable().await,
            Stream::Unix(s) => s.writable().await,
            Stream::Tls(s) => s.tcp.writable().await,
        }
    }

    /// Reads what the socket holds into `buf`'s spare capacity (reserve
    /// first): `Ok(0)` is end of stream, `WouldBlock` means nothing to read.
    ///
    /// A short read (less than the space offered) drained the socket, so its
    /// readiness is cleared at once: the next wait goes to epoll instead of
    /// costing a `read` that returns `EAGAIN` (nutcracker's `recv_ready` does
    /// the same). Nothing is missed: mio registers edge-triggered, so data
    /// arriving after this read is a new event.
    pub fn try_read_buf(&self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        if let Stream::Tls(s) = self {
            return s.try_read_buf(buf);
        }
        if buf.len() == buf.capacity() {
            // Never offer an empty buffer: `recv` would return 0, which means EOF.
            buf.reserve(4096);
        }
        let got = std::cell::Cell::new(0);
        let read = || {
            let spare = buf.spare_capacity_mut();
            let room = spare.len();
            let n = match self {
                Stream::Tcp(s) => socket2::SockRef::from(s).recv(spare)?,
                Stream::Unix(s) => socket2::SockRef::from(s).recv(spare)?,
                Stream::Tls(_) => 0,
            };
            got.set(n);
            if n > 0 && n < room {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        };
        let r = match self {
            Stream::Tcp(s) => s.try_io(tokio::io::Interest::READABLE, read),
            Stream::Unix(s) => s.try_io(tokio::io::Interest::READABLE, read),
            Stream::Tls(_) => Ok(0),
        };
        let n = match r {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got.get() > 0 => got.get(),
            Err(e) => return Err(e),
        };
        // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
        #[allow(unsafe_code)]
        unsafe {
            bytes::BufMut::advance_mut(buf, n)
        };
        Ok(n)
    }

    /// Writes what the socket takes of `buf` now (plain sockets only: a TLS
    /// stream answers `WouldBlock`).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
            Stream::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Whether replies may be written to it by [`crate::msg::Slot::direct`].
    /// The address the peer connected to; `None` on a Unix socket.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Tls(s) => s.tcp.local_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    pub fn plain(&self) -> bool {
        !matches!(self, Stream::Tls(_))
    }

    pub fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write_vectored(bufs),
            Stream::Unix(s) => s.try_write_vectored(bufs),
            Stream::Tls(s) => s.try_write_vectored(bufs),
        }
    }
}

/// Connects to a backend (resolving its host name now, as nutcracker does).
pub async fn connect(addr: &ServerAddr) -> io::Result<Stream> {
    match addr {
        ServerAddr::Tcp { host, port } => {
            let mut addrs = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
            let a = addrs
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
            let s = tokio::net::TcpStream::connect(a).await?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
        ServerAddr::Unix { path } => Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?)),
    }
}

/// Buffers waiting to be written, in order, with vectored writes.
#[derive(Debug, Default)]
pub struct WriteQueue {
    bufs: std::collections::VecDeque<bytes::Bytes>,
    /// How much of the front buffer is already written.
    offset: usize,
    /// Unwritten bytes in total.
    len: usize,
}

/// Most buffers handed to one `writev`.
const MAX_IOV: usize = 64;

impl WriteQueue {
    pub fn push(&mut self, b: bytes::Bytes) {
        if b.is_empty() {
            // (A reply the client must not see: a quiet binary request's.)
            return;
        }
        self.len += b.len();
        self.bufs.push_back(b);
    }

    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Unwritten bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes as much as the socket takes now; `Ok` also when it would block.
    pub fn write_to(&mut self, stream: &Stream) -> io::Result<()> {
        if self.bufs.is_empty() {
            return stream.flush();
        }
        while !self.bufs.is_empty() {
            let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
            let n = self.bufs.len().min(MAX_IOV);
            for (i, b) in self.bufs.iter().take(n).enumerate() {
                iov[i] = io::IoSlice::new(if i == 0 { &b[self.offset..] } else { b });
            }
            let mut written = match stream.try_write_vectored(&iov[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            self.len -= written;
            while written > 0 {
                let Some(front) = self.bufs.front() else {
                    break;
                };
                let left = front.len() - self.offset;
                if written >= left {
                    written -= left;
                    self.bufs.pop_front();
                    self.offset = 0;
                } else {
                    self.offset += written;
                    written = 0;
                }
            }
        }
        Ok(())
    }
}
