//! Stats: nutcracker's stats port (the same JSON, byte for byte) and
//! Prometheus metrics, from one set of per-worker counters.
//!
//! * Workers update their own [`metrics::WorkerStats`] on the request path with
//!   plain single-writer stores: no lock, no shared cache line.
//! * What is process-wide is read where it lives: `server_ejects` and
//!   `server_ejected_at` in [`crate::health`], the pool listeners' state here.
//! * When asked (a stats-port connection, a `/metrics` scrape) the
//!   [`Registry`] sums every worker into a [`Snapshot`]; [`json`] and [`prom`]
//!   render it. Values are live, not up to two `-i` intervals old.

pub mod json;
pub mod metrics;
pub mod prom;
pub mod serve;

use crate::health::PoolHealth;
use metrics::{
    HistogramSum, PoolField, PoolStats, ServerField, WorkerStats, POOL_FIELDS, SERVER_FIELDS,
};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

/// Pool-level metrics, in nutcracker's order: (name, description).
pub const POOL_METRICS: [(&str, &str); POOL_FIELDS] = [
    ("client_eof", "# eof on client connections"),
    ("client_err", "# errors on client connections"),
    ("client_connections", "# active client connections"),
    ("server_ejects", "# times backend server was ejected"),
    ("forward_error", "# times we encountered a forwarding error"),
    (
        "fragments",
        "# fragments created from a multi-vector request",
    ),
];

/// Server-level metrics, in nutcracker's order: (name, description).
pub const SERVER_METRICS: [(&str, &str); SERVER_FIELDS] = [
    ("server_eof", "# eof on server connections"),
    ("server_err", "# errors on server connections"),
    ("server_timedout", "# timeouts on server connections"),
    ("server_connections", "# active server connections"),
    (
        "server_ejected_at",
        "timestamp when server was ejected in usec since epoch",
    ),
    ("requests", "# requests"),
    ("request_bytes", "total request bytes"),
    ("responses", "# responses"),
    ("response_bytes", "total response bytes"),
    ("in_queue", "# requests in incoming queue"),
    ("in_queue_bytes", "current request bytes in incoming queue"),
    ("out_queue", "# requests in outgoing queue"),
    ("out_queue_bytes", "current request bytes in outgoing queue"),
];

/// The `-D` text, byte for byte as nutcracker prints it after the banner.
pub fn describe() -> String {
    let mut s = String::from("pool stats:\n");
    for (name, desc) in POOL_METRICS {
        s.push_str(&format!("  {name:<20}\"{desc}\"\n"));
    }
    s.push_str("\nserver stats:\n");
    for (name, desc) in SERVER_METRICS {
        s.push_str(&format!("  {name:<20}\"{desc}\"\n"));
    }
    s
}

static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// How long the proxy has run (since its stats registry was made).
pub fn uptime() -> std::time::Duration {
    STARTED.get().map(|t| t.elapsed()).unwrap_or_default()
}

/// What the stats side knows about a pool besides its counters.
#[derive(Debug, Clone)]
pub struct PoolMeta {
    pub name: String,
    /// Server names in server index order.
    pub servers: Vec<String>,
    /// Where each server is now (Sentinel may have moved it).
    pub addresses: Vec<String>,
    /// Per server: the replicas read from (when `read_from` allows).
    pub replicas: Vec<Vec<String>>,
    pub health: Arc<PoolHealth>,
    /// Worker accept loops currently running for the pool.
    pub listening: Arc<AtomicUsize>,
}

/// Every worker's metrics and what is needed to render them.
#[derive(Debug)]
pub struct Registry {
    started: u64,
    hostname: String,
    /// Replaced pool by pool when a reload changes one.
    pools: std::sync::RwLock<Vec<PoolMeta>>,
    workers: Vec<Arc<WorkerStats>>,
    pub reloads: Reloads,
}

