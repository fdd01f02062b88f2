//! Client sessions through a 3-server pool of real redis-servers:
//! transactions (`MULTI`/`EXEC`/`DISCARD`/`WATCH`), blocking commands and
//! `WAIT` on pinned connections; through raw RESP, redis-py and ioredis.

mod support;
use std::time::{Duration, Instant};
use support::{
    eventually, named_pool, redis, resp, run_node, run_python, shardproxy, Conn, Proc, Value,
};

/// A pool of named servers with `hash_tag: "{}"` and the given keys.
fn pool(backends: &[&Proc], extra: &str) -> impl Fn(u16) -> String {
    named_pool(backends, &format!("  hash_tag: \"{{}}\"\n{extra}"))
}

fn three() -> (Proc, Proc, Proc) {
    (redis(), redis(), redis())
}

/// Which backend holds `key` (by asking each).
fn holder(backends: &[&Proc], key: &[u8]) -> Option<usize> {
    backends
        .iter()
        .position(|b| Conn::new(b.port).value(&[b"EXISTS", key]).int() == 1)
}

/// Two keys that the pool puts on different servers.
fn two_servers(k: &mut Conn, backends: &[&Proc]) -> (String, String) {
    let mut first: Option<(String, usize)> = None;
    for i in 0..200 {
        let key = format!("x{i}");
        assert_eq!(k.cmd(&[b"SET", key.as_bytes(), b"1"]), b"+OK\r\n");
        let at = holder(backends, key.as_bytes());
        assert_eq!(k.cmd(&[b"DEL", key.as_bytes()]), b":1\r\n");
        match (&first, at) {
            (None, Some(at)) => first = Some((key, at)),
            (Some((f, fat)), Some(at)) if *fat != at => return (f.clone(), key),
            _ => {}
        }
    }
    panic!("no two keys on different servers")
}

/// Every key of every backend, with its value (strings only).
fn dump(backends: &[&Proc]) -> Vec<Vec<(Vec<u8>, Value)>> {
    backends
        .iter()
        .map(|b| {
            let mut c = Conn::new(b.port);
            let mut keys: Vec<Vec<u8>> = c
                .value(&[b"KEYS", b"*"])
                .items()
                .iter()
                .map(|k| match k {
                    Value::Bulk(b) => b.clone(),
                    other => panic!("{other:?}"),
                })
                .collect();
            keys.sort();
            keys.into_iter()
                .map(|k| {
                    let v = c.value(&[b"DUMP", &k]);
                    (k, v)
                })
                .collect()
        })
        .collect()
}

fn pinned(p: &Proc) -> i64 {
    support::pinned_connections(p)
}

