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
use crate::stats::metrics::{PoolStats, ServerStats};
use crate::stats::Registry;
use crate::worker::{Change, PoolShared, Reload};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

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
    pub fn new(
        path: String,
        pools: Vec<Arc<PoolShared>>,
        workers: Vec<UnboundedSender<Reload>>,
        registry: Arc<Registry>,
        drain: Duration,
        handover: Arc<crate::upgrade::Handover>,
    ) -> Reloader {
        Reloader {
            path,
            pools,
            workers,
            registry,
            drain,
            handover,
        }
    }

    /// The running pools.
    pub fn pools(&self) -> Vec<Arc<PoolShared>> {
        self.pools.clone()
    }

    /// Sentinel says `sw.server` of `sw.pool` is now at `sw.host:sw.port`:
    /// if that is news, a new version of the pool with it, and the old
    /// master's connections closed.
    pub fn failover(&mut self, sw: crate::sentinel::Switch) {
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
            "pool '{}': server '{}' switched from {:?} to {}:{} (sentinel)",
            sw.pool,
            sw.server,
            old,
            sw.host,
            sw.port
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
                self.registry.reloads.ok.fetch_add(1, Relaxed);
                tracing::info!("configuration '{}' reloaded: {summary}", self.path);
            }
            Err(why) => {
                self.registry.reloads.error.fetch_add(1, Relaxed);
                tracing::error!(
                    "configuration '{}' not reloaded, nothing changed: {why}",
                    self.path
                );
            }
        }
    }

    fn apply(&mut self) -> Result<String, String> {
        let text = std::fs::read(&self.path)
            .map_err(|e| format!("cannot read the configuration file: {e}"))?;
        let utf8 = std::str::from_utf8(&text)
            .map_err(|e| format!("the file is not valid UTF-8 (byte {})", e.valid_up_to()))?;
        let conf = Conf::parse(&self.path, utf8).map_err(|e| e.to_string())?;
        let threads = self.workers.len();
        // Everything that can fail first (new listeners are bound): a
        // failure changes nothing.
        let mut plans = Vec::with_capacity(conf.pools.len());
        let mut said = Vec::new();
        for mut next in conf.pools {
            let prev = self.pools.iter().find(|p| p.conf.name == next.name);
            if let Some(prev) = prev {
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
        )
    };
    routing(a) == routing(b) && settings(a) == settings(b)
}
