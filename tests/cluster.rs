//! Redis Cluster as a backend (`distribution: redis_cluster`), against a
//! real cluster the test makes: six `redis-server --cluster-enabled yes` on
//! free loopback ports, joined by `redis-cli --cluster create …
//! --cluster-replicas 1`.

mod support;
use std::process::Command;
use support::{resp, shardproxy, start, within, Conn, Proc, Value};

/// A cluster of `n` nodes (masters and, with `replicas`, one replica each).
struct Cluster {
    nodes: Vec<Proc>,
}

impl Cluster {
    fn new(n: usize, replicas: usize) -> Cluster {
        support::require("redis-server");
        support::require("redis-cli");
        let nodes: Vec<Proc> = (0..n)
            .map(|_| {
                start("redis-server", |port, dir| {
                    let mut c = Command::new("redis-server");
                    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                        .args(["--save", "", "--appendonly", "no"])
                        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                        .arg("--cluster-config-file")
                        .arg(dir.join("nodes.conf"))
                        .arg("--dir")
                        .arg(dir);
                    c
                })
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|p| format!("127.0.0.1:{}", p.port)));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli: {e}"));
        assert!(
            out.status.success(),
            "cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = Cluster { nodes };
        within(30, "the cluster is ok on every node", || {
            c.nodes.iter().all(|n| {
                Conn::new(n.port)
                    .value(&[b"CLUSTER", b"INFO"])
                    .text()
                    .contains("cluster_state:ok")
            })
        });
        c
    }

    /// The port of the master serving `key`'s slot, as the cluster says.
    fn owner(&self, slots: &[(i64, i64, u16)], key: &[u8]) -> u16 {
        let slot = i64::from(shardproxy::dist::cluster::key_slot(key));
        slots
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, p)| *p)
            .unwrap_or_else(|| panic!("no owner for slot {slot}"))
    }

    /// (first slot, last slot, master port) per range, by `CLUSTER SLOTS`.
    fn slots(&self) -> Vec<(i64, i64, u16)> {
        let v = Conn::new(self.nodes[0].port).value(&[b"CLUSTER", b"SLOTS"]);
        v.items()
            .iter()
            .map(|r| {
                let i = r.items();
                (i[0].int(), i[1].int(), i[2].items()[1].int() as u16)
            })
            .collect()
    }

    fn proxy(&self, extra: &str) -> Proc {
        let seeds: String = self.nodes[..2]
            .iter()
            .map(|n| format!("   - 127.0.0.1:{}:1\n", n.port))
            .collect();
        let extra = extra.to_string();
        shardproxy(
            &move |port| {
                format!("orders:\n  listen: 127.0.0.1:{port}\n  redis: true\n  distribution: redis_cluster\n  timeout: 2000\n{extra}  servers:\n{seeds}")
            },
            &[],
        )
    }
}