#[test]
fn transactions_commit_on_the_server_of_their_keys() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends, "  timeout: 5000\n"), &[]);
    let mut k = Conn::new(p.port);
    // One write, as redis-py's pipeline(transaction=True) sends it; the
    // first queued command has no key.
    let mut wire = resp(&[b"SET", b"{u}n", b"5"]);
    for cmd in [
        &[&b"MULTI"[..]][..],
        &[b"PING"],
        &[b"INCR", b"{u}n"],
        &[b"SET", b"{u}s", b"x"],
        &[b"MGET", b"{u}n", b"{u}s"],
        &[b"EXEC"],
        &[b"GET", b"{u}n"],
    ] {
        wire.extend(resp(cmd));
    }
    k.send(&wire);
    assert_eq!(k.reply(), b"+OK\r\n");
    assert_eq!(k.reply(), b"+OK\r\n");
    for _ in 0..4 {
        assert_eq!(k.reply(), b"+QUEUED\r\n");
    }
    assert_eq!(
        k.reply(),
        b"*4\r\n+PONG\r\n:6\r\n+OK\r\n*2\r\n$1\r\n6\r\n$1\r\nx\r\n"
    );
    assert_eq!(k.reply(), b"$1\r\n6\r\n");
    let at = holder(&backends, b"{u}n");
    assert!(at.is_some());
    assert_eq!(holder(&backends, b"{u}s"), at);
    // Empty and keyless transactions run too.
    assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"EXEC"]), b"*0\r\n");
    assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"ECHO", b"hi"]), b"+QUEUED\r\n");
    assert_eq!(k.cmd(&[b"EXEC"]), b"*1\r\n$2\r\nhi\r\n");
    // DISCARD, and Redis's own errors.
    assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"SET", b"{u}d", b"1"]), b"+QUEUED\r\n");
    assert_eq!(
        k.cmd(&[b"MULTI"]),
        b"-ERR MULTI calls can not be nested\r\n"
    );
    assert_eq!(
        k.cmd(&[b"WATCH", b"{u}d"]),
        b"-ERR WATCH inside MULTI is not allowed\r\n"
    );
    assert_eq!(k.cmd(&[b"DISCARD"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"EXISTS", b"{u}d"]), b":0\r\n");
    assert_eq!(k.cmd(&[b"EXEC"]), b"-ERR EXEC without MULTI\r\n");
    assert_eq!(k.cmd(&[b"DISCARD"]), b"-ERR DISCARD without MULTI\r\n");
    // A runtime error inside is the server's, in EXEC's reply.
    assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"INCR", b"{u}s"]), b"+QUEUED\r\n");
    assert_eq!(k.cmd(&[b"INCR", b"{u}n"]), b"+QUEUED\r\n");
    let r = Value::parse(&k.cmd(&[b"EXEC"]));
    assert!(
        matches!(r.items(), [Value::Error(e), Value::Int(7)] if e.contains("not an integer")),
        "{r:?}"
    );
    assert_eq!(pinned(&p), 0, "MULTI without WATCH pins nothing");
}

#[test]
fn a_transaction_across_servers_aborts_and_writes_nothing() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends, "  timeout: 5000\n"), &[]);
    let mut k = Conn::new(p.port);
    let (x, y) = two_servers(&mut k, &backends);
    let before = dump(&backends);
    let mut wire = Vec::new();
    for cmd in [
        &[&b"MULTI"[..]][..],
        &[b"SET", x.as_bytes(), b"1"],
        &[b"SET", y.as_bytes(), b"1"],
        &[b"SET", x.as_bytes(), b"2"],
        &[b"EXEC"],
        &[b"EXISTS", x.as_bytes(), y.as_bytes()],
    ] {
        wire.extend(resp(cmd));
    }
    k.send(&wire);
    assert_eq!(k.reply(), b"+OK\r\n");
    assert_eq!(k.reply(), b"+QUEUED\r\n");
    assert!(k.reply().starts_with(b"-CROSSSLOT"));
    assert_eq!(k.reply(), b"+QUEUED\r\n");
    assert_eq!(
        k.reply(),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(k.reply(), b":0\r\n");
    assert_eq!(dump(&backends), before, "a server's data changed");
    // Unknown commands, wrong arity and commands that span every server
    // abort a transaction as well.
    for bad in [
        &[&b"NOSUCH"[..]][..],
        &[b"GET"],
        &[b"KEYS", b"*"],
        &[b"SUBSCRIBE", b"ch"],
        &[b"SELECT", b"3"],
    ] {
        assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
        assert_eq!(k.cmd(&[b"SET", x.as_bytes(), b"1"]), b"+QUEUED\r\n");
        let r = k.cmd(bad);
        assert!(r.starts_with(b"-"), "{bad:?}: {r:?}");
        assert!(k.cmd(&[b"EXEC"]).starts_with(b"-EXECABORT"), "{bad:?}");
    }
    assert_eq!(dump(&backends), before, "a server's data changed");
    // redis-py raises, and writes nothing.
    let port = p.port.to_string();
    run_python("redis_py_txn.py", &[port, "abort".into(), x, y]);
    assert_eq!(dump(&backends), before, "a server's data changed");
}