/// What configuration reloads did (Prometheus `shardproxy_config_*`).
#[derive(Debug, Default)]
pub struct Reloads {
    pub ok: std::sync::atomic::AtomicU64,
    pub error: std::sync::atomic::AtomicU64,
    /// FNV-1a 64 of the loaded file's bytes.
    pub hash: std::sync::atomic::AtomicU64,
    /// Unix time of the last successful load (start-up or reload).
    pub loaded_at: std::sync::atomic::AtomicU64,
    /// Sentinel failovers followed.
    pub failovers: std::sync::atomic::AtomicU64,
    /// Cluster slot maps that changed a pool's routing.
    pub slot_maps: std::sync::atomic::AtomicU64,
    /// Cluster slot maps fetched (changed or not).
    pub slot_map_fetches: std::sync::atomic::AtomicU64,
    /// Per sentinel followed: (pool, address, subscribed to it now).
    pub sentinels: std::sync::Mutex<Vec<(String, String, Arc<std::sync::atomic::AtomicBool>)>>,
}

impl Reloads {
    /// A sentinel followed for `pool`: the flag its follower keeps current.
    pub fn sentinel(&self, pool: &str, addr: &str) -> Arc<std::sync::atomic::AtomicBool> {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Ok(mut v) = self.sentinels.lock() {
            v.retain(|(p, a, _)| !(p == pool && a == addr));
            v.push((pool.into(), addr.into(), flag.clone()));
        }
        flag
    }

    /// `pool` follows no sentinel any more (a reload).
    pub fn forget_sentinels(&self, pool: &str) {
        if let Ok(mut v) = self.sentinels.lock() {
            v.retain(|(p, _, _)| p != pool);
        }
    }
}

impl Reloads {
    /// Records a configuration file now in effect.
    pub fn loaded(&self, text: &[u8]) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in text {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.hash.store(h, Relaxed);
        self.loaded_at.store(unix_secs(SystemTime::now()), Relaxed);
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `gethostname()`, or `unknown` (as nutcracker).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    if gethostname(&mut buf) != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if !s.is_empty() => s.to_string(),
        _ => "unknown".into(),
    }
}

#[allow(unsafe_code)]
fn gethostname(buf: &mut [u8]) -> i32 {
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) }
}

impl Registry {
    /// A registry for `pools`, with one metrics set per worker.
    pub fn new(pools: Vec<PoolMeta>, workers: usize) -> Registry {
        let _ = STARTED.set(std::time::Instant::now());
        let workers = (0..workers.max(1))
            .map(|_| Arc::new(WorkerStats::new(pools.iter().map(|p| p.servers.len()))))
            .collect();
        Registry {
            started: unix_secs(SystemTime::now()),
            hostname: hostname(),
            pools: std::sync::RwLock::new(pools),
            workers,
            reloads: Reloads::default(),
        }
    }

    /// Every worker's metrics.
    pub fn workers(&self) -> &[Arc<WorkerStats>] {
        &self.workers
    }

    /// A reload added or removed pools: the pools in their new order, and
    /// each worker's metrics for them (in the same order), replaced
    /// together.
    pub fn set_pools(&self, pools: Vec<PoolMeta>, per_worker: Vec<Vec<Arc<PoolStats>>>) {
        let mut guard = match self.pools.write() {
            Ok(g) => g,
            Err(g) => g.into_inner(),
        };
        for (w, list) in self.workers.iter().zip(per_worker) {
            w.pools.store(Arc::new(list));
        }
        *guard = pools;
    }

    /// What the stats side knows of the pools now, in order.
    pub fn pools(&self) -> Vec<PoolMeta> {
        match self.pools.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A reload changed pool `index`: what the stats side knows of it now.
    pub fn replace_pool(&self, index: usize, meta: PoolMeta) {
        if let Ok(mut pools) = self.pools.write() {
            if let Some(p) = pools.get_mut(index) {
                *p = meta;
            }
        }
    }

    /// Worker `i`'s metrics (workers are numbered from 0).
    pub fn worker(&self, i: usize) -> Option<Arc<WorkerStats>> {
        self.workers.get(i).cloned()
    }

    /// Every pool has a running listener.
    pub fn all_listening(&self) -> Result<(), Vec<String>> {
        let pools = match self.pools.read() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        let down: Vec<String> = pools
            .iter()
            .filter(|p| p.listening.load(Relaxed) == 0)
            .map(|p| p.name.clone())
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(down)
        }
    }

