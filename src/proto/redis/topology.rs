//! The cluster topology a pool shows to cluster-aware clients: one node,
//! the proxy's own address, owning all 16,384 slots.
//!
//! A Redis Cluster client (redis-py `RedisCluster`, ioredis `Cluster`,
//! Lettuce, go-redis `ClusterClient`…) starts from `CLUSTER SLOTS` or
//! `CLUSTER SHARDS` and sends each key to the node owning its slot. Behind
//! the proxy every key is served through the one address the client dialled
//! — the pool routes it on (by its `distribution`, a real cluster's slots
//! included) — so that is the truth to report: a single master holding
//! every slot, never a redirection, never a replica. The client then treats
//! the proxy as one node; the proxy keeps its own rules for what a node
//! accepts (e.g. multi-key commands across servers).
//!
//! Replies are built here from the address alone (no sockets): the address
//! the client connected to, so a proxy on a wildcard listen address reports
//! the one each client can reach. The node id is derived from that address
//! and the pool name, so it is the same on every connection, every worker
//! and every restart.

use super::request::{put_array_header, put_bulk, put_int};
use crate::dist::cluster::SLOTS;
use std::net::SocketAddr;

/// What a cluster-aware client is told about the node it connected to.
#[derive(Debug, Clone)]
pub struct View {
    ip: String,
    port: u16,
    /// The client connected with TLS (`CLUSTER SHARDS` says `tls-port`).
    tls: bool,
    id: String,
    shard: String,
    resp3: bool,
}