#[test]
fn watch_pins_a_connection_and_detects_conflicts() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends, "  timeout: 5000\n"), &[]);
    let mut k = Conn::new(p.port);
    let mut other = Conn::new(p.port);
    assert_eq!(k.cmd(&[b"SET", b"{w}k", b"1"]), b"+OK\r\n");
    // A conflict: another client writes between WATCH and EXEC.
    assert_eq!(k.cmd(&[b"WATCH", b"{w}k"]), b"+OK\r\n");
    assert_eq!(pinned(&p), 1);
    assert_eq!(k.cmd(&[b"GET", b"{w}k"]), b"$1\r\n1\r\n");
    assert_eq!(other.cmd(&[b"SET", b"{w}k", b"2"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"SET", b"{w}k", b"3"]), b"+QUEUED\r\n");
    assert_eq!(k.cmd(&[b"EXEC"]), b"*-1\r\n");
    assert_eq!(k.cmd(&[b"GET", b"{w}k"]), b"$1\r\n2\r\n");
    eventually("the pin ends after EXEC", || pinned(&p) == 0);
    // No conflict: it commits.
    assert_eq!(k.cmd(&[b"WATCH", b"{w}k"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"INCR", b"{w}k"]), b"+QUEUED\r\n");
    assert_eq!(k.cmd(&[b"EXEC"]), b"*1\r\n:3\r\n");
    // UNWATCH and DISCARD end the pin; a key of another server is refused
    // while watching.
    assert_eq!(k.cmd(&[b"WATCH", b"{w}k"]), b"+OK\r\n");
    let (x, _) = two_servers(&mut other, &backends);
    let k_at = holder(&backends, b"{w}k");
    assert_eq!(
        k.cmd(&[b"SET", x.as_bytes(), b"v"]),
        b"+OK\r\n",
        "other servers are reachable while watching"
    );
    let x_at = holder(&backends, x.as_bytes());
    assert_eq!(k.cmd(&[b"UNWATCH"]), b"+OK\r\n");
    eventually("UNWATCH ends the pin", || pinned(&p) == 0);
    assert_eq!(k.cmd(&[b"WATCH", b"{w}k"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
    let r = k.cmd(&[b"SET", x.as_bytes(), b"w"]);
    if x_at != k_at {
        assert!(r.starts_with(b"-CROSSSLOT"), "{r:?}");
        assert!(k.cmd(&[b"EXEC"]).starts_with(b"-EXECABORT"));
    } else {
        assert_eq!(k.cmd(&[b"DISCARD"]), b"+OK\r\n");
    }
    eventually("the pin ends", || pinned(&p) == 0);
    assert_eq!(k.cmd(&[b"GET", x.as_bytes()]), b"$1\r\nv\r\n");
    // A client that leaves while watching: its connection is closed, not
    // reused.
    let mut gone = Conn::new(p.port);
    assert_eq!(gone.cmd(&[b"WATCH", b"{w}k"]), b"+OK\r\n");
    assert_eq!(pinned(&p), 1);
    drop(gone);
    eventually("a departed client's pin ends", || pinned(&p) == 0);
    // redis-py's transaction() helper retries on a conflict; ioredis's
    // watch/multi/exec.
    let port = p.port.to_string();
    run_python("redis_py_txn.py", &[port.clone(), "watch".into()]);
    run_node("ioredis_session.js", &[port]);
}

#[test]
fn a_transaction_sees_the_clients_earlier_writes() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends, "  timeout: 5000\n"), &[]);
    let mut k = Conn::new(p.port);
    // 40 KB of writes ahead of the key's: the server reads a shared
    // connection 16 KB at a time, so a WATCH sent on another connection
    // without waiting would run among them.
    let filler = vec![b'f'; 200];
    for round in 0..20 {
        let v = round.to_string();
        let mut wire = Vec::new();
        for i in 0..200 {
            wire.extend(resp(&[b"SET", format!("{{o}}f{i}").as_bytes(), &filler]));
        }
        wire.extend(resp(&[b"SET", b"{o}k", v.as_bytes()]));
        wire.extend(resp(&[b"WATCH", b"{o}k"]));
        wire.extend(resp(&[b"GET", b"{o}k"]));
        wire.extend(resp(&[b"MULTI"]));
        wire.extend(resp(&[b"GET", b"{o}k"]));
        wire.extend(resp(&[b"EXEC"]));
        k.send(&wire);
        for _ in 0..200 {
            assert_eq!(k.reply(), b"+OK\r\n");
        }
        assert_eq!(k.reply(), b"+OK\r\n");
        assert_eq!(k.reply(), b"+OK\r\n");
        let want = format!("${}\r\n{v}\r\n", v.len());
        assert_eq!(k.reply(), want.as_bytes(), "GET after WATCH, round {round}");
        assert_eq!(k.reply(), b"+OK\r\n");
        assert_eq!(k.reply(), b"+QUEUED\r\n");
        assert_eq!(
            k.reply(),
            format!("*1\r\n{want}").as_bytes(),
            "round {round}"
        );
    }
}

