//! `distribution: redis_cluster`: keys placed by Redis Cluster's rule —
//! CRC16 (XMODEM) of the key, or of its `{…}` hash tag, modulo 16384 slots —
//! and each slot served by the master the cluster says. The slot map comes
//! from the cluster (`CLUSTER SHARDS`, or `CLUSTER SLOTS` before Redis 7),
//! fetched by [`crate::cluster`]; this module is the pure part: the hash,
//! the parsing of those replies, and the distributor over a slot map.

use super::{BuildArgs, Distributor, NoServer, Node, RouteKey};
use crate::proto::redis::value::Val;
use std::sync::Arc;

/// Slots in a cluster.
pub const SLOTS: usize = 16384;
/// A slot no master serves.
pub const NONE: u16 = u16::MAX;

/// CRC16-CCITT (XMODEM), as Redis Cluster computes it: the low 16 bits of
/// nutcracker's `crc16` (the same table; nutcracker only never masks its
/// accumulator).
pub fn crc16(bytes: &[u8]) -> u16 {
    crate::hash::crc::crc16(bytes) as u16
}

/// The slot of a routing key (its hash tag already taken, see
/// [`crate::route::route_key`] with `{}`).
#[inline]
pub fn slot(route_key: &[u8]) -> u16 {
    crc16(route_key) % SLOTS as u16
}

/// The slot of a whole key, with Redis's hash tag rule.
pub fn key_slot(key: &[u8]) -> u16 {
    slot(crate::route::route_key(Some(*b"{}"), key).bytes)
}

/// A node's address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A master, its replicas, and its slot ranges (first, last).
type Shard = (Addr, Vec<Addr>, Vec<(u16, u16)>);

/// What the cluster says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The masters that serve slots, ordered by address.
    pub masters: Vec<Addr>,
    /// Per master: its replicas.
    pub replicas: Vec<Vec<Addr>>,
    /// Per slot: the index of its master in `masters`, or [`NONE`].
    pub slots: Arc<Vec<u16>>,
}

impl Topology {
    /// Slots with a master.
    pub fn covered(&self) -> usize {
        self.slots.iter().filter(|&&s| s != NONE).count()
    }

    /// Builds the topology from (master, replicas, slot ranges) entries.
    fn from_entries(entries: Vec<Shard>) -> Topology {
        let mut masters: Vec<Addr> = entries.iter().map(|(m, _, _)| m.clone()).collect();
        masters.sort();
        masters.dedup();
        let mut replicas = vec![Vec::new(); masters.len()];
        let mut slots = vec![NONE; SLOTS];
        for (m, rs, ranges) in entries {
            let Ok(i) = masters.binary_search(&m) else {
                continue;
            };
            for r in rs {
                if !replicas[i].contains(&r) {
                    replicas[i].push(r);
                }
            }
            for (a, b) in ranges {
                for s in a..=b.min(SLOTS as u16 - 1) {
                    slots[s as usize] = i as u16;
                }
            }
        }
        for r in &mut replicas {
            r.sort();
        }
        Topology {
            masters,
            replicas,
            slots: Arc::new(slots),
        }
    }

    /// From a `CLUSTER SHARDS` reply (Redis 7): per shard, its slot ranges
    /// and nodes; the master is the node with `role master` that is not
    /// `fail`.
    pub fn from_shards(reply: &Val) -> Option<Topology> {
        let Val::Arr(shards) = reply else {
            return None;
        };
        let mut entries = Vec::new();
        for shard in shards {
            let ranges: Vec<(u16, u16)> = shard
                .get("slots")?
                .items()
                .chunks(2)
                .filter_map(|p| {
                    let a = u16::try_from(p.first()?.int()?).ok()?;
                    let b = u16::try_from(p.get(1)?.int()?).ok()?;
                    Some((a, b))
                })
                .collect();
            let mut master = None;
            let mut replicas = Vec::new();
            for n in shard.get("nodes")?.items() {
                let host = n
                    .field("endpoint")
                    .filter(|e| !e.is_empty() && *e != "?")
                    .or_else(|| n.field("ip"))?;
                let port = u16::try_from(n.get("port")?.int()?).ok()?;
                let addr = Addr {
                    host: host.to_string(),
                    port,
                };
                let healthy = n.field("health") != Some("fail");
                match n.field("role") {
                    Some("master") if healthy => master = Some(addr),
                    Some("replica") if healthy => replicas.push(addr),
                    _ => {}
                }
            }
            if let Some(m) = master {
                if !ranges.is_empty() {
                    entries.push((m, replicas, ranges));
                }
            }
        }
        Some(Topology::from_entries(entries))
    }

    /// From a `CLUSTER SLOTS` reply: `[start, end, [ip, port, id…],
    /// [replica…]…]` per range.
    pub fn from_slots(reply: &Val) -> Option<Topology> {
        let Val::Arr(ranges) = reply else {
            return None;
        };
        let node = |v: &Val| -> Option<Addr> {
            let items = v.items();
            Some(Addr {
                host: items.first()?.str()?.to_string(),
                port: u16::try_from(items.get(1)?.int()?).ok()?,
            })
        };
        let mut entries = Vec::new();
        for r in ranges {
            let items = r.items();
            let a = u16::try_from(items.first()?.int()?).ok()?;
            let b = u16::try_from(items.get(1)?.int()?).ok()?;
            let master = node(items.get(2)?)?;
            let replicas = items.iter().skip(3).filter_map(node).collect();
            entries.push((master, replicas, vec![(a, b)]));
        }
        Some(Topology::from_entries(entries))
    }
}

