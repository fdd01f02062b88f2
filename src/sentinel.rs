//! Following Redis Sentinel (`sentinels:`): where each server of a pool is.
//!
//! A server's name is its Sentinel master name; the address in `servers:` is
//! only where to start. For every pool with sentinels, a task on the main
//! thread:
//!
//! * asks the sentinels (`SENTINEL get-master-addr-by-name`) for every
//!   master at start and then every [`RECHECK`] as a safety net, taking the
//!   first sentinel that answers;
//! * listens on **every** sentinel for `+switch-master` (a subscriber
//!   connection each, reconnected when it drops), so a failover is learned
//!   as soon as any sentinel announces it;
//! * checks a new address with `ROLE` (it must say `master`) before it
//!   reports a switch.
//!
//! * finds, with every poll, the replicas of each master that reads may go
//!   to (`read_from`): not down by Sentinel's flags, linked, online and not
//!   lagging by the master's `INFO replication`, a connected `slave` by
//!   their own `ROLE` (`healthy_replicas`); a sentinel's announcement of
//!   an instance down or back makes the poll come early.
//!
//! A switch becomes a new version of the pool (see [`crate::reload`]) in which
//! the server has its new address — the ketama ring is built from names, so
//! no key moves — and the old master's connections are closed at once:
//! requests in flight there get an error reply, and nothing more is
//! acknowledged by a demoted master once the proxy knows.

use crate::conf::ServerAddr;
use crate::control::Conn;
use crate::proto::redis::value::Val;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the masters are asked for even without an announcement.
pub const RECHECK: Duration = Duration::from_secs(5);

/// A master's (new) address, for pool `pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub pool: String,
    pub server: String,
    pub host: String,
    pub port: u16,
    /// When a sentinel first said the old master was down (`+sdown`), if
    /// one did: how long the switch took.
    pub down_since: Option<std::time::Instant>,
}

/// What the followers tell the main thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum News {
    /// A master is (now) at this address.
    Master(Switch),
    /// The replicas of a master that reads may go to (checked healthy).
    Replicas {
        pool: String,
        server: String,
        replicas: Vec<ServerAddr>,
    },
    /// A cluster pool's slot map ([`crate::cluster`]).
    Cluster {
        pool: String,
        topology: crate::dist::cluster::Topology,
    },
}

/// What one pool's follower needs.
#[derive(Debug, Clone)]
pub struct Follow {
    pub pool: String,
    pub masters: Vec<String>,
    pub sentinels: Vec<ServerAddr>,
    pub sentinel_auth: Option<String>,
    /// How to log in to a data node for `ROLE`: (user, password).
    pub node_auth: Option<(Option<String>, String)>,
    /// Per sentinel (same order): subscribed to it now (Prometheus).
    pub up: Vec<Arc<AtomicBool>>,
    /// `replica_max_lag`: a replica whose last acknowledgement to its
    /// master is older is not read from.
    pub max_lag: Duration,
}

/// What a pool's tasks share.
#[derive(Debug, Default)]
struct Shared {
    /// Per master: the address last reported, and when a sentinel first
    /// said it was down since then (`+sdown`/`+odown`).
    masters: Mutex<HashMap<String, Known>>,
    /// An announcement worth an early check (a replica up or down).
    nudge: Notify,
}

#[derive(Debug, Default)]
struct Known {
    at: Option<(String, u16)>,
    down_since: Option<std::time::Instant>,
}

/// Starts following the sentinels of one pool (on the current runtime),
/// until `stop`.
pub fn spawn(f: Follow, tx: UnboundedSender<News>, stop: CancellationToken) {
    let shared = Arc::new(Shared::default());
    for (i, s) in f.sentinels.clone().into_iter().enumerate() {
        let up = f.up.get(i).cloned().unwrap_or_default();
        tokio::spawn(stop.clone().run_until_cancelled_owned(listen(
            f.clone(),
            s,
            up,
            shared.clone(),
            tx.clone(),
        )));
    }
    tokio::spawn(stop.run_until_cancelled_owned(poll(f, shared, tx)));
}