    /// Sums every worker's metrics, now.
    pub fn snapshot(&self) -> Snapshot {
        let now = unix_secs(SystemTime::now());
        let pools = match self.pools.read() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        let listeners = pools.len() as i64;
        let mut snap = Snapshot {
            hostname: self.hostname.clone(),
            uptime: now.saturating_sub(self.started),
            timestamp: now,
            total_connections: listeners,
            curr_connections: listeners,
            threads: self.workers.len(),
            reloads: (
                self.reloads.ok.load(Relaxed),
                self.reloads.error.load(Relaxed),
            ),
            failovers: self.reloads.failovers.load(Relaxed),
            slot_maps: self.reloads.slot_maps.load(Relaxed),
            slot_map_fetches: self.reloads.slot_map_fetches.load(Relaxed),
            sentinels: self
                .reloads
                .sentinels
                .lock()
                .map(|v| {
                    v.iter()
                        .map(|(p, a, up)| (p.clone(), a.clone(), up.load(Relaxed)))
                        .collect()
                })
                .unwrap_or_default(),
            config: (
                self.reloads.hash.load(Relaxed),
                self.reloads.loaded_at.load(Relaxed),
            ),
            pools: pools
                .iter()
                .map(|p| PoolSnap {
                    name: p.name.clone(),
                    m: [0; POOL_FIELDS],
                    latency: Default::default(),
                    security: [0; 3],
                    redirects: [0; 3],
                    listening: p.listening.load(Relaxed) > 0,
                    servers: p
                        .servers
                        .iter()
                        .enumerate()
                        .map(|(i, name)| ServerSnap {
                            name: name.clone(),
                            address: p.addresses.get(i).cloned().unwrap_or_default(),
                            m: [0; SERVER_FIELDS],
                            latency: HistogramSum::default(),
                            ejected: p.health.is_ejected(i),
                            pinned: 0,
                            replicas: p.replicas.get(i).cloned().unwrap_or_default(),
                            replica_reads: 0,
                            replica_retries: 0,
                        })
                        .collect(),
                })
                .collect(),
        };
        for w in &self.workers {
            for (ps, pw) in snap.pools.iter_mut().zip(w.pools.load().iter()) {
                for (a, m) in ps.m.iter_mut().zip(&pw.m) {
                    *a += m.get();
                }
                for (a, h) in ps.latency.iter_mut().zip(&pw.latency) {
                    h.add_to(a);
                }
                for (a, m) in ps.redirects.iter_mut().zip(&pw.redirects) {
                    *a += m.get();
                }
                for (a, m) in ps.security.iter_mut().zip(&pw.security) {
                    *a += m.get();
                }
                for (ss, sw) in ps.servers.iter_mut().zip(pw.servers.load().iter()) {
                    for (a, m) in ss.m.iter_mut().zip(&sw.m) {
                        *a += m.get();
                    }
                    sw.latency.add_to(&mut ss.latency);
                    ss.pinned += sw.pinned.get();
                    ss.replica_reads += sw.replica_reads.get();
                    ss.replica_retries += sw.replica_retries.get();
                }
            }
            // The header counts after the pool gauges: a closing client
            // leaves `curr_connections` before its pool's
            // `client_connections` (a Release fence between the two, see
            // `worker::serve_accepted`), so a snapshot that sees the pool
            // gauge down sees the header count down too.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            snap.total_connections += w.total_connections.get();
            snap.curr_connections += w.curr_connections.get();
        }
        for (ps, meta) in snap.pools.iter_mut().zip(pools.iter()) {
            ps.m[PoolField::ServerEjects as usize] = meta.health.ejects.load(Relaxed) as i64;
            for (i, ss) in ps.servers.iter_mut().enumerate() {
                ss.m[ServerField::ServerEjectedAt as usize] = meta.health.ejected_at(i) as i64;
            }
        }
        snap
    }
}

