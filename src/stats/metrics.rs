//! Per-worker metrics: plain counters, gauges and latency histograms that
//! exactly one worker thread writes and the stats thread reads.
//!
//! Each worker owns its own set (one allocation per pool and per server, so two
//! workers never share a cache line), and every update is a relaxed load and a
//! relaxed store of an atomic — on x86-64 and aarch64 the same instructions as
//! a plain `u64` increment, no locked read-modify-write and no lock. This is
//! sound because a metric has a single writer; the reader may see a value one
//! update old, never a torn one. The stats thread sums the workers' sets when
//! it is asked ([`super::Snapshot`]), so reads are live (nutcracker's lag of
//! up to two intervals, spec §9.10, is gone).

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A counter or gauge with a single writer (see the module docs).
#[derive(Debug, Default)]
pub struct Metric(AtomicI64);

impl Metric {
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn incr(&self) {
        self.add(1);
    }

    #[inline]
    pub fn decr(&self) {
        self.add(-1);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Pool-level metrics kept per worker, in nutcracker's order (`server_ejects`
/// is process-wide and lives in [`crate::health`], but keeps its slot here so
/// the JSON writer can walk one list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolField {
    ClientEof = 0,
    ClientErr,
    ClientConnections,
    ServerEjects,
    ForwardError,
    Fragments,
}

/// Server-level metrics kept per worker, in nutcracker's order
/// (`server_ejected_at` is process-wide, see [`crate::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerField {
    ServerEof = 0,
    ServerErr,
    ServerTimedout,
    ServerConnections,
    ServerEjectedAt,
    Requests,
    RequestBytes,
    Responses,
    ResponseBytes,
    InQueue,
    InQueueBytes,
    OutQueue,
    OutQueueBytes,
}

pub const POOL_FIELDS: usize = 6;
pub const SERVER_FIELDS: usize = 13;

/// Histogram bucket upper bounds in microseconds (and `+Inf` after them):
/// from a loopback round trip to a request that waited out a long timeout.
pub const BUCKETS_US: [u64; 18] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram with fixed buckets and a single writer.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: [Metric; BUCKETS_US.len() + 1],
    sum_ns: Metric,
}

impl Histogram {
    #[inline]
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i].incr();
        self.sum_ns.add(d.as_nanos().min(i64::MAX as u128) as i64);
    }

    /// Adds this histogram into `into` (bucket counts, then the sum in ns).
    pub fn add_to(&self, into: &mut HistogramSum) {
        for (a, c) in into.counts.iter_mut().zip(&self.counts) {
            *a += c.get() as u64;
        }
        into.sum_ns += self.sum_ns.get() as u64;
    }
}

/// The sum of several workers' histograms.
#[derive(Debug, Default, Clone)]
pub struct HistogramSum {
    pub counts: [u64; BUCKETS_US.len() + 1],
    pub sum_ns: u64,
}

impl HistogramSum {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What kind of request a client-observed latency belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A single-key read (redis GET, HGET…; memcache get of one key).
    Read = 0,
    /// A single-key write (SET, INCR, DEL of one key; memcache storage,
    /// arithmetic, touch, delete).
    Write,
    /// A multi-key request split per server (MGET, MSET, DEL…; memcache
    /// multi-get).
    Multi,
    /// Answered by the proxy itself: PING, AUTH, errors for bad requests…
    Local,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Read, Class::Write, Class::Multi, Class::Local];

    pub fn label(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Multi => "multi",
            Class::Local => "local",
        }
    }
}

/// One worker's metrics for one server.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub m: [Metric; SERVER_FIELDS],
    /// Backend response latency: request written → reply read.
    pub latency: Histogram,
    /// Connections pinned by client sessions (WATCH, blocking commands,
    /// subscriptions) right now; they count in `server_connections` too.
    pub pinned: Metric,
    /// Reads sent to one of the server's replicas (`read_from`).
    pub replica_reads: Metric,
    /// Reads that failed at a replica and were sent again elsewhere.
    pub replica_retries: Metric,
}

impl ServerStats {
    #[inline]
    pub fn get(&self, f: ServerField) -> &Metric {
        &self.m[f as usize]
    }
}

/// One worker's metrics for one pool.
#[derive(Debug)]
pub struct PoolStats {
    pub m: [Metric; POOL_FIELDS],
    /// Client-observed latency per [`Class`]: request read → reply ready to
    /// be written.
    pub latency: [Histogram; 4],
    /// Connections closed as attacks, per [`crate::proto::guard::Attack`].
    pub security: [Metric; 3],
    /// `redis_cluster`: redirections followed: `MOVED`, `ASK`, `TRYAGAIN`.
    pub redirects: [Metric; 3],
    /// Per server, in the pool's server order. A reload replaces the list
    /// (a server keeps its metrics under its name).
    pub servers: arc_swap::ArcSwap<Vec<Arc<ServerStats>>>,
}

impl PoolStats {
    pub fn new(servers: usize) -> PoolStats {
        PoolStats {
            m: Default::default(),
            latency: Default::default(),
            security: Default::default(),
            redirects: Default::default(),
            servers: arc_swap::ArcSwap::from_pointee(
                (0..servers).map(|_| Arc::default()).collect(),
            ),
        }
    }

    #[inline]
    pub fn get(&self, f: PoolField) -> &Metric {
        &self.m[f as usize]
    }
}

/// One worker's metrics.
#[derive(Debug)]
pub struct WorkerStats {
    /// Connections ever opened by this worker: clients and server connections.
    pub total_connections: Metric,
    /// Of those, currently open.
    pub curr_connections: Metric,
    /// Per pool, in pool index order (a reload that adds or removes pools
    /// replaces the list; a pool keeps its metrics under its name).
    pub pools: arc_swap::ArcSwap<Vec<Arc<PoolStats>>>,
}

impl WorkerStats {
    /// Metrics for pools with these server counts.
    pub fn new(servers_per_pool: impl IntoIterator<Item = usize>) -> WorkerStats {
        WorkerStats {
            total_connections: Metric::default(),
            curr_connections: Metric::default(),
            pools: arc_swap::ArcSwap::from_pointee(
                servers_per_pool
                    .into_iter()
                    .map(|n| Arc::new(PoolStats::new(n)))
                    .collect(),
            ),
        }
    }

    /// A connection opened (counted in both header fields).
    #[inline]
    pub fn opened(&self) {
        self.total_connections.incr();
        self.curr_connections.incr();
    }

    #[inline]
    pub fn closed(&self) {
        self.curr_connections.decr();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(25)); // ≤ 25 µs: first bucket
        h.observe(Duration::from_micros(26)); // second
        h.observe(Duration::from_millis(1)); // ≤ 1000 µs
        h.observe(Duration::from_secs(60)); // +Inf
        let mut s = HistogramSum::default();
        h.add_to(&mut s);
        h.add_to(&mut s);
        assert_eq!(s.counts[0], 2);
        assert_eq!(s.counts[1], 2);
        assert_eq!(s.counts[5], 2);
        assert_eq!(s.counts[BUCKETS_US.len()], 2);
        assert_eq!(s.count(), 8);
        assert_eq!(s.sum_ns, 2 * (25_000 + 26_000 + 1_000_000 + 60_000_000_000));
    }

    #[test]
    fn metric_add_and_gauge_down() {
        let m = Metric::default();
        m.add(5);
        m.decr();
        m.decr();
        assert_eq!(m.get(), 3);
    }
}
