//! Prometheus metrics (text format 0.0.4), rendered from a [`Snapshot`] with
//! the prometheus-client crate: every stats-port counter and gauge with
//! `pool` (and `server`) labels, latency histograms, and process metrics.
//! Names are listed in `docs/observability.md`.

use super::metrics::{Class, HistogramSum, ServerField, BUCKETS_US};
use super::{PoolSnap, ServerSnap, Snapshot, POOL_METRICS, SERVER_METRICS};
use crate::proto::guard::Attack;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Pool metrics that are gauges rather than counters (by nutcracker name).
fn is_gauge(name: &str) -> bool {
    matches!(
        name,
        "client_connections"
            | "server_connections"
            | "in_queue"
            | "in_queue_bytes"
            | "out_queue"
            | "out_queue_bytes"
    )
}

/// What the process itself reports (read from /proc at scrape time).
#[derive(Debug, Clone, Default)]
pub struct Process {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
}

impl Process {
    /// Reads /proc/self; missing values stay 0.
    pub fn read() -> Process {
        let mut p = Process::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the parenthesised command name; utime and stime are
            // the 14th and 15th fields of the line.
            if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
                let f: Vec<&str> = rest.split(' ').collect();
                let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                let hz = sysconf(libc::_SC_CLK_TCK, 100) as f64;
                p.cpu_seconds = (ticks(11) + ticks(12)) as f64 / hz;
                p.resident_bytes = f.get(21).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                    * sysconf(libc::_SC_PAGESIZE, 4096) as u64;
            }
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            p.open_fds = d.count() as u64;
        }
        p
    }
}

/// `sysconf(name)`, or `default` when it has no answer.
#[allow(unsafe_code)]
fn sysconf(name: libc::c_int, default: i64) -> i64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 {
        v
    } else {
        default
    }
}

#[derive(Debug)]
struct Scrape {
    snap: Snapshot,
    process: Process,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, &HistogramSum)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        let buckets: Vec<(f64, u64)> = BUCKETS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(h.counts)
            .collect();
        m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
            h.sum_ns as f64 / 1e9,
            h.count(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}

fn one<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}

/// One labelled series' value.
#[derive(Debug, Clone, Copy)]
enum Val {
    Counter(i64),
    Gauge(i64),
    Seconds(f64),
}

impl Val {
    /// A stats-port field's value: a gauge or a counter by its name.
    fn of(name: &str, v: i64) -> Val {
        if is_gauge(name) {
            Val::Gauge(v)
        } else {
            Val::Counter(v)
        }
    }

    fn metric_type(self) -> MetricType {
        match self {
            Val::Counter(_) => MetricType::Counter,
            Val::Gauge(_) | Val::Seconds(_) => MetricType::Gauge,
        }
    }
}

/// A metric family: one series per label set. The type is the first value's
/// (every value of a family has the same kind); an empty family is skipped.
fn family<'l>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<'l>, Val)>,
) -> Result<(), std::fmt::Error> {
    let mut series = series.into_iter().peekable();
    let Some(kind) = series.peek().map(|(_, v)| v.metric_type()) else {
        return Ok(());
    };
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in series {
        let fam = m.encode_family(&labels)?;
        match v {
            Val::Counter(n) => ConstCounter::new(n.max(0) as u64).encode(fam)?,
            Val::Gauge(n) => ConstGauge::new(n).encode(fam)?,
            Val::Seconds(x) => ConstGauge::new(x).encode(fam)?,
        }
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_all(&mut enc)
    }
}