/// The distributor over a slot map: slot → server index.
#[derive(Debug)]
struct SlotTable {
    slots: Arc<Vec<u16>>,
}

impl Distributor for SlotTable {
    #[inline]
    fn dispatch(&self, key: RouteKey<'_>) -> Result<usize, NoServer> {
        match self.slots.get(slot(key.bytes) as usize) {
            Some(&i) if i != NONE => Ok(i as usize),
            _ => Err(NoServer::NoSlotOwner),
        }
    }

    #[inline]
    fn slot(&self, key: RouteKey<'_>) -> Option<u16> {
        Some(slot(key.bytes))
    }

    fn has_slots(&self) -> bool {
        true
    }
}

pub fn build(args: BuildArgs<'_>) -> Box<dyn Distributor> {
    let slots = args
        .slots
        .cloned()
        .unwrap_or_else(|| Arc::new(vec![NONE; SLOTS]));
    Box::new(SlotTable { slots })
}

/// Cluster nodes carry no names or weights of the user's.
pub fn validate(_: &[Node]) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_and_slots_as_redis_computes_them() {
        // The check value of CRC16/XMODEM, and slots from the cluster spec
        // and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        // An empty tag hashes the whole key; only the first tag counts.
        assert_eq!(key_slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), slot(b"bar"));
    }

    fn s(x: &str) -> Val {
        Val::Str(x.into())
    }

    #[test]
    fn topology_from_cluster_slots() {
        let node = |port: i64| Val::Arr(vec![s("127.0.0.1"), Val::Int(port), s("id")]);
        let reply = Val::Arr(vec![
            Val::Arr(vec![Val::Int(0), Val::Int(5460), node(7000), node(7003)]),
            Val::Arr(vec![
                Val::Int(5461),
                Val::Int(10922),
                node(7001),
                node(7004),
            ]),
            Val::Arr(vec![Val::Int(10923), Val::Int(16383), node(7002)]),
        ]);
        let t = Topology::from_slots(&reply).unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(t.masters.len(), 3);
        assert_eq!(t.masters[0].port, 7000);
        assert_eq!(t.replicas[0][0].port, 7003);
        assert!(t.replicas[2].is_empty());
        assert_eq!(t.slots[0], 0);
        assert_eq!(t.slots[5461], 1);
        assert_eq!(t.slots[16383], 2);
        assert_eq!(t.covered(), SLOTS);
    }

    #[test]
    fn topology_from_cluster_shards() {
        let node = |port: i64, role: &str, health: &str| {
            Val::Arr(vec![
                s("id"),
                s("x"),
                s("port"),
                Val::Int(port),
                s("ip"),
                s("127.0.0.1"),
                s("endpoint"),
                s("127.0.0.1"),
                s("role"),
                s(role),
                s("health"),
                s(health),
            ])
        };
        let shard = |ranges: &[i64], nodes: Vec<Val>| {
            Val::Arr(vec![
                s("slots"),
                Val::Arr(ranges.iter().map(|&r| Val::Int(r)).collect()),
                s("nodes"),
                Val::Arr(nodes),
            ])
        };
        let reply = Val::Arr(vec![
            shard(
                &[0, 100, 200, 300],
                vec![
                    node(7001, "master", "online"),
                    node(7004, "replica", "online"),
                ],
            ),
            shard(
                &[101, 199],
                vec![
                    node(7000, "master", "fail"),
                    node(7003, "replica", "loading"),
                ],
            ),
            shard(&[], vec![node(7009, "master", "online")]),
        ]);
        let t = Topology::from_shards(&reply).unwrap_or_else(|| panic!("not parsed"));
        // The failed master's shard serves nothing; the empty one is no master.
        assert_eq!(t.masters.len(), 1);
        assert_eq!(t.slots[0], 0);
        assert_eq!(t.slots[250], 0);
        assert_eq!(t.slots[150], NONE);
        assert_eq!(t.slots[301], NONE);
        assert_eq!(t.replicas[0][0].port, 7004);
        assert_eq!(t.covered(), 202);
    }

    #[test]
    fn the_table_routes_by_slot_and_refuses_unserved_slots() {
        let mut slots = vec![NONE; SLOTS];
        slots[key_slot(b"foo") as usize] = 1;
        let d = build(BuildArgs {
            hash: crate::hash::HashFn::DEFAULT,
            live: &[],
            slots: Some(&Arc::new(slots)),
        });
        let k = |b: &'static [u8]| RouteKey {
            bytes: b,
            tagged: false,
        };
        assert_eq!(d.dispatch(k(b"foo")), Ok(1));
        assert_eq!(d.dispatch(k(b"bar")), Err(NoServer::NoSlotOwner));
        assert_eq!(d.slot(k(b"foo")), Some(12182));
    }
}
