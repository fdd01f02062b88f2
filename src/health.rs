//! Server health and `auto_eject_hosts` (spec §7.3), process-wide: every
//! worker's connections to a server report into the same [`PoolHealth`].
//!
//! * Every closing of a connection to a server is one failure; any complete
//!   reply resets the count (so the limit counts consecutive failures).
//! * With `auto_eject_hosts`, `server_failure_limit` failures eject the
//!   server: the distribution is rebuilt without it at once, and it comes back
//!   at the first request after `server_retry_timeout` (nothing probes it; the
//!   first requests routed to it are the probe).
//! * With every server ejected the router answers "all ejected" and requests
//!   fail at once with `Connection refused`, as nutcracker does.
//!
//! The request path pays one relaxed atomic load per request (is a retry
//! due?) and one per reply (is the failure count non-zero?). Rebuilds are
//! rare and serialised by a mutex; routing never waits for them (the router
//! publishes the new distribution with arc-swap).

use crate::route::Router;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One server's health.
#[derive(Debug, Default)]
pub struct ServerHealth {
    /// Consecutive failures since the last reply (or ejection).
    failures: AtomicU32,
    /// While ejected: when it may come back (µs since the pool's epoch).
    /// 0 when it is in the ring.
    ejected_until: AtomicU64,
    /// When it was last ejected, in µs since the unix epoch; 0 if never
    /// (server stat `server_ejected_at`).
    ejected_at: AtomicU64,
}

/// The health of every server of a pool.
#[derive(Debug)]
pub struct PoolHealth {
    auto_eject: bool,
    limit: u32,
    retry: Duration,
    epoch: Instant,
    servers: Vec<ServerHealth>,
    /// The earliest time an ejected server may come back; 0 when none is out.
    next_retry: AtomicU64,
    rebuild: Mutex<()>,
    /// Ejections so far (pool stat `server_ejects`).
    pub ejects: AtomicU64,
}

impl PoolHealth {
    pub fn new(auto_eject: bool, limit: u32, retry: Duration, servers: usize) -> PoolHealth {
        PoolHealth {
            auto_eject,
            limit: limit.max(1),
            retry,
            epoch: Instant::now(),
            servers: (0..servers).map(|_| ServerHealth::default()).collect(),
            next_retry: AtomicU64::new(0),
            rebuild: Mutex::new(()),
            ejects: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// A connection to server `i` closed (any reason): count it, and eject the
    /// server when the limit is reached.
    pub fn failed(&self, router: &Router, i: usize) {
        let Some(s) = self.servers.get(i) else { return };
        if !self.auto_eject {
            return;
        }
        let n = s.failures.fetch_add(1, Relaxed) + 1;
        if n < self.limit {
            return;
        }
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        if s.ejected_until.load(Relaxed) != 0 {
            return; // another worker ejected it meanwhile
        }
        s.failures.store(0, Relaxed);
        let now = self.now();
        s.ejected_until
            .store(now + self.retry.as_micros() as u64, Relaxed);
        s.ejected_at.store(unix_micros(), Relaxed);
        self.ejects.fetch_add(1, Relaxed);
        tracing::warn!(
            "server '{}' ejected after {n} failure(s) for {} ms",
            router.nodes().get(i).map_or("?", |n| n.name.as_str()),
            self.retry.as_millis()
        );
        self.rebuild_at(router, now);
    }

    /// When server `i` was last ejected (µs since the unix epoch), 0 if never.
    pub fn ejected_at(&self, i: usize) -> u64 {
        self.servers
            .get(i)
            .map_or(0, |s| s.ejected_at.load(Relaxed))
    }

    /// Whether server `i` is out of the distribution right now.
    pub fn is_ejected(&self, i: usize) -> bool {
        self.servers
            .get(i)
            .is_some_and(|s| s.ejected_until.load(Relaxed) > self.now())
    }

    /// A complete reply came from server `i`.
    #[inline]
    pub fn replied(&self, i: usize) {
        if let Some(s) = self.servers.get(i) {
            if s.failures.load(Relaxed) != 0 {
                s.failures.store(0, Relaxed);
            }
        }
    }

    /// Called before routing a request: puts back every ejected server whose
    /// retry time has passed.
    #[inline]
    pub fn before_dispatch(&self, router: &Router) {
        let due = self.next_retry.load(Relaxed);
        if due != 0 && self.now() >= due {
            let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
            self.rebuild_at(router, self.now());
        }
    }

    /// Rebuilds the distribution over the servers that are live at `now`.
    fn rebuild_at(&self, router: &Router, now: u64) {
        let mut next = u64::MAX;
        let live: Vec<bool> = self
            .servers
            .iter()
            .map(|s| {
                let until = s.ejected_until.load(Relaxed);
                if until == 0 {
                    true
                } else if until <= now {
                    s.ejected_until.store(0, Relaxed);
                    true
                } else {
                    next = next.min(until);
                    false
                }
            })
            .collect();
        router.rebuild(|i| live.get(i).copied().unwrap_or(false));
        self.next_retry
            .store(if next == u64::MAX { 0 } else { next }, Relaxed);
    }
}