/// The top-level elements of an array reply that are bulk strings (others,
/// such as ROLE's offset and replica list, are skipped).
fn strings(reply: &[u8]) -> Vec<String> {
    match Val::parse(reply) {
        Some(Val::Arr(v)) => v
            .into_iter()
            .filter_map(|e| match e {
                Val::Str(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn sentinel_auth(f: &Follow) -> Option<(Option<&str>, &str)> {
    f.sentinel_auth.as_deref().map(|p| (None, p))
}

fn node_auth(f: &Follow) -> Option<(Option<&str>, &str)> {
    f.node_auth
        .as_ref()
        .map(|(u, p)| (u.as_deref(), p.as_str()))
}

/// Asks a data node something.
async fn ask(f: &Follow, host: &str, port: u16, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    let addr = ServerAddr::Tcp {
        host: host.into(),
        port,
    };
    Conn::open(&addr, node_auth(f)).await?.call(args).await
}

/// Reports `name` at `host:port` if the node there says it is a master.
async fn report(
    f: &Follow,
    st: &Shared,
    name: &str,
    host: String,
    port: u16,
    tx: &UnboundedSender<News>,
) {
    let role = ask(f, &host, port, &[b"ROLE"]).await.map(|r| strings(&r));
    match role {
        Ok(r) if r.first().is_some_and(|x| x == "master") => {
            let down_since = match st.masters.lock() {
                Ok(mut m) => {
                    let k = m.entry(name.into()).or_default();
                    let at = Some((host.clone(), port));
                    if k.at != at {
                        k.at = at;
                        k.down_since.take()
                    } else {
                        None
                    }
                }
                Err(_) => None,
            };
            let _ = tx.send(News::Master(Switch {
                pool: f.pool.clone(),
                server: name.into(),
                host,
                port,
                down_since,
            }));
        }
        Ok(r) => tracing::warn!(
            "pool '{}': sentinel names {host}:{port} master of '{name}', but it says it is {:?}; not switching yet",
            f.pool,
            r.first()
        ),
        Err(e) => tracing::warn!(
            "pool '{}': sentinel names {host}:{port} master of '{name}', but it cannot be checked ({e}); not switching yet",
            f.pool
        ),
    }
}

/// One replica as its master's `INFO replication` lists it.
#[derive(Debug, PartialEq)]
struct Listed {
    host: String,
    port: u16,
    online: bool,
    /// Seconds since its last acknowledgement.
    lag: u64,
}

/// The `slaveN:ip=…,port=…,state=…,offset=…,lag=…` lines of `INFO
/// replication`.
fn listed(info: &str) -> Vec<Listed> {
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains(':'))
        .filter_map(|l| {
            let (_, kv) = l.split_once(':')?;
            let get = |k: &str| {
                kv.split(',')
                    .filter_map(|p| p.split_once('='))
                    .find(|(a, _)| *a == k)
                    .map(|(_, b)| b.trim())
            };
            Some(Listed {
                host: get("ip")?.into(),
                port: get("port")?.parse().ok()?,
                online: get("state")? == "online",
                lag: get("lag").and_then(|l| l.parse().ok()).unwrap_or(u64::MAX),
            })
        })
        .collect()
}

/// Sentinel's replicas of `name` that are not down (its flags) and whose
/// link to the master is up: (host, port).
fn candidates(reply: &[u8], master: (&str, u16)) -> Vec<(String, u16)> {
    let Some(Val::Arr(rs)) = Val::parse(reply) else {
        return Vec::new();
    };
    rs.iter()
        .filter_map(|r| {
            let flags = r.field("flags")?;
            if flags
                .split(',')
                .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
            {
                return None;
            }
            if r.field("master-link-status")? != "ok" {
                return None;
            }
            if r.field("master-host")? != master.0
                || r.field("master-port")?.parse::<u16>().ok()? != master.1
            {
                return None;
            }
            Some((r.field("ip")?.to_string(), r.field("port")?.parse().ok()?))
        })
        .collect()
}

/// The replicas of master `name` (at `master`) that reads may go to: named
/// by Sentinel and not down there; online and acknowledging within
/// `max_lag` by the master's word; replicating from it by their own
/// (`ROLE`). `None` when the sentinel does not answer (nothing is known).
async fn healthy_replicas(
    f: &Follow,
    c: &mut Conn,
    name: &str,
    master: (&str, u16),
) -> Option<Vec<ServerAddr>> {
    let r = c
        .call(&[b"SENTINEL", b"replicas", name.as_bytes()])
        .await
        .ok()?;
    let cands = candidates(&r, master);
    if cands.is_empty() {
        return Some(Vec::new());
    }
    // Unknown lag (the master does not answer): none is read from.
    let info = match ask(f, master.0, master.1, &[b"INFO", b"replication"]).await {
        Ok(r) => match Val::parse(&r) {
            Some(Val::Str(s)) => s,
            _ => return Some(Vec::new()),
        },
        Err(_) => return Some(Vec::new()),
    };
    let listed = listed(&info);
    let mut out = Vec::new();
    for (host, port) in cands {
        let fresh = listed
            .iter()
            .any(|l| l.host == host && l.port == port && l.online && l.lag <= f.max_lag.as_secs());
        if !fresh {
            continue;
        }
        let role = ask(f, &host, port, &[b"ROLE"])
            .await
            .ok()
            .and_then(|r| Val::parse(&r));
        // ["slave", master host, master port, "connected", offset]
        let ok = match role {
            Some(Val::Arr(v)) => {
                v.first().and_then(Val::str) == Some("slave")
                    && v.get(1).and_then(Val::str) == Some(master.0)
                    && v.get(2) == Some(&Val::Int(i64::from(master.1)))
                    && v.get(3).and_then(Val::str) == Some("connected")
            }
            _ => false,
        };
        if ok {
            out.push(ServerAddr::Tcp { host, port });
        }
    }
    out.sort_by_key(|a| a.to_string());
    Some(out)
}

/// Asks the sentinels where every master is and which of its replicas are
/// healthy, at start, every [`RECHECK`] and when an announcement nudges.
async fn poll(f: Follow, st: Arc<Shared>, tx: UnboundedSender<News>) {
    let mut warned = false;
    loop {
        let mut answered = false;
        for s in &f.sentinels {
            let Ok(mut c) = Conn::open(s, sentinel_auth(&f)).await else {
                continue;
            };
            let mut all = true;
            for m in &f.masters {
                match c
                    .call(&[b"SENTINEL", b"get-master-addr-by-name", m.as_bytes()])
                    .await
                {
                    Ok(r) => {
                        let v = strings(&r);
                        if let [host, port] = &v[..] {
                            if let Ok(port) = port.parse() {
                                report(&f, &st, m, host.clone(), port, &tx).await;
                                if let Some(replicas) =
                                    healthy_replicas(&f, &mut c, m, (host, port)).await
                                {
                                    let _ = tx.send(News::Replicas {
                                        pool: f.pool.clone(),
                                        server: m.clone(),
                                        replicas,
                                    });
                                }
                            }
                        }
                    }
                    Err(_) => all = false,
                }
            }
            if all {
                answered = true;
                break;
            }
        }
        if !answered && !warned {
            tracing::warn!(
                "pool '{}': no sentinel answers; serving the last known masters",
                f.pool
            );
        }
        warned = !answered;
        tokio::select! {
            _ = tokio::time::sleep(RECHECK) => {}
            _ = st.nudge.notified() => {
                // Announcements come in bursts.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a sentinel announces.
const CHANNELS: [&[u8]; 6] = [
    b"+switch-master",
    b"+sdown",
    b"-sdown",
    b"+odown",
    b"+slave",
    b"+convert-to-slave",
];

/// Listens for announcements on one sentinel, reconnecting: `+switch-master`
/// is followed at once; the others (an instance down or back, a replica
/// added) make the poller check early.
async fn listen(
    f: Follow,
    sentinel: ServerAddr,
    up: Arc<AtomicBool>,
    st: Arc<Shared>,
    tx: UnboundedSender<News>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut subscribe = vec![b"SUBSCRIBE".as_slice()];
    subscribe.extend(CHANNELS);
    loop {
        if let Ok(mut c) = Conn::open(&sentinel, sentinel_auth(&f)).await {
            if c.send(&subscribe).await.is_ok() {
                while let Ok(m) = c.next().await {
                    up.store(true, Relaxed);
                    let v = strings(&m);
                    // ["message", channel, text]
                    let [kind, channel, text] = &v[..] else {
                        continue;
                    };
                    if kind != "message" {
                        continue;
                    }
                    let w: Vec<&str> = text.split(' ').collect();
                    let ours = |name: &str| f.masters.iter().any(|m| m == name);
                    match (channel.as_str(), &w[..]) {
                        ("+switch-master", [name, _, _, host, port]) if ours(name) => {
                            if let Ok(port) = port.parse() {
                                tracing::info!(
                                    "pool '{}': sentinel announces +switch-master {text}",
                                    f.pool
                                );
                                report(&f, &st, name, (*host).into(), port, &tx).await;
                                st.nudge.notify_one();
                            }
                        }
                        // "master <name> <ip> <port>"
                        ("+sdown" | "+odown", ["master", name, ..]) if ours(name) => {
                            if let Ok(mut m) = st.masters.lock() {
                                let k = m.entry((*name).into()).or_default();
                                k.down_since.get_or_insert_with(std::time::Instant::now);
                            }
                            st.nudge.notify_one();
                        }
                        ("-sdown", ["master", name, ..]) => {
                            if let Ok(mut m) = st.masters.lock() {
                                if let Some(k) = m.get_mut(*name) {
                                    k.down_since = None;
                                }
                            }
                        }
                        // "slave <ip:port> <ip> <port> @ <master> <ip> <port>"
                        (_, [_, _, _, _, "@", name, ..]) if ours(name) => {
                            st.nudge.notify_one();
                        }
                        _ => {}
                    }
                }
            }
        }
        up.store(false, Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_sentinel_names_healthy() {
        let r = |ip: &str, port: &str, flags: &str, link: &str, mport: &str| {
            let kv = [
                ("name", format!("{ip}:{port}")),
                ("ip", ip.into()),
                ("port", port.into()),
                ("flags", flags.into()),
                ("master-link-status", link.into()),
                ("master-host", "10.0.0.1".into()),
                ("master-port", mport.into()),
            ];
            let mut out = format!("*{}\r\n", kv.len() * 2);
            for (k, v) in kv {
                out += &format!("${}\r\n{k}\r\n${}\r\n{v}\r\n", k.len(), v.len());
            }
            out
        };
        let reply = format!(
            "*5\r\n{}{}{}{}{}",
            r("10.0.0.2", "6380", "slave", "ok", "6379"),
            r("10.0.0.3", "6380", "s_down,slave", "ok", "6379"),
            r("10.0.0.4", "6380", "slave,disconnected", "ok", "6379"),
            r("10.0.0.5", "6380", "slave", "err", "6379"),
            r("10.0.0.6", "6380", "slave", "ok", "7000"),
        );
        assert_eq!(
            candidates(reply.as_bytes(), ("10.0.0.1", 6379)),
            vec![("10.0.0.2".to_string(), 6380)]
        );
        assert!(candidates(b"*0\r\n", ("10.0.0.1", 6379)).is_empty());
        assert!(candidates(b"-ERR No such master with that name\r\n", ("h", 1)).is_empty());
    }

    #[test]
    fn replicas_the_master_lists() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0\r\nslave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=12\r\nmaster_repl_offset:42\r\n";
        assert_eq!(
            listed(info),
            vec![
                Listed {
                    host: "127.0.0.1".into(),
                    port: 7001,
                    online: true,
                    lag: 0
                },
                Listed {
                    host: "127.0.0.1".into(),
                    port: 7002,
                    online: false,
                    lag: 12
                },
            ]
        );
    }

    #[test]
    fn bulk_elements_of_replies() {
        assert_eq!(
            strings(b"*3\r\n$6\r\nmaster\r\n:3129659\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n9001\r\n$7\r\n3129242\r\n"),
            vec!["master".to_string()]
        );
        assert_eq!(
            strings(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n"),
            vec!["127.0.0.1".to_string(), "6380".to_string()]
        );
        assert!(strings(b"*-1\r\n").is_empty());
        assert!(strings(b"-ERR x\r\n").is_empty());
        assert!(strings(b"*5\r\n$1\r\n").is_empty());
    }
}
