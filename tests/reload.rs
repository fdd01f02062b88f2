//! Configuration reload (SIGUSR1) against real redis-servers, under load:
//! a changed pool moves to its new servers with no error and no dropped
//! client; a pool moves to a new port, pools come and go, their old
//! listeners' clients drain; an invalid file (or one whose listener cannot
//! be bound) changes nothing; the same file changes nothing; many reloads
//! leak nothing.

mod support;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{eventually, redis, resp, shardproxy, Conn, Proc};

/// The pool `alpha` over named servers `(port, name)`, plus `extra` keys.
fn yaml(port: u16, servers: &[(u16, &str)], extra: &str) -> String {
    let s: String = servers
        .iter()
        .map(|(p, n)| format!("   - 127.0.0.1:{p}:1 {n}\n"))
        .collect();
    format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: murmur\n  timeout: 5000\n{extra}  servers:\n{s}")
}

fn rewrite(p: &Proc, text: &str) {
    std::fs::write(p.dir.path().join("proxy.yml"), text).unwrap_or_else(|e| panic!("{e}"));
}

/// `shardproxy_config_reloads_total{result=…}`.
fn reloads(p: &Proc, result: &str) -> i64 {
    let (_, body) = p.http_get("/metrics");
    let want = format!("shardproxy_config_reloads_total{{result=\"{result}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(want.as_str())?.trim().parse().ok())
        .unwrap_or(-1)
}

/// Sends SIGUSR1 and waits until the reload is counted with `result`.
fn reload(p: &Proc, result: &str) {
    let before = reloads(p, result);
    p.signal(libc::SIGUSR1);
    eventually("the reload is counted", || reloads(p, result) == before + 1);
}

/// What a load client saw.
#[derive(Debug, Default)]
struct Seen {
    requests: u64,
    errors: Vec<String>,
}

/// A client on one connection until `stop`: `SET`/`GET` pairs, `depth` per
/// write; every reply is checked to be no error, and the connection must
/// never close.
fn load(
    port: u16,
    id: usize,
    depth: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        let mut c = Conn::new(port);
        let mut n = 0u64;
        let end = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let mut wire = Vec::new();
            for _ in 0..depth {
                let k = format!("load:{id}:{}", n % 500);
                wire.extend(resp(&[b"SET", k.as_bytes(), b"v"]));
                wire.extend(resp(&[b"GET", k.as_bytes()]));
                n += 1;
            }
            c.send(&wire);
            for _ in 0..2 * depth {
                let r = c.reply();
                seen.requests += 1;
                if r.first() == Some(&b'-') {
                    seen.errors.push(String::from_utf8_lossy(&r).into_owned());
                }
            }
        }
        seen
    })
}

fn run_under_load(port: u16, during: impl FnOnce()) -> Vec<Seen> {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [1usize, 1, 16, 16]
        .iter()
        .enumerate()
        .map(|(i, &depth)| load(port, i, depth, stop.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    during();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    clients
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| panic!("a load client panicked"))
        })
        .collect()
}

/// Connections a redis-server has from others than the asking one.
fn connected(b: &Proc) -> i64 {
    let info = Conn::new(b.port).value(&[b"INFO", b"clients"]).text();
    info.lines()
        .find_map(|l| {
            l.strip_prefix("connected_clients:")?
                .trim()
                .parse::<i64>()
                .ok()
        })
        .map_or(-1, |n| n - 1)
}

#[test]
fn a_changed_pool_moves_to_its_new_servers_without_an_error() {
    let (a, b, c) = (redis(), redis(), redis());
    let two = [(a.port, "s0"), (b.port, "s1")];
    let three = [(a.port, "s0"), (b.port, "s1"), (c.port, "s2")];
    let p = shardproxy(&|port| yaml(port, &two, ""), &[]);
    let port = p.port;
    // Add a server under load: no error, no connection lost.
    let seen = run_under_load(port, || {
        rewrite(&p, &yaml(port, &three, ""));
        reload(&p, "ok");
    });
    for s in &seen {
        assert!(s.requests > 0 && s.errors.is_empty(), "{s:?}");
    }
    println!(
        "{} requests by 4 clients across the reload, no error",
        seen.iter().map(|s| s.requests).sum::<u64>()
    );
    assert!(
        p.log()
            .contains("reloaded: pool 'alpha' (2 → 3 servers) changed"),
        "{}",
        p.log()
    );
    // New keys reach the new server; the stats follow the new pool, and
    // s0's counters go on.
    let mut k = Conn::new(port);
    for i in 0..300 {
        let key = format!("new:{i}");
        assert_eq!(k.cmd(&[b"SET", key.as_bytes(), b"1"]), b"+OK\r\n");
    }
    let on_c = Conn::new(c.port).value(&[b"DBSIZE"]).int();
    assert!(on_c > 30, "{on_c} of 300 keys on the added server");
    let stats = p.stats();
    assert!(stats.contains("\"s2\": {"), "{stats}");
    // Remove it again: its connections close once drained.
    let seen = run_under_load(port, || {
        rewrite(&p, &yaml(port, &two, ""));
        reload(&p, "ok");
    });
    for s in &seen {
        assert!(s.errors.is_empty(), "{s:?}");
    }
    eventually("the removed server's connections close", || {
        connected(&c) == 0
    });
    assert!(!p.stats().contains("\"s2\""));
    // A changed setting (timeout) is a new version too; clients stay.
    let seen = run_under_load(port, || {
        rewrite(&p, &yaml(port, &two, "  server_connections: 2\n"));
        reload(&p, "ok");
    });
    for s in &seen {
        assert!(s.errors.is_empty(), "{s:?}");
    }
}