#[test]
fn blocking_commands_wait_their_own_time_on_a_pinned_connection() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    // The pool's timeout (400 ms) is shorter than the command's (2 s).
    let p = shardproxy(&pool(&backends, "  timeout: 400\n"), &[]);
    let mut k = Conn::new(p.port);
    let start = Instant::now();
    assert_eq!(k.cmd(&[b"BLPOP", b"{q}empty", b"2"]), b"*-1\r\n");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    // BLPOP 0 is woken by a push from another client; meanwhile the shared
    // path serves everyone else.
    let mut pusher = Conn::new(p.port);
    assert_eq!(pusher.cmd(&[b"SET", b"{q}x", b"1"]), b"+OK\r\n");
    k.send(&resp(&[b"BLPOP", b"{q}list", b"0"]));
    eventually("the BLPOP is pinned", || pinned(&p) == 1);
    for _ in 0..20 {
        assert_eq!(pusher.cmd(&[b"GET", b"{q}x"]), b"$1\r\n1\r\n");
    }
    assert!(
        k.silent_for(Duration::from_millis(600)),
        "BLPOP 0 timed out"
    );
    assert_eq!(pusher.cmd(&[b"RPUSH", b"{q}list", b"job"]), b":1\r\n");
    assert_eq!(k.reply(), b"*2\r\n$7\r\n{q}list\r\n$3\r\njob\r\n");
    eventually("the pin ends with the reply", || pinned(&p) == 0);
    // What follows a blocking command in the same write runs after it.
    let mut wire = resp(&[b"BLPOP", b"{q}l2", b"1"]);
    wire.extend(resp(&[b"RPUSH", b"{q}l2", b"a"]));
    wire.extend(resp(&[b"LLEN", b"{q}l2"]));
    k.send(&wire);
    assert_eq!(k.reply(), b"*-1\r\n");
    assert_eq!(k.reply(), b":1\r\n");
    assert_eq!(k.reply(), b":1\r\n");
    // A blocking command whose keys span servers is refused.
    let (x, y) = two_servers(&mut pusher, &backends);
    let r = k.cmd(&[
        b"BLMOVE",
        x.as_bytes(),
        y.as_bytes(),
        b"LEFT",
        b"LEFT",
        b"0",
    ]);
    assert!(r.starts_with(b"-CROSSSLOT"), "{r:?}");
    // XREADGROUP BLOCK 0 woken by XADD.
    assert!(pusher
        .cmd(&[b"XGROUP", b"CREATE", b"{q}s", b"g", b"$", b"MKSTREAM"])
        .starts_with(b"+OK"));
    k.send(&resp(&[
        b"XREADGROUP",
        b"GROUP",
        b"g",
        b"c1",
        b"BLOCK",
        b"0",
        b"STREAMS",
        b"{q}s",
        b">",
    ]));
    assert!(k.silent_for(Duration::from_millis(500)));
    let id = Value::parse(&pusher.cmd(&[b"XADD", b"{q}s", b"*", b"f", b"v"])).text();
    let r = Value::parse(&k.reply());
    assert_eq!(
        r.items()[0].items()[0],
        Value::Bulk(b"{q}s".to_vec()),
        "{r:?}"
    );
    assert_eq!(r.items()[0].items()[1].items()[0].items()[0].text(), id);
}

