//! Binary upgrade without a gap: a new shardproxy process takes the running
//! one's listening sockets over a unix socket (`--upgrade-socket PATH`).
//!
//! The running process answers on PATH. A new process started with the same
//! option connects to it and asks (`TAKEOVER`); it receives every listening
//! socket of every pool (`SCM_RIGHTS`: the very sockets, with the
//! connections already queued on them, not new ones bound next to them),
//! starts its workers accepting on them, and says `READY`. Only then does
//! the old process stop accepting (its copies of the sockets close; the
//! sockets live on in the new process), serve its connected clients until
//! they leave or `--drain-timeout` ends, and exit. At no moment is there no
//! process accepting on a port, and no queued connection is dropped: the
//! accept queues themselves change hands. If the new process dies before
//! `READY`, the old one goes on as if nothing happened.
//!
//! Passing the sockets (rather than binding new ones with `SO_REUSEPORT`
//! next to the old ones) is what makes it gapless: connections queued on
//! an old `SO_REUSEPORT` socket are reset when it closes.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The listening sockets of the running process, per pool: what a new
/// process takes over. The reloader keeps it current.
#[derive(Debug, Default)]
pub struct Handover {
    pools: Mutex<Vec<Listening>>,
}

/// One pool's listening sockets.
#[derive(Debug)]
pub struct Listening {
    pub name: String,
    pub listen: String,
    pub fds: Vec<OwnedFd>,
}

impl Handover {
    /// Sets a pool's sockets (duplicates kept for a take-over).
    pub fn set(&self, name: &str, listen: &str, fds: Vec<OwnedFd>) {
        if let Ok(mut pools) = self.pools.lock() {
            pools.retain(|p| p.name != name);
            pools.push(Listening {
                name: name.into(),
                listen: listen.into(),
                fds,
            });
        }
    }

    /// A pool's sockets are no longer served (removed, moved): forget them,
    /// so that nothing keeps a retired socket open.
    pub fn remove(&self, name: &str) {
        if let Ok(mut pools) = self.pools.lock() {
            pools.retain(|p| p.name != name);
        }
    }
}

/// Answers take-over requests on `path` (in a thread of its own); calls
/// `done` once a new process said it is ready.
pub fn serve(
    path: &str,
    handover: Arc<Handover>,
    done: impl Fn() + Send + 'static,
) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let path = path.to_string();
    std::thread::Builder::new()
        .name("shardproxy-upgrade".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                match hand_over(conn, &handover) {
                    Ok(()) => {
                        tracing::info!(
                            "upgrade: a new process took the listeners over ({path}); draining"
                        );
                        done();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("upgrade: a take-over on {path} failed, going on: {e}")
                    }
                }
            }
        })?;
    Ok(())
}

fn hand_over(conn: UnixStream, handover: &Handover) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim_end() != "TAKEOVER 1" {
        return Err(io::Error::other(format!("unexpected request {line:?}")));
    }
    {
        let pools = handover
            .pools
            .lock()
            .map_err(|_| io::Error::other("the listener list is poisoned"))?;
        let mut text = String::new();
        let mut fds = Vec::new();
        for p in pools.iter() {
            text.push_str(&format!("POOL {} {} {}\n", p.fds.len(), p.name, p.listen));
            fds.extend(p.fds.iter().map(|f| f.as_raw_fd()));
        }
        text.push_str("END\n");
        // Sent while the list is locked: the descriptors stay open meanwhile.
        send_fds(&conn, text.as_bytes(), &fds)?;
    }
    line.clear();
    reader.read_line(&mut line)?;
    if line.trim_end() != "READY" {
        return Err(io::Error::other(format!(
            "the new process did not get ready ({line:?})"
        )));
    }
    Ok(())
}

/// What a new process took over, and the connection to say `READY` on.
#[derive(Debug)]
pub struct TakenOver {
    pub pools: Vec<Listening>,
    conn: UnixStream,
}

impl TakenOver {
    /// The listeners are being accepted on: the old process may go.
    pub fn ready(mut self) -> io::Result<()> {
        self.conn.write_all(b"READY\n")
    }

    /// Takes pool `name`'s sockets if they listen on `listen`.
    pub fn take(&mut self, name: &str, listen: &str) -> Option<Vec<OwnedFd>> {
        let i = self
            .pools
            .iter()
            .position(|p| p.name == name && p.listen == listen)?;
        Some(self.pools.remove(i).fds)
    }
}

/// Asks the process answering on `path` for its listeners; `None` when
/// nothing answers there (a first start).
pub fn take_over(path: &str) -> io::Result<Option<TakenOver>> {
    let mut conn = match UnixStream::connect(path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.write_all(b"TAKEOVER 1\n")?;
    let (text, mut fds) = recv_fds(&conn)?;
    let text = String::from_utf8(text).map_err(|_| io::Error::other("a non-UTF-8 answer"))?;
    let mut pools = Vec::new();
    let mut fds_left = fds.drain(..);
    for line in text.lines() {
        if line == "END" {
            break;
        }
        let mut parts = line.splitn(4, ' ');
        let (Some("POOL"), Some(n), Some(name), Some(listen)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(io::Error::other(format!("unexpected line {line:?}")));
        };
        let n: usize = n.parse().map_err(|_| io::Error::other("a bad count"))?;
        let taken: Vec<OwnedFd> = fds_left.by_ref().take(n).collect();
        if taken.len() != n {
            return Err(io::Error::other("fewer sockets than announced"));
        }
        pools.push(Listening {
            name: name.into(),
            listen: listen.into(),
            fds: taken,
        });
    }
    Ok(Some(TakenOver { pools, conn }))
}

/// The most sockets one message carries (the kernel's SCM_MAX_FD is 253).
const MAX_FDS: usize = 250;

#[allow(unsafe_code)]
fn send_fds(conn: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other(format!(
            "{} listening sockets: at most {MAX_FDS} can be handed over",
            fds.len()
        )));
    }
    let bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE/CMSG_LEN compute sizes; the msghdr points at
    // `data`, `cbuf` and `iov`, all alive until sendmsg returns; the control
    // buffer is sized by CMSG_SPACE for `fds`.
    unsafe {
        let space = libc::CMSG_SPACE(bytes as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null() {
                return Err(io::Error::other("no room for the sockets"));
            }
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), bytes);
        }
        if libc::sendmsg(conn.as_raw_fd(), &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[allow(unsafe_code)]
fn recv_fds(conn: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = vec![0u8; 64 * 1024];
    // SAFETY: as in send_fds; the received descriptors are owned from here
    // on (OwnedFd closes them).
    unsafe {
        let space = libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let n = libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut fds = Vec::new();
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = len / std::mem::size_of::<RawFd>();
                let p = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(p.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("the sockets did not all arrive"));
        }
        data.truncate(n as usize);
        Ok((data, fds))
    }
}