/// A proxy over two servers, and a client that set `k`.
struct Started {
    a: Proc,
    b: Proc,
    two: [(u16, &'static str); 2],
    p: Proc,
    k: Conn,
}

fn started() -> Started {
    let (a, b) = (redis(), redis());
    let two = [(a.port, "s0"), (b.port, "s1")];
    let p = shardproxy(&|port| yaml(port, &two, ""), &[]);
    let mut k = Conn::new(p.port);
    assert_eq!(k.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    Started { a, b, two, p, k }
}

#[test]
fn an_invalid_file_or_a_listener_that_cannot_be_bound_changes_nothing() {
    // The servers live as long as the test.
    let Started {
        a: _a,
        b: _b,
        two,
        p,
        mut k,
    } = started();
    let port = p.port;
    // A port that is taken: binding the new listener fails.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let busy = taken.local_addr().map(|a| a.port()).unwrap_or(0);
    let cases = [
        ("alpha:\n  listen: [oops\n".to_string(), "not reloaded"),
        (yaml(port, &two, "  backlog: many\n"), "backlog"),
        (yaml(busy, &two, ""), "bind to"),
        (
            yaml(port, &two, "") + &yaml(busy, &two, "").replace("alpha:", "beta:"),
            "pool 'beta': bind to",
        ),
    ];
    for (i, (text, why)) in cases.iter().enumerate() {
        rewrite(&p, text);
        let seen = run_under_load(port, || reload(&p, "error"));
        for s in &seen {
            assert!(s.errors.is_empty(), "{s:?}");
        }
        assert_eq!(reloads(&p, "error"), i as i64 + 1);
        assert!(p.log().contains(why), "{why}: {}", p.log());
        assert_eq!(k.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    }
    assert_eq!(reloads(&p, "ok"), 0);
    assert!(p.log().contains("not reloaded, nothing changed"));
}

#[test]
fn the_same_file_changes_nothing_and_a_hundred_reloads_leak_nothing() {
    let Started {
        a,
        b,
        two,
        p,
        mut k,
    } = started();
    let port = p.port;
    let backend_conns = (connected(&a), connected(&b));
    reload(&p, "ok");
    assert!(p.log().contains("no pool changed"));
    assert_eq!(
        (connected(&a), connected(&b)),
        backend_conns,
        "connections were replaced"
    );
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let rss = || {
        std::fs::read_to_string(format!("/proc/{}/status", p.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .trim_end_matches(" kB")
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    let (fd0, rss0) = (fds(), rss());
    for i in 0..100 {
        let extra = if i % 2 == 0 {
            "  server_connections: 2\n"
        } else {
            ""
        };
        rewrite(&p, &yaml(port, &two, extra));
        reload(&p, "ok");
        assert_eq!(k.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    }
    eventually("old connections close", || fds() <= fd0 + 4);
    let grown = rss().saturating_sub(rss0);
    println!(
        "100 reloads: {} fds before, {} after; RSS +{grown} kB",
        fd0,
        fds()
    );
    assert!(grown < 20_000, "RSS grew by {grown} kB over 100 reloads");
    // The config's hash and load time are exported.
    let (_, body) = p.http_get("/metrics");
    assert!(body.contains("shardproxy_config_info{hash=\""), "{body}");
    assert!(body.contains("shardproxy_config_loaded_timestamp_seconds "));
}

/// `--watch-config`: a changed file is reloaded without a signal, whether it
/// is written in place or renamed over; a half-written (invalid) one changes
/// nothing until the next write.
#[test]
fn watch_config_reloads_a_changed_file() {
    let (a, b, c) = (redis(), redis(), redis());
    let two = [(a.port, "s0"), (b.port, "s1")];
    let three = [(a.port, "s0"), (b.port, "s1"), (c.port, "s2")];
    let p = shardproxy(&|port| yaml(port, &two, ""), &["--watch-config"]);
    let port = p.port;
    // Renamed over the file, as editors and configuration managers do.
    let tmp = p.dir.path().join("proxy.yml.new");
    std::fs::write(&tmp, yaml(port, &three, "")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, p.dir.path().join("proxy.yml")).unwrap_or_else(|e| panic!("{e}"));
    eventually("the renamed file is reloaded", || reloads(&p, "ok") == 1);
    assert!(p
        .log()
        .contains("the configuration file changed, reloading it"));
    assert!(p.stats().contains("\"s2\": {"));
    // Written in place: an invalid version, then a valid one.
    rewrite(&p, "alpha:\n  listen: [\n");
    eventually("the invalid file is refused", || reloads(&p, "error") == 1);
    assert!(
        p.stats().contains("\"s2\": {"),
        "an invalid file changed the pool"
    );
    rewrite(&p, &yaml(port, &two, ""));
    eventually("the file is reloaded", || reloads(&p, "ok") == 2);
    assert!(!p.stats().contains("\"s2\""));
    let mut k = Conn::new(port);
    assert_eq!(k.cmd(&[b"SET", b"w", b"1"]), b"+OK\r\n");
}

fn refused(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// Upstream's three `test_reload.py` scenarios (a new port, a pool added
/// and deleted, the same configuration), with shardproxy's semantics: the
/// clients of a retired listener are kept until they leave or
/// `--drain-timeout` ends, instead of being cut at once.
#[test]
fn pools_move_to_new_ports_and_come_and_go() {
    let (a, b) = (redis(), redis());
    let two = [(a.port, "s0"), (b.port, "s1")];
    let p = shardproxy(&|port| yaml(port, &two, ""), &["--drain-timeout", "1"]);
    let old = p.port;
    let new = support::free_port();
    let mut before = Conn::new(old);
    assert_eq!(before.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    // A new port: bound, the old one closed; the old port's client is
    // still served, then closed after the drain timeout.
    let seen = run_under_load(old, || {
        rewrite(&p, &yaml(new, &two, ""));
        reload(&p, "ok");
    });
    for s in &seen {
        assert!(s.errors.is_empty(), "{s:?}");
    }
    assert!(
        p.log()
            .contains(&format!("moved from 127.0.0.1:{old} to 127.0.0.1:{new}")),
        "{}",
        p.log()
    );
    let mut after = Conn::new(new);
    assert_eq!(after.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    assert!(refused(old), "the old port still accepts");
    assert_eq!(before.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    let start = Instant::now();
    assert!(before.closed(), "the old listener's client was not closed");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(after.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    // A pool added, then deleted.
    let beta_port = support::free_port();
    let both =
        yaml(new, &two, "") + &yaml(beta_port, &[(b.port, "only")], "").replace("alpha:", "beta:");
    // alpha, unchanged, under load while beta comes and goes.
    let seen = run_under_load(new, || {
        rewrite(&p, &both);
        reload(&p, "ok");
    });
    for s in &seen {
        assert!(s.requests > 0 && s.errors.is_empty(), "{s:?}");
    }
    assert!(p.log().contains("pool 'beta' added"));
    let mut beta = Conn::new(beta_port);
    assert_eq!(beta.cmd(&[b"SET", b"kb", b"1"]), b"+OK\r\n");
    assert_eq!(Conn::new(b.port).cmd(&[b"GET", b"kb"]), b"$1\r\n1\r\n");
    assert!(p.stats().contains("\"beta\": {"));
    let (_, metrics) = p.http_get("/metrics");
    assert!(metrics.contains("pool=\"beta\""));
    let seen = run_under_load(new, || {
        rewrite(&p, &yaml(new, &two, ""));
        reload(&p, "ok");
    });
    for s in &seen {
        assert!(s.requests > 0 && s.errors.is_empty(), "{s:?}");
    }
    assert!(p.log().contains("pool 'beta' removed"));
    assert!(refused(beta_port));
    assert_eq!(
        beta.cmd(&[b"GET", b"kb"]),
        b"$1\r\n1\r\n",
        "a removed pool's client is served while it drains"
    );
    assert!(beta.closed());
    assert!(!p.stats().contains("\"beta\""));
    // The alpha clients never noticed.
    assert_eq!(after.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    // The same configuration: nothing happens.
    reload(&p, "ok");
    assert!(p.log().contains("no pool changed"));
    assert_eq!(after.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
}