#[test]
fn a_client_that_leaves_while_blocked_gets_nothing_popped() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends, "  timeout: 400\n"), &[]);
    let mut k = Conn::new(p.port);
    assert_eq!(k.cmd(&[b"SET", b"{g}probe", b"1"]), b"+OK\r\n");
    let Some(at) = holder(&backends, b"{g}probe") else {
        panic!("no server holds the key")
    };
    let mut server = Conn::new(backends[at].port);
    k.send(&resp(&[b"BLPOP", b"{g}q", b"0"]));
    let blocked = |server: &mut Conn| {
        let list = server.value(&[b"CLIENT", b"LIST"]).text();
        list.lines().filter(|l| l.contains("cmd=blpop")).count()
    };
    eventually("the server has the blocked client", || {
        blocked(&mut server) == 1
    });
    drop(k);
    eventually("the proxy closed the blocked connection", || {
        blocked(&mut server) == 0
    });
    let mut other = Conn::new(p.port);
    assert_eq!(other.cmd(&[b"RPUSH", b"{g}q", b"precious"]), b":1\r\n");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        other.cmd(&[b"LLEN", b"{g}q"]),
        b":1\r\n",
        "the element went to a departed client"
    );
    eventually("no pin left", || pinned(&p) == 0);
}

#[test]
fn session_connections_bound_the_pins() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    let p = shardproxy(
        &pool(&backends, "  timeout: 5000\n  session_connections: 1\n"),
        &["--threads", "1"],
    );
    let mut first = Conn::new(p.port);
    first.send(&resp(&[b"BLPOP", b"{b}q", b"0"]));
    eventually("the first client is blocked", || pinned(&p) == 1);
    let mut second = Conn::new(p.port);
    let r = Value::parse(&second.cmd(&[b"BLPOP", b"{b}q2", b"0"]));
    assert!(
        matches!(&r, Value::Error(e) if e.contains("session_connections (1)")),
        "{r:?}"
    );
    let r = Value::parse(&second.cmd(&[b"WATCH", b"{b}k"]));
    assert!(
        matches!(&r, Value::Error(e) if e.contains("too many sessions")),
        "{r:?}"
    );
    // A failed WATCH never lets the transaction run unguarded.
    assert_eq!(second.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(second.cmd(&[b"SET", b"{b}k", b"1"]), b"+QUEUED\r\n");
    assert!(second.cmd(&[b"EXEC"]).starts_with(b"-EXECABORT"));
    assert_eq!(second.cmd(&[b"EXISTS", b"{b}k"]), b":0\r\n");
    // The shared path is unaffected.
    assert_eq!(second.cmd(&[b"SET", b"{b}k", b"1"]), b"+OK\r\n");
    assert_eq!(second.cmd(&[b"RPUSH", b"{b}q", b"x"]), b":1\r\n");
    assert_eq!(first.reply(), b"*2\r\n$4\r\n{b}q\r\n$1\r\nx\r\n");
    eventually("the pin is free again", || pinned(&p) == 0);
    assert_eq!(second.cmd(&[b"BLPOP", b"{b}q", b"0.01"]), b"*-1\r\n");
}