impl View {
    pub fn new(addr: SocketAddr, pool: &str, tls: bool, resp3: bool) -> View {
        let ip = addr.ip().to_canonical().to_string();
        let seed = format!("{pool}\0{ip}\0{}", addr.port());
        View {
            id: hex_id(&seed, "node"),
            shard: hex_id(&seed, "shard"),
            ip,
            port: addr.port(),
            tls,
            resp3,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `CLUSTER SLOTS`: `[[0, 16383, [ip, port, id, {}]]]` (Redis 7's shape:
    /// the fourth element holds a node's hostname, which this one has none of).
    pub fn slots(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        put_array_header(&mut out, 1);
        put_array_header(&mut out, 3);
        put_int(&mut out, 0);
        put_int(&mut out, SLOTS - 1);
        put_array_header(&mut out, 4);
        put_bulk(&mut out, self.ip.as_bytes());
        put_int(&mut out, self.port);
        put_bulk(&mut out, self.id.as_bytes());
        self.map_header(&mut out, 0);
        out
    }

    /// `CLUSTER SHARDS`: one shard, slots 0–16383, one node, a master.
    pub fn shards(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        put_array_header(&mut out, 1);
        self.map_header(&mut out, 2);
        put_bulk(&mut out, b"slots");
        put_array_header(&mut out, 2);
        put_int(&mut out, 0);
        put_int(&mut out, SLOTS - 1);
        put_bulk(&mut out, b"nodes");
        put_array_header(&mut out, 1);
        self.map_header(&mut out, 7);
        put_bulk(&mut out, b"id");
        put_bulk(&mut out, self.id.as_bytes());
        put_bulk(&mut out, if self.tls { b"tls-port" } else { b"port" });
        put_int(&mut out, self.port);
        put_bulk(&mut out, b"ip");
        put_bulk(&mut out, self.ip.as_bytes());
        put_bulk(&mut out, b"endpoint");
        put_bulk(&mut out, self.ip.as_bytes());
        put_bulk(&mut out, b"role");
        put_bulk(&mut out, b"master");
        put_bulk(&mut out, b"replication-offset");
        put_int(&mut out, 0);
        put_bulk(&mut out, b"health");
        put_bulk(&mut out, b"online");
        out
    }

    /// `CLUSTER NODES` (and `CLUSTER MYID`'s node in it): one line, this
    /// node, `myself,master`, every slot. There is no cluster bus: its
    /// port is given as 0.
    pub fn nodes(&self) -> Vec<u8> {
        let line = format!(
            "{} {}:{}@0 myself,master - 0 0 1 connected 0-{}\n",
            self.id,
            self.ip,
            self.port,
            SLOTS - 1
        );
        self.text(&line)
    }

    /// `CLUSTER INFO`: a healthy one-node cluster.
    pub fn info(&self) -> Vec<u8> {
        let n = SLOTS;
        let text = format!(
            "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:{n}\r\n\
             cluster_slots_ok:{n}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
             cluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:1\r\n\
             cluster_my_epoch:1\r\n"
        );
        self.text(&text)
    }

    pub fn myid(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        put_bulk(&mut out, self.id.as_bytes());
        out
    }

    pub fn myshardid(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        put_bulk(&mut out, self.shard.as_bytes());
        out
    }

    /// A text reply: verbatim in RESP3 (as Redis sends these), bulk in RESP2.
    fn text(&self, s: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(s.len() + 16);
        if self.resp3 {
            out.push(b'=');
            out.extend_from_slice(itoa::Buffer::new().format(s.len() + 4).as_bytes());
            out.extend_from_slice(b"\r\ntxt:");
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(b"\r\n");
        } else {
            put_bulk(&mut out, s.as_bytes());
        }
        out
    }

    /// A map of `n` pairs: `%n` in RESP3, a flat array of 2n in RESP2.
    fn map_header(&self, out: &mut Vec<u8>, n: usize) {
        if self.resp3 {
            out.push(b'%');
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        } else {
            put_array_header(out, 2 * n);
        }
    }
}

/// `CLUSTER KEYSLOT key`.
pub fn keyslot(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    put_int(&mut out, crate::dist::cluster::key_slot(key));
    out
}

/// 40 hex digits, as a cluster node id, from `seed` and a purpose.
fn hex_id(seed: &str, what: &str) -> String {
    let mut id = String::with_capacity(40);
    for part in 0..3u8 {
        let h = fnv1a64(&[seed.as_bytes(), b"\0", what.as_bytes(), &[part]]);
        id.push_str(&format!("{h:016x}"));
    }
    id.truncate(40);
    id
}

/// FNV-1a, 64 bits: the pool's `hash:` functions are nutcracker's 32-bit
/// ones, and std's hasher may change between Rust releases, while an id
/// must survive restarts and upgrades.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::redis::reply::scan_reply;
    use crate::proto::Scan;

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    fn view(addr: &str, resp3: bool) -> View {
        let a: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
        View::new(a, "alpha", false, resp3)
    }

    /// Every reply is one complete, well-formed RESP frame.
    fn whole(b: &[u8]) {
        let buf = bytes::BytesMut::from(b);
        match scan_reply(&buf) {
            Ok(Scan::Complete(n)) => assert_eq!(n, b.len(), "{}", String::from_utf8_lossy(b)),
            other => panic!("{other:?}: {}", String::from_utf8_lossy(b)),
        }
    }

    #[test]
    fn replies_are_whole_frames_in_both_protocols() {
        for resp3 in [false, true] {
            let v = view("127.0.0.1:7001", resp3);
            for r in [
                v.slots(),
                v.shards(),
                v.nodes(),
                v.info(),
                v.myid(),
                v.myshardid(),
            ] {
                whole(&r);
            }
        }
        whole(&keyslot(b"foo"));
    }

    #[test]
    fn slots_names_the_address_and_every_slot() {
        let v = view("127.0.0.1:7001", false);
        let want = format!(
            "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\n{}\r\n*0\r\n",
            v.id()
        );
        assert_eq!(text(&v.slots()), want);
        let v3 = view("127.0.0.1:7001", true);
        assert!(text(&v3.slots()).ends_with("\r\n%0\r\n"));
    }

    #[test]
    fn nodes_is_one_master_line() {
        let v = view("[::1]:7002", false);
        let resp2 = text(&v.nodes());
        let line = format!(
            "{} ::1:7002@0 myself,master - 0 0 1 connected 0-16383\n",
            v.id()
        );
        assert_eq!(resp2, format!("${}\r\n{line}\r\n", line.len()));
        let v3 = view("[::1]:7002", true);
        assert_eq!(
            text(&v3.nodes()),
            format!("={}\r\ntxt:{line}\r\n", line.len() + 4)
        );
    }

    #[test]
    fn shards_port_field_follows_tls() {
        let a = SocketAddr::from(([127, 0, 0, 1], 7003));
        let plain = text(&View::new(a, "p", false, false).shards());
        let tls = text(&View::new(a, "p", true, false).shards());
        assert!(plain.contains("$4\r\nport\r\n:7003\r\n") && !plain.contains("tls-port"));
        assert!(tls.contains("$8\r\ntls-port\r\n:7003\r\n"));
        assert!(plain.contains("$6\r\nmaster\r\n") && plain.contains("$6\r\nonline\r\n"));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = view("127.0.0.1:7001", false);
        let b = view("127.0.0.1:7001", true);
        let c = view("127.0.0.1:7002", false);
        let mapped = view("[::ffff:127.0.0.1]:7001", false);
        assert_eq!(a.id(), b.id());
        assert_eq!(
            a.id(),
            mapped.id(),
            "an IPv4-mapped address is the IPv4 one"
        );
        assert_ne!(a.id(), c.id());
        assert_ne!(a.id, a.shard);
        assert_eq!(a.id().len(), 40);
        assert!(a.id().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    /// The proxy's own cluster strategy reads the view as a cluster of one
    /// master holding every slot (a shardproxy in front of a shardproxy).
    #[test]
    fn the_cluster_strategy_reads_it_as_one_master() {
        use crate::dist::cluster::{Addr, Topology};
        use crate::proto::redis::value::Val;
        let v = view("127.0.0.1:7001", false);
        let me = Addr {
            host: "127.0.0.1".into(),
            port: 7001,
        };
        for t in [
            Val::parse(&v.slots()).and_then(|r| Topology::from_slots(&r)),
            Val::parse(&v.shards()).and_then(|r| Topology::from_shards(&r)),
        ] {
            let t = t.unwrap_or_else(|| panic!("not a topology"));
            assert_eq!(t.masters, std::slice::from_ref(&me));
            assert_eq!(t.covered(), SLOTS);
            assert!(t.replicas.iter().all(Vec::is_empty));
        }
    }

    #[test]
    fn keyslot_follows_hash_tags() {
        // The spec's example value: CRC16("123456789") = 0x31C3.
        assert_eq!(
            keyslot(b"123456789"),
            format!(":{}\r\n", 0x31C3).into_bytes()
        );
        assert_eq!(keyslot(b"{user1000}.following"), keyslot(b"user1000"));
    }
}
