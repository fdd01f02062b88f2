//! `--watch-config`: reload when the configuration file changes.
//!
//! A thread watches the file's directory with inotify (editors and
//! configuration managers replace a file by renaming a new one over it, which
//! a watch on the file itself would miss) for the file's name being written,
//! moved in or created; once the changes have been quiet for
//! [`QUIET`], it asks for a reload — the same one SIGUSR1 makes, so a
//! half-written file that does not validate changes nothing, and the next
//! write reloads again.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How long the file must be left alone before it is reloaded.
pub const QUIET: Duration = Duration::from_millis(200);

/// Starts watching `path`; every settled change sends `()`.
#[allow(unsafe_code)]
pub fn watch(path: &str) -> std::io::Result<UnboundedReceiver<()>> {
    let p = Path::new(path);
    let name = p
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .ok_or_else(|| std::io::Error::other(format!("'{path}' names no file")))?;
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let cdir = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the directory name contains a NUL byte"))?;
    // SAFETY: inotify_init1 takes flags only; inotify_add_watch a valid C
    // string that outlives the call.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mask = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE;
    // SAFETY: see above.
    if unsafe { libc::inotify_add_watch(fd, cdir.as_ptr(), mask) } < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: closing the descriptor made above.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let (tx, rx) = unbounded_channel();
    std::thread::Builder::new()
        .name("shardproxy-watch".into())
        .spawn(move || run(fd, &name, tx))?;
    Ok(rx)
}

#[allow(unsafe_code)]
fn run(fd: libc::c_int, name: &[u8], tx: UnboundedSender<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Block until an event, then wait for QUIET without one for our file.
        let mut ours = false;
        let mut timeout: libc::c_int = -1;
        loop {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if n == 0 {
                break; // quiet
            }
            // SAFETY: reading into a buffer we own, at most its length.
            let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                return;
            }
            if names(&buf[..got as usize]).any(|n| n == name) {
                ours = true;
            }
            if ours {
                timeout = QUIET.as_millis() as libc::c_int;
            }
        }
        if ours && tx.send(()).is_err() {
            return;
        }
    }
}

/// The file names of the inotify events in `buf`.
fn names(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    // struct inotify_event { int wd; uint32_t mask, cookie, len; char name[]; }
    const HEAD: usize = 16;
    let mut at = 0;
    std::iter::from_fn(move || {
        let head = buf.get(at..at + HEAD)?;
        let len = u32::from_ne_bytes([head[12], head[13], head[14], head[15]]) as usize;
        let name = buf.get(at + HEAD..at + HEAD + len)?;
        at += HEAD + len;
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Some(&name[..end])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names() {
        let mut buf = Vec::new();
        for (name, len) in [(&b"proxy.yml"[..], 16u32), (b"", 0), (b"x", 4)] {
            buf.extend_from_slice(&1i32.to_ne_bytes());
            buf.extend_from_slice(&2u32.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&len.to_ne_bytes());
            let mut n = name.to_vec();
            n.resize(len as usize, 0);
            buf.extend(n);
        }
        let got: Vec<&[u8]> = names(&buf).collect();
        assert_eq!(got, vec![&b"proxy.yml"[..], b"", b"x"]);
        // A truncated event ends the list.
        assert_eq!(names(&buf[..20]).count(), 0);
    }
}
