//! Following a Redis Cluster (`distribution: redis_cluster`): which master
//! serves which slot.
//!
//! For every cluster pool, a task on the main thread asks the cluster for
//! its slot map — `CLUSTER SHARDS`, or `CLUSTER SLOTS` from a server older
//! than Redis 7 — from the nodes it last knew, then the seeds, the first
//! that answers:
//!
//! * at start (before the workers accept, see [`initial`]);
//! * every [`REFRESH`] as a safety net;
//! * when a worker asks ([`PoolShared::cluster_refresh`]): a `MOVED`
//!   reply, a failed connection to a node. Asks that come while a refresh
//!   runs, or within [`MIN_GAP`] of the last one, make one more refresh, not
//!   one each: a storm of redirects during a resharding costs a few refreshes
//!   a second at most.
//!
//! A map that differs from the pool's becomes a new version of the pool
//! ([`crate::reload`]) whose servers are the masters (named `ip:port`) and
//! whose router is the slot table ([`crate::dist::cluster`]); new nodes are
//! connected on demand, the previous version's connections drain.
//!
//! [`PoolShared::cluster_refresh`]: crate::worker::PoolShared::cluster_refresh

use crate::conf::{PoolConf, ServerAddr, ServerConf};
use crate::control::Conn;
use crate::dist::cluster::{Addr, Topology};
use crate::proto::redis::value::Val;
use crate::sentinel::News;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the slot map is asked for without a reason.
pub const REFRESH: Duration = Duration::from_secs(10);
/// The least time between two refreshes.
pub const MIN_GAP: Duration = Duration::from_millis(100);

/// What one cluster pool's follower needs.
#[derive(Debug, Clone)]
pub struct Follow {
    pub pool: String,
    pub seeds: Vec<ServerAddr>,
    /// How to log in to a node: (user, password).
    pub auth: Option<(Option<String>, String)>,
    /// Rung by workers when the map looks stale.
    pub refresh: Arc<Notify>,
}

impl Follow {
    pub fn of(c: &PoolConf, refresh: Arc<Notify>) -> Follow {
        Follow {
            pool: c.name.clone(),
            seeds: c.seeds.clone(),
            auth: c
                .redis_auth
                .clone()
                .map(|pw| (c.redis_username.clone(), pw)),
            refresh,
        }
    }
}

/// Asks one node for the slot map.
async fn ask(node: &ServerAddr, auth: Option<(Option<&str>, &str)>) -> Option<Topology> {
    let mut c = Conn::open(node, auth).await.ok()?;
    let r = c.call(&[b"CLUSTER", b"SHARDS"]).await.ok()?;
    match Val::parse(&r)? {
        Val::Err(_) => {
            // Before Redis 7.
            let r = c.call(&[b"CLUSTER", b"SLOTS"]).await.ok()?;
            Topology::from_slots(&Val::parse(&r)?)
        }
        v => Topology::from_shards(&v),
    }
}

/// The slot map, from the first of `known` then the seeds that answers with
/// one that covers some slot.
pub async fn fetch(f: &Follow, known: &[ServerAddr]) -> Option<Topology> {
    let auth = f.auth.as_ref().map(|(u, p)| (u.as_deref(), p.as_str()));
    for node in known.iter().chain(f.seeds.iter()) {
        if let Some(t) = ask(node, auth).await {
            if t.covered() > 0 {
                return Some(t);
            }
        }
    }
    None
}

fn addr(a: &Addr) -> ServerAddr {
    ServerAddr::Tcp {
        host: a.host.clone(),
        port: a.port,
    }
}

/// The pool's configuration with the cluster's masters as its servers and
/// the slot map as its routing.
pub fn apply(conf: &PoolConf, t: &Topology) -> PoolConf {
    let mut next = conf.clone();
    next.servers = t
        .masters
        .iter()
        .map(|m| ServerConf {
            spec: format!("{m}:1"),
            name: m.to_string(),
            named: false,
            addr: addr(m),
            weight: 1,
        })
        .collect();
    next.cluster_slots = Some(t.slots.clone());
    next
}

/// Whether `conf` already routes as `t` says.
pub fn routes_as(conf: &PoolConf, t: &Topology) -> bool {
    conf.cluster_slots.as_ref() == Some(&t.slots)
        && conf.servers.len() == t.masters.len()
        && conf
            .servers
            .iter()
            .zip(&t.masters)
            .all(|(s, m)| s.addr == addr(m))
}

/// Before the workers start: every cluster pool with the slot map its seeds
/// give (each seed bounded by [`crate::control::LIMIT`]). A cluster that
/// does not answer is not fatal: the pool starts with no map (requests get
/// `-CLUSTERDOWN`) and its follower keeps asking.
pub async fn initial(pools: &mut [PoolConf]) {
    for p in pools.iter_mut() {
        if p.distribution.name != "redis_cluster" {
            continue;
        }
        let f = Follow::of(p, Arc::default());
        match fetch(&f, &[]).await {
            Some(t) => {
                tracing::info!(
                    "pool '{}': cluster of {} masters, {} of 16384 slots served",
                    p.name,
                    t.masters.len(),
                    t.covered()
                );
                *p = apply(p, &t);
            }
            None => tracing::warn!(
                "pool '{}': no seed node gives a slot map yet; requests get -CLUSTERDOWN until one does",
                p.name
            ),
        }
    }
}

/// Follows a cluster pool until `stop`.
pub fn spawn(f: Follow, tx: UnboundedSender<News>, stop: CancellationToken) {
    tokio::spawn(stop.run_until_cancelled_owned(follow(f, tx)));
}

async fn follow(f: Follow, tx: UnboundedSender<News>) {
    let mut known: Vec<ServerAddr> = Vec::new();
    let mut warned = false;
    loop {
        match fetch(&f, &known).await {
            Some(t) => {
                warned = false;
                known = t
                    .masters
                    .iter()
                    .chain(t.replicas.iter().flatten())
                    .map(addr)
                    .collect();
                let _ = tx.send(News::Cluster {
                    pool: f.pool.clone(),
                    topology: t,
                });
            }
            None if !warned => {
                warned = true;
                tracing::warn!(
                    "pool '{}': no cluster node answers with a slot map; routing by the last one",
                    f.pool
                );
            }
            None => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = f.refresh.notified() => {}
        }
        tokio::time::sleep(MIN_GAP).await;
    }
}
