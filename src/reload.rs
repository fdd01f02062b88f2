//! Configuration reload (SIGUSR1): re-read the file, validate all of it,
//! and move every pool that changed to a new version without closing a
//! client.
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
//! A file that does not validate changes nothing: the reason is logged and
//! counted (`shardproxy_config_reloads_total{result="error"}`). Changing a
//! pool's `listen`, or adding or removing a pool, is refused the same way
//! for now (it needs a restart).

use crate::conf::{Conf, PoolConf};
use crate::stats::metrics::ServerStats;
use crate::stats::Registry;
use crate::worker::{PoolShared, Reload};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// What the main thread keeps to apply reloads.
#[derive(Debug)]
pub struct Reloader {
    path: String,
    pools: Vec<Arc<PoolShared>>,
    workers: Vec<UnboundedSender<Reload>>,
    registry: Arc<Registry>,
}

impl Reloader {
    pub fn new(
        path: String,
        pools: Vec<Arc<PoolShared>>,
        workers: Vec<UnboundedSender<Reload>>,
        registry: Arc<Registry>,
    ) -> Reloader {
        Reloader {
            path,
            pools,
            workers,
            registry,
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
        let changed = plan(&self.pools, &conf)?;
        self.registry.reloads.loaded(&text);
        if changed.is_empty() {
            return Ok("no pool changed".into());
        }
        let mut names = Vec::new();
        let mut reload = Vec::new();
        for (index, next) in changed {
            let prev = self.pools[index].clone();
            names.push(format!(
                "'{}' ({} → {} servers)",
                next.name,
                prev.conf.servers.len(),
                next.servers.len()
            ));
            let shared = Arc::new(PoolShared::succeed(next, &prev));
            // Every worker's metrics for the new server list, by name.
            for w in self.registry.workers() {
                let Some(ps) = w.pools.get(index) else {
                    continue;
                };
                let old = ps.servers.load();
                let list: Vec<Arc<ServerStats>> = shared
                    .conf
                    .servers
                    .iter()
                    .map(|s| {
                        prev.conf
                            .servers
                            .iter()
                            .position(|o| o.name == s.name)
                            .and_then(|i| old.get(i).cloned())
                            .unwrap_or_default()
                    })
                    .collect();
                ps.servers.store(Arc::new(list));
            }
            self.registry.replace_pool(index, shared.meta());
            self.pools[index] = shared.clone();
            reload.push((index, shared));
        }
        for w in &self.workers {
            let pools = reload.iter().map(|(i, p)| (*i, p.clone())).collect();
            if w.send(Reload { pools }).is_err() {
                tracing::error!("a worker is gone: it keeps the old configuration");
            }
        }
        Ok(format!("pool {} changed", names.join(", pool ")))
    }
}

/// The pools of `next` that differ from the running ones, by index; an
/// error when the change needs a restart.
fn plan(running: &[Arc<PoolShared>], next: &Conf) -> Result<Vec<(usize, PoolConf)>, String> {
    let names = |it: &mut dyn Iterator<Item = &str>| {
        let mut v: Vec<String> = it.map(str::to_string).collect();
        v.sort();
        v
    };
    let have = names(&mut running.iter().map(|p| p.conf.name.as_str()));
    let want = names(&mut next.pools.iter().map(|p| p.name.as_str()));
    if have != want {
        return Err(format!(
            "the pools are {want:?}, the running ones {have:?}: adding or removing a pool needs a restart for now"
        ));
    }
    let mut changed = Vec::new();
    for p in &next.pools {
        let Some(index) = running.iter().position(|r| r.conf.name == p.name) else {
            continue;
        };
        let old = &running[index].conf;
        if old.listen != p.listen || old.listen_spec != p.listen_spec {
            return Err(format!(
                "pool '{}': listen changes from '{}' to '{}': that needs a restart for now",
                p.name, old.listen_spec, p.listen_spec
            ));
        }
        if old.reuseport != p.reuseport || old.backlog != p.backlog {
            return Err(format!(
                "pool '{}': 'reuseport' and 'backlog' apply to the listener: changing them needs a restart",
                p.name
            ));
        }
        if !same(old, p) {
            changed.push((index, p.clone()));
        }
    }
    Ok(changed)
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