#[test]
fn wait_asks_every_server_and_answers_the_smallest_count() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    // Server a has a replica; the others have none.
    let replica = support::redis_with(&["--replicaof", "127.0.0.1", &a.port.to_string()]);
    let mut direct = Conn::new(a.port);
    eventually("the replica is in sync", || {
        let info = direct.value(&[b"INFO", b"replication"]).text();
        info.contains("connected_slaves:1") && info.contains("state=online")
    });
    let p = shardproxy(&pool(&backends, "  timeout: 5000\n"), &[]);
    let mut k = Conn::new(p.port);
    assert_eq!(k.cmd(&[b"SET", b"{z}k", b"1"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"WAIT", b"0", b"0"]), b":0\r\n");
    let start = Instant::now();
    assert_eq!(
        k.cmd(&[b"WAIT", b"1", b"300"]),
        b":0\r\n",
        "two servers have no replica"
    );
    assert!(start.elapsed() >= Duration::from_millis(250));
    eventually("no pin left", || pinned(&p) == 0);
    // A pool of server a alone: WAIT counts the replica once it has the
    // client's writes, whichever connection carried them.
    let one = shardproxy(&pool(&[&a], "  timeout: 5000\n"), &[]);
    let mut k = Conn::new(one.port);
    assert_eq!(k.cmd(&[b"SET", b"w1", b"1"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"WAIT", b"1", b"5000"]), b":1\r\n");
    // A stopped replica acknowledges nothing: the next write is not
    // replicated, and WAIT says so after its timeout.
    replica.signal(libc::SIGSTOP);
    assert_eq!(k.cmd(&[b"SET", b"w2", b"1"]), b"+OK\r\n");
    let start = Instant::now();
    assert_eq!(
        k.cmd(&[b"WAIT", b"1", b"400"]),
        b":0\r\n",
        "WAIT did not wait for the write"
    );
    assert!(start.elapsed() >= Duration::from_millis(350));
    replica.signal(libc::SIGCONT);
    assert_eq!(k.cmd(&[b"WAIT", b"1", b"5000"]), b":1\r\n");
    // Inside a transaction WAIT is refused, like other commands of every
    // server.
    assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert!(k.cmd(&[b"WAIT", b"1", b"0"]).starts_with(b"-ERR"));
    assert!(k.cmd(&[b"EXEC"]).starts_with(b"-EXECABORT"));
}

/// A job queue that supports Redis Cluster runs unmodified when its keys
/// share a hash tag: BullMQ (Lua scripts over a dozen keys, blocking
/// BZPOPMIN and XREAD BLOCK, MULTI pipelines) with 1,000 jobs and two
/// workers; every job is processed exactly once.
#[test]
fn bullmq_processes_every_job_once() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends, "  timeout: 5000\n"), &[]);
    run_node("bullmq_jobs.js", &[p.port.to_string()]);
}

/// Pinned connections start like every other: AUTH, then SELECT of the
/// pool's db (and HELLO 3 for RESP3 clients).
#[test]
fn pinned_connections_carry_the_pools_auth_and_db() {
    let a = support::redis_with(&["--requirepass", "s3cret"]);
    let p = shardproxy(
        &pool(
            &[&a],
            "  timeout: 5000\n  redis_auth: s3cret\n  redis_db: 3\n",
        ),
        &[],
    );
    let mut k = Conn::new(p.port);
    assert_eq!(k.cmd(&[b"AUTH", b"s3cret"]), b"+OK\r\n");
    let mut other = Conn::new(p.port);
    assert_eq!(other.cmd(&[b"AUTH", b"s3cret"]), b"+OK\r\n");
    // WATCH (pinned) and a transaction.
    assert_eq!(k.cmd(&[b"WATCH", b"w"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"SET", b"w", b"1"]), b"+QUEUED\r\n");
    assert_eq!(k.cmd(&[b"EXEC"]), b"*1\r\n+OK\r\n");
    // A blocking pop (pinned), woken by another client.
    assert_eq!(other.cmd(&[b"RPUSH", b"q", b"x"]), b":1\r\n");
    assert_eq!(
        k.cmd(&[b"BLPOP", b"q", b"0"]),
        b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n"
    );
    // A subscription (pinned).
    assert_eq!(
        k.cmd(&[b"SUBSCRIBE", b"ch"]),
        b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    );
    assert_eq!(other.cmd(&[b"PUBLISH", b"ch", b"m"]), b":1\r\n");
    assert_eq!(k.reply(), b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nm\r\n");
    // Everything in db 3 of the server.
    let mut d = Conn::new(a.port);
    assert_eq!(d.cmd(&[b"AUTH", b"s3cret"]), b"+OK\r\n");
    assert_eq!(d.cmd(&[b"SELECT", b"3"]), b"+OK\r\n");
    assert_eq!(d.cmd(&[b"GET", b"w"]), b"$1\r\n1\r\n");
    assert_eq!(d.cmd(&[b"SELECT", b"0"]), b"+OK\r\n");
    assert_eq!(d.cmd(&[b"EXISTS", b"w"]), b":0\r\n");
}
