//! Configuration reload (SIGUSR1, `--watch-config`): re-read the file,
//! validate all of it, and move every pool that changed to a new version
//! without closing a client.
//!
//! Pools are matched by name. An unchanged pool is not touched. A changed
//! one (servers, weights, hash, distribution, timeouts, auth, db…) becomes a
//! new [`PoolShared`] — new routing, new health — sent to every worker,
//! which builds its server slots for it and makes it current: new clients
//! take it, connected clients move to it before their next request (unless
//! they hold state on the old version: a WATCH, a subscription, a
//! transaction), and the old version's server connections close once they
//! have delivered what they carry. A server keeps its metrics under its
//! name across versions.
//!
//! A pool whose `listen` (or `backlog`, `reuseport`) changed gets its new
//! listener bound first; an added pool gets its listener; if any bind fails,
//! nothing changes. The old listener of a moved or removed pool stops
//! accepting, and its clients are served until they leave or
//! `--drain-timeout` ends.
//!
//! A file that does not validate changes nothing: the reason is logged and
//! counted (`shardproxy_config_reloads_total{result="error"}`).

use crate::conf::{Conf, PoolConf};
use crate::net::StdListener;
use crate::sentinel::News;
use crate::stats::metrics::{PoolStats, ServerStats};
use crate::stats::Registry;
use crate::worker::{Change, PoolShared, Reload};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

