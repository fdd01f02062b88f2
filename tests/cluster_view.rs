//! Cluster-aware clients through the proxy: the pool answers `CLUSTER
//! SLOTS`/`SHARDS`/`NODES`/`INFO`/`MYID`/`KEYSLOT` as one node holding every
//! slot at the address the client dialled (docs/cluster.md, "Cluster-aware
//! clients"), so redis-py's `RedisCluster` and ioredis's `Cluster` work
//! unmodified, in front of a static pool and in front of a Redis Cluster.

mod support;
use support::{redis, redis_with, run_node, run_python, shardproxy, Conn, Proc, Value};

fn pool(backends: &[&Proc]) -> impl Fn(u16) -> String {
    let s = support::servers(backends);
    move |port| {
        format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: murmur\n  distribution: ketama\n  hash_tag: \"{{}}\"\n  timeout: 5000\n  servers:\n{s}")
    }
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.field(name)
        .unwrap_or_else(|| panic!("no {name} in {v:?}"))
}

/// Which backend holds `key` (by asking each).
fn holder(backends: &[&Proc], key: &str) -> Option<u16> {
    backends
        .iter()
        .find(|b| Conn::new(b.port).value(&[b"EXISTS", key.as_bytes()]).int() == 1)
        .map(|b| b.port)
}

#[test]
fn one_node_holding_every_slot_at_the_dialled_address() {
    let (a, b) = (redis(), redis());
    let p = shardproxy(&pool(&[&a, &b]), &[]);
    let mut k = Conn::new(p.port);
    let port = i64::from(p.port);

    // CLUSTER SLOTS: [[0, 16383, ["127.0.0.1", port, id, []]]]
    let slots = k.value(&[b"CLUSTER", b"SLOTS"]);
    let range = &slots.items()[0];
    assert_eq!(slots.items().len(), 1, "{slots:?}");
    assert_eq!(range.items()[0].int(), 0);
    assert_eq!(range.items()[1].int(), 16383);
    let node = range.items()[2].items();
    assert_eq!(node[0].text(), "127.0.0.1");
    assert_eq!(node[1].int(), port);
    let id = node[2].text();
    assert_eq!(id.len(), 40, "{id}");
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");

    // The same id everywhere, on every connection.
    assert_eq!(k.value(&[b"CLUSTER", b"MYID"]).text(), id);
    assert_eq!(Conn::new(p.port).value(&[b"CLUSTER", b"MYID"]).text(), id);
    let shard_id = k.value(&[b"CLUSTER", b"MYSHARDID"]).text();
    assert!(shard_id.len() == 40 && shard_id != id, "{shard_id}");
    let nodes = k.value(&[b"CLUSTER", b"NODES"]).text();
    assert_eq!(
        nodes,
        format!("{id} 127.0.0.1:{port}@0 myself,master - 0 0 1 connected 0-16383\n")
    );
    let info = k.value(&[b"CLUSTER", b"INFO"]).text();
    for line in [
        "cluster_enabled:1",
        "cluster_state:ok",
        "cluster_slots_ok:16384",
        "cluster_known_nodes:1",
    ] {
        assert!(
            info.lines().any(|l| l == line),
            "{line} missing from {info}"
        );
    }
    let shards = k.value(&[b"CLUSTER", b"SHARDS"]);
    let shard = &shards.items()[0];
    let range: Vec<i64> = field(shard, "slots")
        .items()
        .iter()
        .map(Value::int)
        .collect();
    assert_eq!(range, [0, 16383]);
    let n = &field(shard, "nodes").items()[0];
    assert_eq!(field(n, "id").text(), id);
    assert_eq!(field(n, "port").int(), port);
    assert_eq!(field(n, "role").text(), "master");
    assert_eq!(field(n, "health").text(), "online");

    // What a cluster client sends besides: accepted, nothing changes.
    for c in [&b"READONLY"[..], b"READWRITE", b"ASKING"] {
        assert_eq!(k.cmd(&[c]), b"+OK\r\n");
    }
    // Administration of a cluster is refused, with the reason.
    match k.value(&[b"CLUSTER", b"ADDSLOTS", b"1"]) {
        Value::Error(e) => assert!(e.contains("one node holding every slot"), "{e}"),
        other => panic!("{other:?}"),
    }
    // RESP3: maps where Redis 7 sends maps, verbatim text for NODES.
    assert!(matches!(k.value(&[b"HELLO", b"3"]), Value::Map(_)));
    let shards = k.value(&[b"CLUSTER", b"SHARDS"]);
    assert!(matches!(&shards.items()[0], Value::Map(_)), "{shards:?}");
    assert_eq!(
        k.cmd(&[b"CLUSTER", b"NODES"]),
        format!("={}\r\ntxt:{nodes}\r\n", nodes.len() + 4).into_bytes()
    );
    // Not inside a transaction (it runs on one server): EXEC aborts.
    assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert!(matches!(k.value(&[b"CLUSTER", b"SLOTS"]), Value::Error(_)));
    assert!(k.value(&[b"EXEC"]).text().starts_with("EXECABORT"));
    assert_eq!(k.cmd(&[b"PING"]), b"+PONG\r\n");
}

