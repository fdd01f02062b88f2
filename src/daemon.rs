//! `-d` and `-p`: daemonizing (before any thread exists) and the pid file.

use std::io;

/// Detaches from the terminal: fork, setsid, fork, stdio to /dev/null, umask 0
/// (as nutcracker; the working directory is kept, so relative paths still work).
/// Must run before any thread is started.
#[allow(unsafe_code)]
pub fn daemonize() -> io::Result<()> {
    // SAFETY: called from main before any runtime or other thread exists, so
    // fork() duplicates a single-threaded process; the parent exits at once with
    // _exit (no destructors run twice), the child only calls async-signal-safe
    // functions until it returns to ordinary Rust code.
    unsafe {
        match libc::fork() {
            -1 => return Err(io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        if libc::setsid() == -1 {
            return Err(io::Error::last_os_error());
        }
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        match libc::fork() {
            -1 => return Err(io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        libc::umask(0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
        // Undo the SIGHUP ignore: SIGHUP reopens the log file.
        libc::signal(libc::SIGHUP, libc::SIG_DFL);
    }
    Ok(())
}

/// A pid file, removed when dropped (clean shutdown).
#[derive(Debug)]
pub struct PidFile {
    path: String,
}

impl PidFile {
    /// Writes the decimal pid, without a newline (as nutcracker).
    pub fn create(path: &str) -> io::Result<PidFile> {
        std::fs::write(path, std::process::id().to_string())?;
        Ok(PidFile {
            path: path.to_string(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // After a binary upgrade the file names the new process: leave it.
        let ours = std::fs::read_to_string(&self.path)
            .map(|s| s.trim() == std::process::id().to_string())
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