impl Scrape {
    fn encode_all<'s>(&'s self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.snap;
        one(
            enc,
            "shardproxy_uptime_seconds",
            "Seconds since the proxy started.",
            ConstGauge::new(s.uptime as i64),
        )?;
        one(
            enc,
            "shardproxy_connections",
            "Open connections: pool listeners, clients and server connections (stats curr_connections).",
            ConstGauge::new(s.curr_connections),
        )?;
        one(
            enc,
            "shardproxy_connections_opened",
            "Connections ever opened: pool listeners, clients and server connections (stats total_connections).",
            ConstCounter::new(s.total_connections.max(0) as u64),
        )?;
        one(
            enc,
            "shardproxy_worker_threads",
            "Worker threads (--threads).",
            ConstGauge::new(s.threads as i64),
        )?;
        family(
            enc,
            "shardproxy_config_reloads",
            "Configuration reloads (SIGUSR1), by result.",
            [
                (vec![("result", "ok")], Val::Counter(s.reloads.0 as i64)),
                (vec![("result", "error")], Val::Counter(s.reloads.1 as i64)),
            ],
        )?;
        family(
            enc,
            "shardproxy_sentinel_failovers",
            "Master switches announced by Sentinel and followed (a server's address changed).",
            [(vec![], Val::Counter(s.failovers as i64))],
        )?;
        family(
            enc,
            "shardproxy_cluster_slot_map_changes",
            "Redis Cluster slot maps that changed a pool's routing (a resharding, a failover, a node added or removed).",
            [(vec![], Val::Counter(s.slot_maps as i64))],
        )?;
        family(
            enc,
            "shardproxy_cluster_slot_map_fetches",
            "Redis Cluster slot maps fetched (every 10 s, and when a MOVED, a CLUSTERDOWN or a failed node asks).",
            [(vec![], Val::Counter(s.slot_map_fetches as i64))],
        )?;
        family(
            enc,
            "shardproxy_cluster_redirects",
            "Redis Cluster redirections the proxy followed for its clients, by kind (moved, ask, tryagain).",
            s.pools.iter().flat_map(|p| {
                ["moved", "ask", "tryagain"]
                    .iter()
                    .zip(p.redirects)
                    .map(move |(k, n)| (vec![("pool", p.name.as_str()), ("kind", *k)], Val::Counter(n)))
            }),
        )?;
        family(
            enc,
            "shardproxy_sentinel_up",
            "1 while the proxy is subscribed to the sentinel (it hears its announcements).",
            s.sentinels.iter().map(|(p, a, up)| {
                (
                    vec![("pool", p.as_str()), ("sentinel", a.as_str())],
                    Val::Gauge(i64::from(*up)),
                )
            }),
        )?;
        let failures: Vec<(crate::tls::Side, [u64; crate::tls::REASONS.len()])> =
            crate::tls::Side::ALL
                .iter()
                .map(|&side| (side, crate::tls::failures(side)))
                .collect();
        family(
            enc,
            "shardproxy_tls_handshake_failures",
            "TLS handshakes that failed, by side (client: of the listener; server: to a backend) and reason.",
            failures.iter().flat_map(|(side, counts)| {
                crate::tls::REASONS.iter().zip(counts).map(move |(r, n)| {
                    (
                        vec![("side", side.label()), ("reason", *r)],
                        Val::Counter(*n as i64),
                    )
                })
            }),
        )?;
        let expiries = crate::tls::expiries();
        family(
            enc,
            "shardproxy_tls_certificate_expiry_timestamp_seconds",
            "When a configured certificate file expires (Unix time of its earliest notAfter), by pool, key and file.",
            expiries.iter().map(|e| {
                (
                    vec![
                        ("pool", e.pool.as_str()),
                        ("key", e.key),
                        ("file", e.file.as_str()),
                    ],
                    Val::Seconds(e.not_after as f64),
                )
            }),
        )?;
        let hash = format!("{:016x}", s.config.0);
        family(
            enc,
            "shardproxy_config_info",
            "The configuration in effect: its file's FNV-1a 64 hash.",
            [(vec![("hash", hash.as_str())], Val::Gauge(1))],
        )?;
        family(
            enc,
            "shardproxy_config_loaded_timestamp_seconds",
            "Unix time the configuration in effect was loaded (start-up or reload).",
            [(vec![], Val::Seconds(s.config.1 as f64))],
        )?;
        family(
            enc,
            "shardproxy_build_info",
            "Version of shardproxy and of the nutcracker it is compatible with.",
            [(
                vec![
                    ("version", crate::cli::VERSION),
                    ("nutcracker_version", crate::cli::COMPAT_VERSION),
                ],
                Val::Gauge(1),
            )],
        )?;
        one(
            enc,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            ConstCounter::new(self.process.cpu_seconds),
        )?;
        one(
            enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            ConstGauge::new(self.process.resident_bytes as i64),
        )?;
        one(
            enc,
            "process_open_fds",
            "Number of open file descriptors.",
            ConstGauge::new(self.process.open_fds as i64),
        )?;
        let pool = |p: &'s PoolSnap| vec![("pool", p.name.as_str())];
        let server = |p: &'s PoolSnap, sv: &'s ServerSnap| {
            vec![("pool", p.name.as_str()), ("server", sv.name.as_str())]
        };
        let servers = || {
            s.pools
                .iter()
                .flat_map(|p| p.servers.iter().map(move |sv| (p, sv)))
        };
        family(
            enc,
            "shardproxy_pool_listening",
            "1 when the pool's listener accepts connections.",
            s.pools
                .iter()
                .map(|p| (pool(p), Val::Gauge(i64::from(p.listening)))),
        )?;
        for (i, (name, help)) in POOL_METRICS.iter().enumerate() {
            family(
                enc,
                &format!("shardproxy_{name}"),
                help.trim_start_matches("# "),
                s.pools.iter().map(|p| (pool(p), Val::of(name, p.m[i]))),
            )?;
        }
        for (i, (name, help)) in SERVER_METRICS.iter().enumerate() {
            if i == ServerField::ServerEjectedAt as usize {
                // In seconds, below.
                continue;
            }
            family(
                enc,
                &format!("shardproxy_{name}"),
                help.trim_start_matches("# "),
                servers().map(|(p, sv)| (server(p, sv), Val::of(name, sv.m[i]))),
            )?;
        }
        family(
            enc,
            "shardproxy_security_rejects",
            "Client connections closed because they sent what no cache client sends (an HTTP request, a TLS hello, binary data), by reason.",
            s.pools.iter().flat_map(|p| {
                Attack::ALL.iter().map(move |a| {
                    (
                        vec![("pool", p.name.as_str()), ("reason", a.label())],
                        Val::Counter(p.security[*a as usize]),
                    )
                })
            }),
        )?;
        family(
            enc,
            "shardproxy_server_address",
            "Where each server is now (1); the address changes when Sentinel moves a master.",
            servers().map(|(p, sv)| {
                let mut labels = server(p, sv);
                labels.push(("address", sv.address.as_str()));
                (labels, Val::Gauge(1))
            }),
        )?;
        family(
            enc,
            "shardproxy_replica",
            "A replica of the server that reads may go to (1), as Sentinel names it and the proxy checked it (online, not lagging, ROLE says so).",
            servers().flat_map(|(p, sv)| {
                sv.replicas.iter().map(move |r| {
                    let mut labels = server(p, sv);
                    labels.push(("replica", r.as_str()));
                    (labels, Val::Gauge(1))
                })
            }),
        )?;
        family(
            enc,
            "shardproxy_replica_reads",
            "Read-only requests sent to a replica of the server (read_from).",
            servers().map(|(p, sv)| (server(p, sv), Val::Counter(sv.replica_reads))),
        )?;
        family(
            enc,
            "shardproxy_replica_read_retries",
            "Replica reads that failed at the replica (down, reset, timed out) and were sent again to another replica or the master.",
            servers().map(|(p, sv)| (server(p, sv), Val::Counter(sv.replica_retries))),
        )?;
        family(
            enc,
            "shardproxy_pinned_connections",
            "Server connections pinned by client sessions (WATCH, blocking commands, subscriptions); also counted in shardproxy_server_connections.",
            servers().map(|(p, sv)| (server(p, sv), Val::Gauge(sv.pinned))),
        )?;
        let ejected_at = ServerField::ServerEjectedAt as usize;
        family(
            enc,
            "shardproxy_server_ejected_at_seconds",
            "Unix time of the server's last ejection; 0 if never.",
            servers().map(|(p, sv)| (server(p, sv), Val::Seconds(sv.m[ejected_at] as f64 / 1e6))),
        )?;
        family(
            enc,
            "shardproxy_server_ejected",
            "1 while the server is ejected from the distribution.",
            servers().map(|(p, sv)| (server(p, sv), Val::Gauge(i64::from(sv.ejected)))),
        )?;
        let mut series = Vec::new();
        for p in &s.pools {
            for (c, h) in Class::ALL.iter().zip(&p.latency) {
                series.push((vec![("pool", p.name.as_str()), ("class", c.label())], h));
            }
        }
        histogram(
            enc,
            "shardproxy_request_duration_seconds",
            "Client-observed request latency: request read to reply ready, by pool and command class.",
            &series,
        )?;
        let mut series = Vec::new();
        for p in &s.pools {
            for sv in &p.servers {
                series.push((
                    vec![("pool", p.name.as_str()), ("server", sv.name.as_str())],
                    &sv.latency,
                ));
            }
        }
        histogram(
            enc,
            "shardproxy_server_response_duration_seconds",
            "Backend response latency: request written to reply read, by server.",
            &series,
        )?;
        Ok(())
    }
}

/// Renders the `/metrics` page.
pub fn render(snap: Snapshot, process: Process) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Scrape { snap, process }));
    let mut out = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::prometheus_text::encode(&mut out, &reg).is_err() {
        // Formatting into a String cannot fail; be safe anyway.
        out.clear();
    }
    out
}