#[test]
fn keys_land_where_the_cluster_places_them() {
    let c = Cluster::new(6, 1);
    let p = c.proxy("");
    let mut k = Conn::new(p.port);
    // 10,000 keys, pipelined in batches.
    let keys: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("key:{i}").into_bytes())
        .collect();
    for batch in keys.chunks(500) {
        let mut out = Vec::new();
        for key in batch {
            out.extend(resp(&[b"SET", key, key]));
        }
        k.send(&out);
        for _ in batch {
            assert_eq!(k.reply(), b"+OK\r\n");
        }
    }
    // Each is on the master the cluster says serves its slot (a plain GET
    // there: a wrong node would answer MOVED).
    let slots = c.slots();
    let masters: std::collections::BTreeSet<u16> = slots.iter().map(|s| s.2).collect();
    assert_eq!(masters.len(), 3);
    for m in &masters {
        let mine: Vec<&Vec<u8>> = keys
            .iter()
            .filter(|key| c.owner(&slots, key) == *m)
            .collect();
        assert!(mine.len() > 2000, "{} keys on {m}", mine.len());
        let mut d = Conn::new(*m);
        let mut out = Vec::new();
        for key in &mine {
            out.extend(resp(&[b"GET", key]));
        }
        d.send(&out);
        for key in &mine {
            let mut want = format!("${}\r\n", key.len()).into_bytes();
            want.extend(key.iter());
            want.extend(b"\r\n");
            assert_eq!(d.reply(), want);
        }
    }
    // MSET and MGET of 100 keys across all slots: split per slot, merged.
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    let names: Vec<Vec<u8>> = (0..100).map(|i| format!("m:{i}").into_bytes()).collect();
    let vals: Vec<Vec<u8>> = (0..100).map(|i| format!("v{i}").into_bytes()).collect();
    for (n, v) in names.iter().zip(&vals) {
        mset.push(n);
        mset.push(v);
    }
    assert_eq!(k.cmd(&mset), b"+OK\r\n");
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(names.iter().map(|n| n.as_slice()));
    mget.push(b"m:missing");
    let got = Value::parse(&k.cmd(&mget));
    let items = got.items();
    assert_eq!(items.len(), 101);
    for (i, v) in items[..100].iter().enumerate() {
        assert_eq!(v.text(), format!("v{i}"));
    }
    assert_eq!(items[100], Value::Nil);
    let mut del: Vec<&[u8]> = vec![b"DEL"];
    del.extend(names.iter().map(|n| n.as_slice()));
    assert_eq!(k.cmd(&del), b":100\r\n");
    // A transaction within one slot runs; keys of two nodes are refused.
    assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"SET", b"{t}a", b"1"]), b"+QUEUED\r\n");
    assert_eq!(k.cmd(&[b"INCR", b"{t}b"]), b"+QUEUED\r\n");
    assert_eq!(k.cmd(&[b"EXEC"]), b"*2\r\n+OK\r\n:1\r\n");
    let r = k.cmd(&[b"RENAME", b"key:1", b"key:2"]);
    assert!(
        r.starts_with(b"-CROSSSLOT"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    // Fan-out over the masters: DBSIZE sums them.
    let total: i64 = masters
        .iter()
        .map(|m| Conn::new(*m).value(&[b"DBSIZE"]).int())
        .sum();
    assert_eq!(k.value(&[b"DBSIZE"]).int(), total);
    // Stats: one entry per node, named ip:port.
    let stats = p.stats();
    for m in &masters {
        assert!(stats.contains(&format!("\"127.0.0.1:{m}\"")), "{stats}");
    }
}

#[test]
fn dash_t_says_what_does_not_apply() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let conf = dir.path().join("p.yml");
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_shardproxy"));
    let base = "orders:\n  listen: 127.0.0.1:22130\n  redis: true\n  distribution: redis_cluster\n  servers:\n   - 127.0.0.1:7000:1\n   - 127.0.0.1:7001:1\n";
    let check = |text: &str| {
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(&bin)
            .arg("-t")
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check(base);
    assert!(ok, "{err}");
    let (ok, _) = check(&base.replace("  redis: true\n", "  redis: true\n  hash_tag: \"{}\"\n"));
    assert!(ok);
    for (text, want) in [
        (
            base.replace("  redis: true\n", "  redis: true\n  hash: murmur\n"),
            "hash",
        ),
        (
            base.replace("  redis: true\n", "  redis: true\n  hash_tag: \"::\"\n"),
            "hash_tag: does not apply",
        ),
        (base.replace("7001:1", "7001:5"), "weights do not apply"),
        (
            base.replace(
                "  redis: true\n",
                "  redis: true\n  auto_eject_hosts: true\n",
            ),
            "the cluster fails over by itself",
        ),
        (
            base.replace("  redis: true\n", ""),
            "redis_cluster is for redis pools",
        ),
    ] {
        let (ok, err) = check(&text);
        assert!(!ok, "accepted: {text}");
        assert!(err.contains(want), "{want} not in {err}");
    }
}
