//! `--watch-config`: reload when the configuration file, or a certificate
//! or key file it names, changes.
//!
//! A thread watches each file's directory with inotify (editors and
//! configuration managers replace a file by renaming a new one over it, which
//! a watch on the file itself would miss) for the file's name being written,
//! moved in or created; once the changes have been quiet for
//! [`QUIET`], it asks for a reload — the same one SIGUSR1 makes, so a
//! half-written file that does not validate changes nothing, and the next
//! write reloads again. The set of files is [`Watched`]: a reload that names
//! other certificate files changes it, and the thread follows within
//! [`RESYNC`].

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How long the file must be left alone before it is reloaded.
pub const QUIET: Duration = Duration::from_millis(200);
/// How soon a change of the set of watched files is followed.
pub const RESYNC: Duration = Duration::from_secs(1);

/// The files watched: the configuration file and the TLS files it names.
pub type Watched = Arc<Mutex<Vec<String>>>;

/// A file's directory and name.
fn split(path: &str) -> Option<(PathBuf, Vec<u8>)> {
    let p = Path::new(path);
    let name = p.file_name()?.as_bytes().to_vec();
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    Some((dir, name))
}

/// Starts watching the files of `files` (the first is the configuration
/// file, which must be watchable); every settled change sends `()`.
#[allow(unsafe_code)]
pub fn watch(files: Watched) -> std::io::Result<UnboundedReceiver<()>> {
    // SAFETY: inotify_init1 takes flags only.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut w = Watcher {
        fd,
        dirs: HashMap::new(),
    };
    let first = files.lock().ok().and_then(|f| f.first().cloned());
    let Some(first) = first else {
        return Err(std::io::Error::other("no file to watch"));
    };
    if let Err(e) = w.add(&first) {
        // SAFETY: closing the descriptor made above.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let (tx, rx) = unbounded_channel();
    std::thread::Builder::new()
        .name("shardproxy-watch".into())
        .spawn(move || run(w, files, tx))?;
    Ok(rx)
}

struct Watcher {
    fd: libc::c_int,
    /// Per watch descriptor: its directory and the names watched in it.
    dirs: HashMap<libc::c_int, (PathBuf, Vec<Vec<u8>>)>,
}

impl Watcher {
    /// Watches `path` (its directory, for its name).
    #[allow(unsafe_code)]
    fn add(&mut self, path: &str) -> std::io::Result<()> {
        let (dir, name) =
            split(path).ok_or_else(|| std::io::Error::other(format!("'{path}' names no file")))?;
        if let Some((_, names)) = self.dirs.values_mut().find(|(d, _)| *d == dir) {
            if !names.contains(&name) {
                names.push(name);
            }
            return Ok(());
        }
        let cdir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("the directory name contains a NUL byte"))?;
        let mask = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE;
        // SAFETY: a valid C string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd, cdir.as_ptr(), mask) };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.dirs.insert(wd, (dir, vec![name]));
        Ok(())
    }

    /// Watches exactly `files` (directories no longer needed stay watched:
    /// their events just match no name).
    fn sync(&mut self, files: &[String]) {
        for (_, names) in self.dirs.values_mut() {
            names.clear();
        }
        for f in files {
            if let Err(e) = self.add(f) {
                tracing::warn!("--watch-config: cannot watch '{f}': {e}");
            }
        }
    }

    fn is_ours(&self, wd: libc::c_int, name: &[u8]) -> bool {
        self.dirs
            .get(&wd)
            .is_some_and(|(_, names)| names.iter().any(|n| n == name))
    }
}

#[allow(unsafe_code)]
fn run(mut w: Watcher, files: Watched, tx: UnboundedSender<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut known: Vec<String> = Vec::new();
    loop {
        // Block until an event (re-reading the set of files every RESYNC),
        // then wait for QUIET without one for our files.
        let mut ours = false;
        let mut timeout = RESYNC.as_millis() as libc::c_int;
        loop {
            if !ours {
                if let Ok(f) = files.lock() {
                    if *f != known {
                        known = f.clone();
                        w.sync(&known);
                    }
                }
            }
            let mut pfd = libc::pollfd {
                fd: w.fd,
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
                if ours {
                    break; // quiet
                }
                continue;
            }
            // SAFETY: reading into a buffer we own, at most its length.
            let got = unsafe { libc::read(w.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                return;
            }
            if events(&buf[..got as usize]).any(|(wd, n)| w.is_ours(wd, n)) {
                ours = true;
            }
            if ours {
                timeout = QUIET.as_millis() as libc::c_int;
            }
        }
        if tx.send(()).is_err() {
            return;
        }
    }
}

/// The watch descriptors and file names of the inotify events in `buf`.
fn events(buf: &[u8]) -> impl Iterator<Item = (libc::c_int, &[u8])> {
    // struct inotify_event { int wd; uint32_t mask, cookie, len; char name[]; }
    const HEAD: usize = 16;
    let mut at = 0;
    std::iter::from_fn(move || {
        let head = buf.get(at..at + HEAD)?;
        let wd = i32::from_ne_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_ne_bytes([head[12], head[13], head[14], head[15]]) as usize;
        let name = buf.get(at + HEAD..at + HEAD + len)?;
        at += HEAD + len;
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Some((wd, &name[..end]))
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
        let got: Vec<(i32, &[u8])> = events(&buf).collect();
        assert_eq!(got, vec![(1, &b"proxy.yml"[..]), (1, b""), (1, b"x")]);
        // A truncated event ends the list.
        assert_eq!(events(&buf[..20]).count(), 0);
    }
}