fn list(addrs: &[crate::conf::ServerAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the main thread keeps to apply reloads.
#[derive(Debug)]
pub struct Reloader {
    path: String,
    /// The running pools, in their configuration order.
    pools: Vec<Arc<PoolShared>>,
    workers: Vec<UnboundedSender<Reload>>,
    registry: Arc<Registry>,
    drain: Duration,
    /// The listening sockets a binary upgrade would hand over.
    handover: Arc<crate::upgrade::Handover>,
    /// Where Sentinel followers send what they learn.
    news: UnboundedSender<News>,
    /// The files `--watch-config` watches: the configuration file and the
    /// TLS files it names.
    watched: crate::watch::Watched,
    /// Per pool that follows Sentinel: what its follower was started with,
    /// and how to stop it.
    followers: Vec<(String, FollowKey, CancellationToken)>,
}

/// What a pool's Sentinel follower depends on: a reload that changes it
/// restarts the follower.
type FollowKey = (
    Vec<crate::conf::ServerAddr>,
    Option<String>,
    Vec<String>,
    Option<(Option<String>, String)>,
    Duration,
);

fn follow_key(c: &PoolConf) -> FollowKey {
    (
        c.sentinels.iter().chain(&c.seeds).cloned().collect(),
        c.sentinel_auth.clone(),
        if c.seeds.is_empty() {
            c.servers.iter().map(|s| s.name.clone()).collect()
        } else {
            // A cluster's servers are what the follower found.
            Vec::new()
        },
        c.redis_auth
            .clone()
            .map(|pw| (c.redis_username.clone(), pw)),
        c.replica_max_lag,
    )
}

/// What a [`Reloader`] works with.
#[derive(Debug)]
pub struct With {
    pub workers: Vec<UnboundedSender<Reload>>,
    pub registry: Arc<Registry>,
    /// `--drain-timeout`.
    pub drain: Duration,
    pub handover: Arc<crate::upgrade::Handover>,
    /// Where Sentinel followers send what they learn.
    pub news: UnboundedSender<News>,
    /// What `--watch-config` watches.
    pub watched: crate::watch::Watched,
}

/// What happens to one pool of the new file.
enum Plan {
    Same(Arc<PoolShared>),
    Update(Arc<PoolShared>),
    /// New listeners, one per worker.
    Relisten(Arc<PoolShared>, Vec<StdListener>),
    Add(Arc<PoolShared>, Vec<StdListener>),
}

impl Reloader {
    pub fn new(path: String, pools: Vec<Arc<PoolShared>>, with: With) -> Reloader {
        Reloader {
            path,
            pools,
            workers: with.workers,
            registry: with.registry,
            drain: with.drain,
            handover: with.handover,
            news: with.news,
            watched: with.watched,
            followers: Vec::new(),
        }
    }

    /// Starts (or restarts, or stops) the Sentinel follower of every pool
    /// whose `sentinels:` (or what following them depends on) changed. Runs
    /// on the main thread's runtime.
    pub fn follow(&mut self) {
        let wanted: Vec<(String, FollowKey)> = self
            .pools
            .iter()
            .filter(|p| !p.conf.sentinels.is_empty() || !p.conf.seeds.is_empty())
            .map(|p| (p.conf.name.clone(), follow_key(&p.conf)))
            .collect();
        let registry = self.registry.clone();
        self.followers.retain(|(name, key, stop)| {
            let keep = wanted.iter().any(|(n, k)| n == name && k == key);
            if !keep {
                stop.cancel();
                registry.reloads.forget_sentinels(name);
            }
            keep
        });
        for (name, key) in wanted {
            if self.followers.iter().any(|(n, _, _)| *n == name) {
                continue;
            }
            let Some(p) = self.pools.iter().find(|p| p.conf.name == name) else {
                continue;
            };
            let c = &p.conf;
            let stop = CancellationToken::new();
            if !c.seeds.is_empty() {
                crate::cluster::spawn(
                    crate::cluster::Follow::of(c, p.cluster_refresh.clone()),
                    self.news.clone(),
                    stop.clone(),
                );
                self.followers.push((name, key, stop));
                continue;
            }
            crate::sentinel::spawn(
                crate::sentinel::Follow {
                    pool: c.name.clone(),
                    masters: c.servers.iter().map(|s| s.name.clone()).collect(),
                    sentinels: c.sentinels.clone(),
                    sentinel_auth: c.sentinel_auth.clone(),
                    node_auth: c
                        .redis_auth
                        .clone()
                        .map(|pw| (c.redis_username.clone(), pw)),
                    up: c
                        .sentinels
                        .iter()
                        .map(|a| self.registry.reloads.sentinel(&c.name, &a.to_string()))
                        .collect(),
                    max_lag: c.replica_max_lag,
                },
                self.news.clone(),
                stop.clone(),
            );
            self.followers.push((name, key, stop));
        }
    }

    /// What a Sentinel follower learned.
    pub fn news(&mut self, news: News) {
        match news {
            News::Master(sw) => self.failover(sw),
            News::Replicas {
                pool,
                server,
                replicas,
            } => self.replicas(&pool, &server, replicas),
            News::Cluster { pool, topology } => self.cluster(&pool, &topology),
        }
    }

    /// A cluster pool's slot map: if it is news, a new version of the pool
    /// routes by it (its servers are the masters; the previous version's
    /// connections drain).
    fn cluster(&mut self, pool: &str, t: &crate::dist::cluster::Topology) {
        let Some(index) = self.pools.iter().position(|p| p.conf.name == pool) else {
            return;
        };
        self.registry.reloads.slot_map_fetches.fetch_add(1, Relaxed);
        let prev = self.pools[index].clone();
        let replicas: Vec<Vec<crate::conf::ServerAddr>> = t
            .replicas
            .iter()
            .map(|rs| {
                rs.iter()
                    .map(|a| crate::conf::ServerAddr::Tcp {
                        host: a.host.clone(),
                        port: a.port,
                    })
                    .collect()
            })
            .collect();
        if crate::cluster::routes_as(&prev.conf, t) && prev.replicas == replicas {
            return;
        }
        let conf = crate::cluster::apply(&prev.conf, t);
        if crate::cluster::routes_as(&prev.conf, t) {
            tracing::info!("pool '{pool}': the cluster's replicas changed");
        } else {
            tracing::info!(
                "pool '{pool}': cluster slot map changed: {} masters ({}), {} of 16384 slots served",
                t.masters.len(),
                t.masters
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                t.covered()
            );
            self.registry.reloads.slot_maps.fetch_add(1, Relaxed);
        }
        let plans = self
            .pools
            .iter()
            .map(|p| {
                if p.conf.name == pool {
                    let mut next = PoolShared::succeed(conf.clone(), &prev);
                    next.replicas = replicas.clone();
                    Plan::Update(Arc::new(next))
                } else {
                    Plan::Same(p.clone())
                }
            })
            .collect();
        self.publish(plans, Vec::new());
    }

    /// The healthy replicas of `server` are now `replicas`: if that is
    /// news, a new version of the pool reads from them (the previous one's
    /// connections drain).
    fn replicas(&mut self, pool: &str, server: &str, replicas: Vec<crate::conf::ServerAddr>) {
        let Some(index) = self.pools.iter().position(|p| p.conf.name == pool) else {
            return;
        };
        let prev = self.pools[index].clone();
        let Some(at) = prev.conf.servers.iter().position(|s| s.name == server) else {
            return;
        };
        if prev.replicas.get(at) == Some(&replicas) {
            return;
        }
        let mut next = PoolShared::succeed(prev.conf.clone(), &prev);
        let old = std::mem::replace(&mut next.replicas[at], replicas);
        let shared = Arc::new(next);
        if shared.reads_replicas() {
            tracing::info!(
                "pool '{pool}': server '{server}' reads from replicas [{}] (were [{}])",
                list(&shared.replicas[at]),
                list(&old)
            );
        }
        self.registry.replace_pool(index, shared.meta());
        self.pools[index] = shared.clone();
        for w in &self.workers {
            let _ = w.send(Reload {
                changes: vec![Change::Update(shared.clone())],
                drain: self.drain,
            });
        }
    }

    /// The running pools.
    pub fn pools(&self) -> Vec<Arc<PoolShared>> {
        self.pools.clone()
    }

    /// Sentinel says `sw.server` of `sw.pool` is now at `sw.host:sw.port`:
    /// if that is news, a new version of the pool with it, and the old
    /// master's connections closed.
    fn failover(&mut self, sw: crate::sentinel::Switch) {
        let Some(index) = self.pools.iter().position(|p| p.conf.name == sw.pool) else {
            return;
        };
        let prev = self.pools[index].clone();
        let addr = crate::conf::ServerAddr::Tcp {
            host: sw.host.clone(),
            port: sw.port,
        };
        let Some(at) = prev.conf.servers.iter().position(|s| s.name == sw.server) else {
            return;
        };
        if prev.conf.servers[at].addr == addr {
            return;
        }
        let mut conf = prev.conf.clone();
        let old = std::mem::replace(&mut conf.servers[at].addr, addr);
        let shared = Arc::new(PoolShared::succeed(conf, &prev));
        self.registry.replace_pool(index, shared.meta());
        self.pools[index] = shared.clone();
        self.registry.reloads.failovers.fetch_add(1, Relaxed);
        for w in &self.workers {
            let _ = w.send(Reload {
                changes: vec![Change::Failover(shared.clone())],
                drain: self.drain,
            });
        }
        tracing::warn!(
            "pool '{}': server '{}' switched from {old} to {}:{} (sentinel){}",
            sw.pool,
            sw.server,
            sw.host,
            sw.port,
            match sw.down_since {
                Some(t) => format!(
                    ", {} ms after a sentinel first saw the old master down",
                    t.elapsed().as_millis()
                ),
                None => String::new(),
            }
        );
    }

    /// After a binary upgrade handed the listeners over: every worker stops
    /// accepting; returns once the clients are gone or `--drain-timeout`
    /// has passed.
    pub async fn retire_all(&mut self) {
        for w in &self.workers {
            let changes = self
                .pools
                .iter()
                .map(|p| Change::Remove(p.conf.name.clone()))
                .collect();
            let _ = w.send(Reload {
                changes,
                drain: self.drain,
            });
        }
        let end = tokio::time::Instant::now() + self.drain;
        while tokio::time::Instant::now() < end {
            let clients: i64 = self
                .registry
                .snapshot()
                .pools
                .iter()
                .map(|p| p.m[crate::stats::metrics::PoolField::ClientConnections as usize])
                .sum();
            if clients == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Re-reads the configuration file and applies it; logs and counts the
    /// outcome.
    pub fn reload(&mut self) {
        match self.apply() {
            Ok(summary) => {
                tracing::info!("configuration '{}' reloaded: {summary}", self.path);
                self.follow();
                crate::tls::publish(self.pools.iter().map(|p| &p.conf));
                if let Ok(mut w) = self.watched.lock() {
                    *w = std::iter::once(self.path.clone())
                        .chain(self.pools.iter().flat_map(|p| {
                            p.conf.tls.files().into_iter().map(|(_, f)| f.to_string())
                        }))
                        .collect();
                }
                // Counted last: whoever sees the counter move finds the
                // reload logged and in effect.
                self.registry.reloads.ok.fetch_add(1, Relaxed);
            }
            Err(why) => {
                tracing::error!(
                    "configuration '{}' not reloaded, nothing changed: {why}",
                    self.path
                );
                self.registry.reloads.error.fetch_add(1, Relaxed);
            }
        }
    }

    fn apply(&mut self) -> Result<String, String> {
        let text = std::fs::read(&self.path)
            .map_err(|e| format!("cannot read the configuration file: {e}"))?;
        let utf8 = std::str::from_utf8(&text)
            .map_err(|e| format!("the file is not valid UTF-8 (byte {})", e.valid_up_to()))?;
        let mut conf = Conf::parse(&self.path, utf8).map_err(|e| e.to_string())?;
        // Certificates are read again: a rotated file is a change.
        crate::tls::attach(&mut conf, &self.path).map_err(|e| e.to_string())?;
        let threads = self.workers.len();
        // Everything that can fail first (new listeners are bound): a
        // failure changes nothing.
        let mut plans = Vec::with_capacity(conf.pools.len());
        let mut said = Vec::new();
        for mut next in conf.pools {
            let prev = self.pools.iter().find(|p| p.conf.name == next.name);
            if let Some(prev) = prev {
                if !next.seeds.is_empty() && !prev.conf.seeds.is_empty() {
                    // The cluster, not the file, says which masters serve
                    // which slots.
                    next.servers = prev.conf.servers.clone();
                    next.cluster_slots = prev.conf.cluster_slots.clone();
                }
                if !next.sentinels.is_empty() {
                    // Sentinel, not the file, says where a master is now.
                    for s in next.servers.iter_mut() {
                        if let Some(cur) = prev.conf.servers.iter().find(|c| c.name == s.name) {
                            s.addr = cur.addr.clone();
                        }
                    }
                }
            }
            let plan = match prev {
                None => {
                    said.push(format!(
                        "pool '{}' added on {}",
                        next.name, next.listen_spec
                    ));
                    let l = bind(&next, threads)?;
                    Plan::Add(Arc::new(PoolShared::new(next)), l)
                }
                Some(prev) if listener_changed(&prev.conf, &next) => {
                    said.push(format!(
                        "pool '{}' moved from {} to {}",
                        next.name, prev.conf.listen_spec, next.listen_spec
                    ));
                    let l = bind(&next, threads)?;
                    Plan::Relisten(Arc::new(PoolShared::succeed(next, prev)), l)
                }
                Some(prev) if !same(&prev.conf, &next) => {
                    said.push(format!(
                        "pool '{}' ({} → {} servers) changed",
                        next.name,
                        prev.conf.servers.len(),
                        next.servers.len()
                    ));
                    Plan::Update(Arc::new(PoolShared::succeed(next, prev)))
                }
                Some(prev) => Plan::Same(prev.clone()),
            };
            plans.push(plan);
        }
        let removed: Vec<String> = self
            .pools
            .iter()
            .filter(|p| {
                !plans.iter().any(|pl| match pl {
                    Plan::Same(s) | Plan::Update(s) | Plan::Relisten(s, _) | Plan::Add(s, _) => {
                        s.conf.name == p.conf.name
                    }
                })
            })
            .map(|p| p.conf.name.clone())
            .collect();
        for r in &removed {
            said.push(format!("pool '{r}' removed"));
        }
        self.registry.reloads.loaded(&text);
        if said.is_empty() {
            return Ok("no pool changed".into());
        }
        self.publish(plans, removed);
        Ok(said.join(", "))
    }

    /// Sends each worker its changes and makes the stats follow.
    fn publish(&mut self, plans: Vec<Plan>, removed: Vec<String>) {
        let threads = self.workers.len();
        let mut per_worker: Vec<Vec<Change>> = (0..threads).map(|_| Vec::new()).collect();
        let old_metas = self.registry.pools();
        let old_lists: Vec<Arc<Vec<Arc<PoolStats>>>> = self
            .registry
            .workers()
            .iter()
            .map(|w| w.pools.load_full())
            .collect();
        let mut metas = Vec::with_capacity(plans.len());
        let mut lists: Vec<Vec<Arc<PoolStats>>> = (0..threads).map(|_| Vec::new()).collect();
        let mut pools = Vec::with_capacity(plans.len());
        for plan in plans {
            let (shared, listeners, is_new, changed) = match plan {
                Plan::Same(s) => (s, None, false, false),
                Plan::Update(s) => (s, None, false, true),
                Plan::Relisten(s, l) => (s, Some(l), false, true),
                Plan::Add(s, l) => (s, Some(l), true, true),
            };
            let name = shared.conf.name.clone();
            let old_index = old_metas.iter().position(|m| m.name == name);
            for w in 0..threads {
                let stats = match (is_new, old_index) {
                    (false, Some(i)) => old_lists[w].get(i).cloned(),
                    _ => None,
                }
                .unwrap_or_else(|| Arc::new(PoolStats::new(shared.conf.servers.len())));
                if let Some(i) = old_index {
                    follow_servers(&stats, &old_metas[i].servers, &shared);
                }
                lists[w].push(stats);
            }
            metas.push(shared.meta());
            pools.push(shared.clone());
            match listeners {
                None if !changed => {}
                None => {
                    for c in per_worker.iter_mut() {
                        c.push(Change::Update(shared.clone()));
                    }
                }
                Some(ls) => {
                    match ls.iter().map(StdListener::dup_fd).collect::<std::io::Result<Vec<_>>>() {
                        Ok(d) => self.handover.set(&name, &shared.conf.listen_spec, d),
                        Err(e) => tracing::warn!("pool '{name}': its new listener cannot be handed over in an upgrade: {e}"),
                    }
                    for (w, (c, l)) in per_worker.iter_mut().zip(ls).enumerate() {
                        c.push(if is_new {
                            Change::Add(shared.clone(), l, lists[w][lists[w].len() - 1].clone())
                        } else {
                            Change::Relisten(shared.clone(), l)
                        });
                    }
                }
            }
        }
        for r in &removed {
            self.handover.remove(r);
        }
        for c in per_worker.iter_mut() {
            for r in &removed {
                c.push(Change::Remove(r.clone()));
            }
        }
        self.registry.set_pools(metas, lists);
        self.pools = pools;
        for (w, changes) in self.workers.iter().zip(per_worker) {
            let reload = Reload {
                changes,
                drain: self.drain,
            };
            if w.send(reload).is_err() {
                tracing::error!("a worker is gone: it keeps the old configuration");
            }
        }
    }
}

/// A pool's server metrics for its new server list: a server keeps its
/// metrics under its name.
fn follow_servers(stats: &PoolStats, old_names: &[String], shared: &PoolShared) {
    let old = stats.servers.load();
    let list: Vec<Arc<ServerStats>> = shared
        .conf
        .servers
        .iter()
        .map(|s| {
            old_names
                .iter()
                .position(|o| *o == s.name)
                .and_then(|i| old.get(i).cloned())
                .unwrap_or_default()
        })
        .collect();
    stats.servers.store(Arc::new(list));
}

fn bind(c: &PoolConf, threads: usize) -> Result<Vec<StdListener>, String> {
    crate::proxy::bind_pool(c, threads).map_err(|e| format!("{e:#}"))
}

/// The listener's own settings changed: it is replaced.
fn listener_changed(a: &PoolConf, b: &PoolConf) -> bool {
    a.listen != b.listen
        || a.listen_spec != b.listen_spec
        || a.backlog != b.backlog
        || a.reuseport != b.reuseport
}

/// Two versions of a pool that behave the same (`listen`, `backlog` and
/// `reuseport` are the listener's, checked apart).
fn same(a: &PoolConf, b: &PoolConf) -> bool {
    let routing = |p: &PoolConf| (p.hash, p.hash_tag, p.distribution.name, p.servers.clone());
    let settings = |p: &PoolConf| {
        (
            (
                p.timeout,
                p.client_connections,
                p.redis,
                p.redis_auth.clone(),
                p.redis_db,
            ),
            (
                p.preconnect,
                p.auto_eject_hosts,
                p.server_connections,
                p.session_connections,
            ),
            (
                p.server_retry_timeout,
                p.server_failure_limit,
                p.tcpkeepalive,
            ),
            (
                p.redis_username.clone(),
                p.read_from,
                p.replica_max_lag,
                p.sentinels.clone(),
                p.sentinel_auth.clone(),
                p.client_users.clone(),
                p.tls.clone(),
                p.tls_loaded.as_ref().map(|t| t.fingerprint),
            ),
        )
    };
    routing(a) == routing(b) && settings(a) == settings(b)
}
