//! Current client libraries through the proxy: the `redis` crate (which sends
//! `CLIENT SETINFO` on connect: no `set_skip_set_lib_name`), the `memcache`
//! crate, redis-py and pymemcache (current releases from PyPI, installed by
//! `scripts/test` into `target/pyenv`).

mod support;
use support::{memcached, redis, run_node, run_python, shardproxy, Proc};

fn redis_pool(backends: &[&Proc], extra: &str) -> impl Fn(u16) -> String {
    let s = support::servers(backends);
    let extra = extra.to_string();
    move |port| {
        format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: murmur\n  timeout: 5000\n{extra}  servers:\n{s}")
    }
}

fn memcache_pool(backends: &[&Proc]) -> impl Fn(u16) -> String {
    let s = support::servers(backends);
    move |port| {
        format!(
            "beta:\n  listen: 127.0.0.1:{port}\n  hash: murmur\n  timeout: 5000\n  servers:\n{s}"
        )
    }
}

/// Streams with consumer groups, Lua scripts, EXPIRE NX, SCAN, INFO and
/// hash-tagged multi-key commands, unmodified, through 3 servers.
#[test]
fn redis_py_and_ioredis_application_mix() {
    let (a, b, c) = (redis(), redis(), redis());
    let p = shardproxy(&redis_pool(&[&a, &b, &c], "  hash_tag: \"{}\"\n"), &[]);
    for proto in ["2", "3"] {
        run_python("redis_py_mix.py", &[p.port.to_string(), proto.to_string()]);
        // Each run starts from empty servers.
        let mut k = support::Conn::new(p.port);
        assert_eq!(k.cmd(&[b"FLUSHALL"]), b"+OK\r\n");
    }
    run_node("ioredis_mix.js", &[p.port.to_string()]);
}

/// node-redis (the `redis` package): a plain client, then its cluster
/// client, which the proxy answers as one node holding every slot.
#[test]
fn node_redis_current_release() {
    let (a, b, c) = (redis(), redis(), redis());
    let p = shardproxy(&redis_pool(&[&a, &b, &c], "  hash_tag: \"{}\"\n"), &[]);
    support::run_node_with(
        "node_redis.js",
        &[p.port.to_string(), "cluster".into()],
        "redis",
    );
    // Its keys are where the pool places them: a plain GET through the
    // proxy finds each, and they are spread over the servers.
    let mut k = support::Conn::new(p.port);
    for i in [0, 42, 99] {
        let key = format!("nr:c{i}");
        assert_eq!(k.value(&[b"GET", key.as_bytes()]).text(), i.to_string());
    }
    for s in [&a, &b, &c] {
        let n = support::Conn::new(s.port).value(&[b"DBSIZE"]).int();
        assert!(n > 20, "{n} keys on {}", s.port);
    }
}

#[test]
fn redis_py_current_release() {
    let (a, b, c) = (redis(), redis(), redis());
    for threads in ["1", "2"] {
        let p = shardproxy(&redis_pool(&[&a, &b, &c], ""), &["--threads", threads]);
        run_python("redis_py.py", &[p.port.to_string()]);
    }
    // With a password and a db: redis-py sends AUTH, then SELECT.
    let p = shardproxy(
        &redis_pool(&[&a, &b, &c], "  redis_auth: sekret\n  redis_db: 3\n"),
        &[],
    );
    run_python(
        "redis_py.py",
        &[p.port.to_string(), "sekret".into(), "3".into()],
    );
}

#[test]
fn pymemcache_current_release() {
    let (a, b, c) = (memcached(), memcached(), memcached());
    for threads in ["1", "2"] {
        let p = shardproxy(&memcache_pool(&[&a, &b, &c]), &["--threads", threads]);
        run_python("pymemcache_client.py", &[p.port.to_string()]);
    }
}