/// Every metric summed over the workers at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub hostname: String,
    pub uptime: u64,
    pub timestamp: u64,
    pub total_connections: i64,
    pub curr_connections: i64,
    pub threads: usize,
    pub pools: Vec<PoolSnap>,
    /// Configuration reloads: (succeeded, failed).
    pub reloads: (u64, u64),
    /// Sentinel failovers followed.
    pub failovers: u64,
    /// Cluster slot maps that changed a pool's routing.
    pub slot_maps: u64,
    /// Cluster slot maps fetched.
    pub slot_map_fetches: u64,
    /// (pool, sentinel address, subscribed to it now).
    pub sentinels: Vec<(String, String, bool)>,
    /// The loaded configuration file's FNV-1a 64 and the Unix time it was
    /// loaded.
    pub config: (u64, u64),
}

#[derive(Debug, Clone)]
pub struct PoolSnap {
    pub name: String,
    /// In [`POOL_METRICS`] order.
    pub m: [i64; POOL_FIELDS],
    /// Per [`metrics::Class`].
    pub latency: [HistogramSum; 4],
    /// Connections closed as attacks, per [`crate::proto::guard::Attack`].
    pub security: [i64; 3],
    /// `redis_cluster`: redirections followed (`MOVED`, `ASK`, `TRYAGAIN`).
    pub redirects: [i64; 3],
    pub listening: bool,
    pub servers: Vec<ServerSnap>,
}

#[derive(Debug, Clone)]
pub struct ServerSnap {
    pub name: String,
    /// In [`SERVER_METRICS`] order.
    pub m: [i64; SERVER_FIELDS],
    pub latency: HistogramSum,
    pub ejected: bool,
    /// Connections pinned by client sessions.
    pub pinned: i64,
    /// Where the server is now.
    pub address: String,
    /// The replicas read from (when `read_from` allows).
    pub replicas: Vec<String>,
    /// Reads sent to a replica of the server.
    pub replica_reads: i64,
    /// Of those, failed at a replica and sent again elsewhere.
    pub replica_retries: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_layout() {
        let d = super::describe();
        assert!(
            d.starts_with("pool stats:\n  client_eof          \"# eof on client connections\"\n")
        );
        assert!(d.contains("\"\n\nserver stats:\n  server_eof "));
        assert!(d.ends_with("  out_queue_bytes     \"current request bytes in outgoing queue\"\n"));
    }

    fn registry() -> Registry {
        let health = Arc::new(PoolHealth::new(
            true,
            1,
            std::time::Duration::from_secs(60),
            2,
        ));
        Registry::new(
            vec![PoolMeta {
                name: "alpha".into(),
                servers: vec!["a".into(), "b".into()],
                addresses: vec!["h:1".into(), "h:2".into()],
                replicas: vec![vec![], vec!["h:3".into()]],
                health,
                listening: Arc::new(AtomicUsize::new(2)),
            }],
            2,
        )
    }

    #[test]
    fn snapshot_sums_workers() {
        let r = registry();
        let (Some(w0), Some(w1)) = (r.worker(0), r.worker(1)) else {
            panic!("two workers")
        };
        w0.opened();
        w1.opened();
        w1.closed();
        w0.pools.load()[0].get(PoolField::ForwardError).add(2);
        w1.pools.load()[0].get(PoolField::ForwardError).add(3);
        w1.pools.load()[0].servers.load()[1]
            .get(ServerField::Requests)
            .add(7);
        w0.pools.load()[0].servers.load()[1]
            .get(ServerField::InQueue)
            .incr();
        w1.pools.load()[0].servers.load()[1]
            .get(ServerField::InQueue)
            .decr();
        let s = r.snapshot();
        assert_eq!((s.total_connections, s.curr_connections), (3, 2));
        assert_eq!(s.pools[0].m[PoolField::ForwardError as usize], 5);
        assert_eq!(s.pools[0].servers[1].m[ServerField::Requests as usize], 7);
        assert_eq!(s.pools[0].servers[1].m[ServerField::InQueue as usize], 0);
        assert!(s.pools[0].listening);
        assert_eq!(s.threads, 2);
    }
}
