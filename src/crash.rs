//! A fatal signal, as nutcracker reports it: `signal 11 (SIGSEGV) received,
//! core dumping` in the log, then the signal's default action (a core dump).
//!
//! The handler may run at any point of any thread, so it only does what is
//! async-signal-safe: it reads the clock, formats the line into a buffer on
//! its stack (no allocation, no lock), `write`s it to a descriptor kept for
//! it (a duplicate of the log file's, or stderr), restores the default
//! action and raises the signal again.

use std::sync::atomic::{AtomicI32, Ordering};

/// The descriptor the handler writes to: stderr until a log file is set.
static LOG_FD: AtomicI32 = AtomicI32::new(2);

/// The fatal signals reported: (number, name).
const FATAL: [(libc::c_int, &str); 4] = [
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGFPE, "SIGFPE"),
];

/// Makes the handler write to (a duplicate of) `fd`, the log file just
/// opened; the previous duplicate is closed.
#[allow(unsafe_code)]
pub fn log_to(fd: std::os::fd::RawFd) {
    // SAFETY: dup on a descriptor the caller holds open; close on the
    // duplicate this module made and no longer publishes.
    unsafe {
        let dup = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
        if dup < 0 {
            return;
        }
        let old = LOG_FD.swap(dup, Ordering::SeqCst);
        if old > 2 {
            libc::close(old);
        }
    }
}

/// Installs the handler for SIGSEGV, SIGBUS, SIGILL and SIGFPE.
#[allow(unsafe_code)]
pub fn install() {
    for (sig, _) in FATAL {
        // SAFETY: a zeroed sigaction is valid; the handler is an
        // `extern "C" fn(c_int)` that only makes async-signal-safe calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESETHAND | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

#[allow(unsafe_code)]
extern "C" fn handler(sig: libc::c_int) {
    let mut buf = [0u8; 128];
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime, write and raise are async-signal-safe; `buf`
    // and `ts` live on this stack frame.
    unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        let n = line(
            &mut buf,
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.max(0) as u64 / 1_000_000,
            sig,
        );
        libc::write(LOG_FD.load(Ordering::Relaxed), buf.as_ptr().cast(), n);
        // SA_RESETHAND made the action the default again: the signal now
        // does what it would have done (a core dump), from a fault or a kill.
        libc::raise(sig);
    }
}

/// `[YYYY-MM-DD HH:MM:SS.mmm] ERROR signal 11 (SIGSEGV) received, core
/// dumping\n` into `buf`; returns its length. No allocation.
fn line(buf: &mut [u8; 128], secs: u64, millis: u64, sig: libc::c_int) -> usize {
    let mut w = Cursor { buf, at: 0 };
    let (y, m, d) = crate::log::civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    w.put(b"[");
    w.num(y.max(0) as u64, 4);
    w.put(b"-");
    w.num(u64::from(m), 2);
    w.put(b"-");
    w.num(u64::from(d), 2);
    w.put(b" ");
    w.num(s / 3600, 2);
    w.put(b":");
    w.num(s / 60 % 60, 2);
    w.put(b":");
    w.num(s % 60, 2);
    w.put(b".");
    w.num(millis % 1000, 3);
    w.put(b"] ERROR signal ");
    w.num(sig.max(0) as u64, 1);
    w.put(b" (");
    let name = FATAL
        .iter()
        .find(|(n, _)| *n == sig)
        .map_or("?", |(_, name)| name);
    w.put(name.as_bytes());
    w.put(b") received, core dumping\n");
    w.at
}

struct Cursor<'a> {
    buf: &'a mut [u8; 128],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, b: &[u8]) {
        for &c in b {
            if self.at < self.buf.len() {
                self.buf[self.at] = c;
                self.at += 1;
            }
        }
    }

    /// `n` in decimal, zero-padded to `width` digits.
    fn num(&mut self, n: u64, width: usize) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for _ in (digits.len() - i)..width {
            self.put(b"0");
        }
        self.put(&digits[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_nutcracker_writes() {
        let mut buf = [0u8; 128];
        // 2026-11-25 07:08:09.045 UTC
        let n = line(
            &mut buf,
            20_782 * 86_400 + 7 * 3600 + 8 * 60 + 9,
            45,
            libc::SIGSEGV,
        );
        assert_eq!(
            std::str::from_utf8(&buf[..n]),
            Ok("[2026-11-25 07:08:09.045] ERROR signal 11 (SIGSEGV) received, core dumping\n")
        );
    }
}