/// `CLUSTER KEYSLOT` as a cluster node computes it (hash tags included).
#[test]
fn keyslot_is_the_clusters() {
    let node = redis_with(&["--cluster-enabled", "yes"]);
    let a = redis();
    let p = shardproxy(&pool(&[&a]), &[]);
    let (mut k, mut n) = (Conn::new(p.port), Conn::new(node.port));
    for key in [
        "",
        "a",
        "foo",
        "123456789",
        "{user1000}.following",
        "{}x",
        "x{}{y}",
        "{{a}}",
        "tag{",
        "\u{e9}t\u{e9}",
    ] {
        let args: [&[u8]; 3] = [b"CLUSTER", b"KEYSLOT", key.as_bytes()];
        assert_eq!(k.cmd(&args), n.cmd(&args), "{key:?}");
    }
}

/// redis-py's RedisCluster and ioredis's Cluster, unmodified, against a
/// static pool: every key lands where the pool's own placement puts it.
#[test]
fn cluster_clients_through_a_static_pool() {
    let (a, b, c) = (redis(), redis(), redis());
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends), &[]);
    run_python("redis_py_cluster.py", &[p.port.to_string()]);
    run_node("ioredis_cluster.js", &[p.port.to_string()]);
    // Where the cluster clients' keys are: where a plain client's would be.
    let plain = shardproxy(&pool(&backends), &[]);
    let mut k = Conn::new(plain.port);
    let mut spread = std::collections::BTreeSet::new();
    for i in 0..100 {
        let key = format!("rc:k{i}");
        let at = holder(&backends, &key).unwrap_or_else(|| panic!("{key} is nowhere"));
        assert_eq!(k.value(&[b"GET", key.as_bytes()]).text(), i.to_string());
        spread.insert(at);
    }
    let sizes: Vec<i64> = backends
        .iter()
        .map(|b| Conn::new(b.port).value(&[b"DBSIZE"]).int())
        .collect();
    assert_eq!(spread.len(), 3, "100 keys over 3 servers: {sizes:?}");
}

/// The `redis` crate's ClusterClient (sync), unmodified: discovery, keys of
/// every slot, a cluster pipeline, a hash-tagged multi-key command.
#[test]
fn redis_crate_cluster_client() {
    use redis::Commands;
    let (a, b) = (redis(), redis());
    let backends = [&a, &b];
    let p = shardproxy(&pool(&backends), &[]);
    let client = redis::cluster::ClusterClient::new(vec![format!("redis://127.0.0.1:{}/", p.port)])
        .unwrap_or_else(|e| panic!("cluster client: {e}"));
    let mut con = client
        .get_connection()
        .unwrap_or_else(|e| panic!("cluster connection: {e}"));
    for i in 0..100 {
        let ok: redis::RedisResult<()> = con.set(format!("rs:k{i}"), i);
        ok.unwrap_or_else(|e| panic!("SET rs:k{i}: {e}"));
    }
    for i in 0..100 {
        let v: redis::RedisResult<i64> = con.get(format!("rs:k{i}"));
        assert_eq!(v.ok(), Some(i), "rs:k{i}");
    }
    let mut pipe = redis::cluster::cluster_pipe();
    for i in 0..50 {
        pipe.get(format!("rs:k{i}"));
    }
    let got: redis::RedisResult<Vec<i64>> = pipe.query(&mut con);
    assert_eq!(got.ok(), Some((0..50).collect::<Vec<i64>>()));
    let ok: redis::RedisResult<()> = con.mset(&[("{rs}a", "1"), ("{rs}b", "2")]);
    ok.unwrap_or_else(|e| panic!("MSET: {e}"));
    let got: redis::RedisResult<Vec<String>> = con.mget(&["{rs}a", "{rs}b"]);
    assert_eq!(got.ok(), Some(vec!["1".to_string(), "2".to_string()]));
    // Where the keys are: where the pool places them (a plain GET through
    // the proxy finds each; they are on the backends, none missing).
    let mut k = Conn::new(p.port);
    let total: i64 = backends
        .iter()
        .map(|b| Conn::new(b.port).value(&[b"DBSIZE"]).int())
        .sum();
    assert_eq!(total, 102);
    assert_eq!(k.value(&[b"GET", b"rs:k42"]).text(), "42");
    for b in &backends {
        let n = Conn::new(b.port).value(&[b"DBSIZE"]).int();
        assert!(n > 10, "{n} keys on {}: the pool spreads them", b.port);
    }
}
