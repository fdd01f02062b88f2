//! Logging on `tracing`, with nutcracker's levels and signals.
//!
//! `-v N` (0–11) maps onto tracing levels: 0–3 error, 4 warn, 5 (default) info,
//! 6–7 debug, 8–11 trace. Lines go to stderr or to the `-o` file as
//! `[YYYY-MM-DD HH:MM:SS.mmm] LEVEL message` (UTC). SIGHUP reopens the file
//! (logrotate), SIGTTIN/SIGTTOU raise and lower the level at run time.

use arc_swap::ArcSwap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::reload;

/// The tracing level for a nutcracker verbosity.
pub fn level_for(verbosity: u8) -> LevelFilter {
    match verbosity {
        0..=3 => LevelFilter::ERROR,
        4 => LevelFilter::WARN,
        5 => LevelFilter::INFO,
        6 | 7 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Where log lines go: stderr, or a file that SIGHUP reopens.
#[derive(Clone, Debug)]
pub struct Sink {
    file: Option<(String, Arc<ArcSwap<File>>)>,
}

#[derive(Debug)]
pub struct SinkWriter(Option<arc_swap::Guard<Arc<File>>>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.0 {
            Some(f) => (&***f).write(buf),
            None => io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter(self.file.as_ref().map(|(_, f)| f.load()))
    }
}

fn open(path: &str) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    // A crash is reported in the same file (see crate::crash).
    crate::crash::log_to(std::os::fd::AsRawFd::as_raw_fd(&f));
    Ok(f)
}

/// UTC timestamps in nutcracker's layout.
struct Stamp;

impl FormatTime for Stamp {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs();
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let s = secs % 86_400;
        write!(
            w,
            "[{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}]",
            s / 3600,
            s / 60 % 60,
            s % 60,
            now.subsec_millis()
        )
    }
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The installed logger: change its level, reopen its file.
pub struct Logger {
    sink: Sink,
    verbosity: AtomicU8,
    reload: reload::Handle<LevelFilter, tracing_subscriber::Registry>,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("verbosity", &self.verbosity)
            .finish()
    }
}

impl Logger {
    /// Opens `-o FILE` (if any) and installs the global subscriber.
    pub fn init(verbosity: u8, output: Option<&str>) -> io::Result<Logger> {
        let file = match output {
            Some(p) if p != "stderr" => {
                Some((p.to_string(), Arc::new(ArcSwap::from_pointee(open(p)?))))
            }
            _ => None,
        };
        let sink = Sink { file };
        let (filter, handle) = reload::Layer::new(level_for(verbosity));
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(sink.clone())
            .with_ansi(false)
            .with_target(false)
            .with_timer(Stamp);
        // A second init (tests) keeps the first subscriber; that is fine.
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init();
        Ok(Logger {
            sink,
            verbosity: AtomicU8::new(verbosity),
            reload: handle,
        })
    }

    /// SIGHUP: reopen the log file (after logrotate moved it).
    pub fn reopen(&self) {
        if let Some((path, f)) = &self.sink.file {
            match open(path) {
                Ok(new) => f.store(Arc::new(new)),
                Err(e) => tracing::error!("reopening log file '{path}' failed: {e}"),
            }
        }
    }

    /// SIGTTIN (+1) / SIGTTOU (−1): returns the new verbosity.
    pub fn adjust(&self, up: bool) -> u8 {
        let old = self.verbosity.load(Ordering::Relaxed);
        let new = if up {
            (old + 1).min(crate::cli::MAX_VERBOSITY)
        } else {
            old.saturating_sub(1)
        };
        self.verbosity.store(new, Ordering::Relaxed);
        let _ = self.reload.modify(|f| *f = level_for(new));
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_782), (2026, 11, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn levels() {
        assert_eq!(level_for(0), LevelFilter::ERROR);
        assert_eq!(level_for(4), LevelFilter::WARN);
        assert_eq!(level_for(5), LevelFilter::INFO);
        assert_eq!(level_for(11), LevelFilter::TRACE);
    }
}