#[test]
fn redis_crate_without_skipping_lib_name() {
    use redis::Commands;
    let (a, b, c) = (redis(), redis(), redis());
    let p = shardproxy(
        &redis_pool(&[&a, &b, &c], "  redis_auth: sekret\n  redis_db: 2\n"),
        &["--threads", "2"],
    );
    let client = redis::Client::open(format!("redis://:sekret@127.0.0.1:{}/2", p.port))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut con = client
        .get_connection()
        .unwrap_or_else(|e| panic!("connect (CLIENT SETINFO, AUTH, SELECT): {e}"));
    let ok: redis::RedisResult<()> = con.set("rs:a", 1);
    assert!(ok.is_ok(), "{ok:?}");
    let _: () = con
        .mset(&[("rs:b", 2), ("rs:c", 3), ("rs:d", 4)])
        .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<Option<i64>> = con
        .mget(&["rs:a", "rs:b", "rs:nosuch", "rs:c", "rs:d"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, vec![Some(1), Some(2), None, Some(3), Some(4)]);
    let n: i64 = con.incr("rs:a", 41).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 42);
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.set(format!("rs:p{i}"), i)
            .ignore()
            .get(format!("rs:p{i}"));
    }
    let vals: Vec<i64> = pipe.query(&mut con).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vals, (0..100).collect::<Vec<i64>>());
    let err: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "1"])
        .query(&mut con);
    assert!(err.is_err());
    let deleted: i64 = con
        .del(&["rs:a", "rs:b", "rs:c", "rs:d", "rs:nosuch"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(deleted, 4);
    // The keys really are in db 2 of the backends.
    let in_db2: usize = [&a, &b, &c]
        .iter()
        .map(|r| {
            let mut k = support::Conn::new(r.port);
            assert_eq!(k.cmd(&[b"SELECT", b"2"]), b"+OK\r\n");
            k.cmd(&[b"DBSIZE"])
                .strip_prefix(b":")
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.trim().parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(in_db2, 100);
}

#[test]
fn memcache_crate_ascii() {
    let (a, b) = (memcached(), memcached());
    let p = shardproxy(&memcache_pool(&[&a, &b]), &[]);
    let c = memcache::Client::connect(format!("memcache://127.0.0.1:{}?protocol=ascii", p.port))
        .unwrap_or_else(|e| panic!("{e}"));
    c.set("mc:a", "1", 0).unwrap_or_else(|e| panic!("{e}"));
    c.set("mc:b", "two", 0).unwrap_or_else(|e| panic!("{e}"));
    let a: Option<String> = c.get("mc:a").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.as_deref(), Some("1"));
    let many: std::collections::HashMap<String, String> = c
        .gets(&["mc:a", "mc:b", "mc:nosuch"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(many.len(), 2);
    assert_eq!(many.get("mc:b").map(String::as_str), Some("two"));
    // The crate reports NOT_STORED as Ok: check the value did not change.
    c.add("mc:a", "x", 0).unwrap_or_else(|e| panic!("{e}"));
    let a: Option<String> = c.get("mc:a").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.as_deref(), Some("1"));
    c.replace("mc:a", "5", 0).unwrap_or_else(|e| panic!("{e}"));
    c.append("mc:b", "!").unwrap_or_else(|e| panic!("{e}"));
    c.prepend("mc:b", "<").unwrap_or_else(|e| panic!("{e}"));
    let b: Option<String> = c.get("mc:b").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.as_deref(), Some("<two!"));
    assert_eq!(
        c.increment("mc:a", 10).unwrap_or_else(|e| panic!("{e}")),
        15
    );
    assert_eq!(c.decrement("mc:a", 3).unwrap_or_else(|e| panic!("{e}")), 12);
    assert!(c.touch("mc:a", 100).unwrap_or_else(|e| panic!("{e}")));
    assert!(c.delete("mc:a").unwrap_or_else(|e| panic!("{e}")));
    assert!(!c.delete("mc:a").unwrap_or_else(|e| panic!("{e}")));
    let v = c.version().unwrap_or_else(|e| panic!("{e}"));
    assert!(v.iter().all(|(_, v)| v.starts_with("shardproxy-")), "{v:?}");
}

/// The `redis` crate running the same kind of application mix: streams with
/// a consumer group, a Lua script by sha on keys of every server, EXPIRE NX,
/// SCAN iteration, INFO, and hash-tagged multi-key commands.
#[test]
fn redis_crate_application_mix() {
    use redis::Commands;
    let (a, b, c) = (redis(), redis(), redis());
    let p = shardproxy(&redis_pool(&[&a, &b, &c], "  hash_tag: \"{}\"\n"), &[]);
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", p.port))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut con = client.get_connection().unwrap_or_else(|e| panic!("{e}"));
    let q = |cmd: &mut redis::Cmd, con: &mut redis::Connection| -> redis::Value {
        cmd.query(con).unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    };
    for s in 0..10 {
        let key = format!("rs:stream:{s}");
        for i in 1..=3 {
            let id: String = redis::cmd("XADD")
                .arg(&key)
                .arg(format!("1-{i}"))
                .arg(&["job", "x"])
                .query(&mut con)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(id, format!("1-{i}"));
        }
        q(
            redis::cmd("XGROUP").arg(&["CREATE", &key, "g", "0"]),
            &mut con,
        );
        let got = q(
            redis::cmd("XREADGROUP").arg(&["GROUP", "g", "c", "STREAMS", &key, ">"]),
            &mut con,
        );
        assert!(format!("{got:?}").contains("1-3"), "{got:?}");
        let acked: i64 = redis::cmd("XACK")
            .arg(&[&key, "g", "1-1", "1-2", "1-3"])
            .query(&mut con)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(acked, 3);
    }
    let sha: String = redis::cmd("SCRIPT")
        .arg(&["LOAD", "return redis.call('INCR', KEYS[1])"])
        .query(&mut con)
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..30 {
        let n: i64 = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(format!("rs:n:{i}"))
            .query(&mut con)
            .unwrap_or_else(|e| panic!("EVALSHA on key {i}: {e}"));
        assert_eq!(n, 1);
    }
    let _: () = con.set("rs:ttl", 1).unwrap_or_else(|e| panic!("{e}"));
    let set: i64 = redis::cmd("EXPIRE")
        .arg(&["rs:ttl", "100", "NX"])
        .query(&mut con)
        .unwrap_or_else(|e| panic!("{e}"));
    let again: i64 = redis::cmd("EXPIRE")
        .arg(&["rs:ttl", "100", "NX"])
        .query(&mut con)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((set, again), (1, 0));
    let keys: Vec<(String, i64)> = (0..400).map(|i| (format!("rs:scan:{i}"), i)).collect();
    let _: () = con.mset(&keys).unwrap_or_else(|e| panic!("{e}"));
    let mut seen: Vec<String> = con
        .scan_match::<_, String>("rs:scan:*")
        .unwrap_or_else(|e| panic!("{e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 400);
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut con)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(info.contains("proxy:shardproxy-"), "{info}");
    let _: () = con
        .rpush("{rq}:a", &["x", "y"])
        .unwrap_or_else(|e| panic!("{e}"));
    let moved: String = redis::cmd("LMOVE")
        .arg(&["{rq}:a", "{rq}:b", "LEFT", "RIGHT"])
        .query(&mut con)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(moved, "x");
    let crossed = (0..20)
        .filter(|i| {
            let r: redis::RedisResult<()> =
                con.rename(format!("rs:scan:{i}"), format!("rs:moved:{i}"));
            // The crate recognises Redis Cluster's error code.
            r.is_err_and(|e| e.code() == Some("CROSSSLOT"))
        })
        .count();
    assert!(crossed > 0);
}
