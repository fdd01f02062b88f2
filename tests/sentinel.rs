//! Redis Sentinel (`sentinels:`): a master killed under a continuous write
//! load; three real sentinels promote its replica; the proxy follows
//! `+switch-master` and writes to the new master.

mod support;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{redis, redis_with, shardproxy, start, Conn, Proc};

fn sentinel(master: u16) -> Proc {
    start("redis-sentinel", |port, dir| {
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor server1 127.0.0.1 {master} 2\nsentinel down-after-milliseconds server1 1000\nsentinel failover-timeout server1 5000\nsentinel parallel-syncs server1 1\n",
                dir.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut c = Command::new("redis-server");
        c.arg(&conf).arg("--sentinel");
        c
    })
}

/// A proxy whose one server is the Sentinel master `server1`, starting at
/// `master`, with these sentinels.
fn proxy(master: &Proc, sentinels: &[Proc]) -> Proc {
    let list: String = sentinels
        .iter()
        .map(|s| format!("   - 127.0.0.1:{}:1\n", s.port))
        .collect();
    let mport = master.port;
    shardproxy(
        &move |port| {
            format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 1000\n  servers:\n   - 127.0.0.1:{mport}:1 server1\n  sentinels:\n{list}")
        },
        &[],
    )
}

fn role(p: &Proc) -> String {
    Conn::new(p.port).value(&[b"ROLE"]).items()[0].text()
}

/// Waits (bounded, generous: Sentinel's own timing) until `f` holds.
fn within(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_failover_moves_writes_to_the_promoted_replica() {
    let master = redis();
    let replica = redis_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    within(20, "the replica is in sync", || {
        Conn::new(master.port)
            .value(&[b"INFO", b"replication"])
            .text()
            .contains("state=online")
    });
    let mut sentinels: Vec<Proc> = (0..3).map(|_| sentinel(master.port)).collect();
    within(20, "the sentinels see each other and the replica", || {
        let r = Conn::new(sentinels[0].port).value(&[b"SENTINEL", b"MASTER", b"server1"]);
        let items = r.items();
        let get = |k: &str| {
            items
                .chunks(2)
                .find(|p| p.len() == 2 && p[0].text() == k)
                .map(|p| p[1].text())
                .unwrap_or_default()
        };
        get("num-other-sentinels") == "2" && get("num-slaves") == "1"
    });
    let p = proxy(&master, &sentinels);
    // A writer on one connection, all along: which writes were acknowledged,
    // and how many failed.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(u64, Instant)>::new()));
    let writer = {
        let (stop, acked, port) = (stop.clone(), acked.clone(), p.port);
        std::thread::spawn(move || {
            let mut failed = 0u64;
            let mut k = Conn::new(port);
            let end = Instant::now() + Duration::from_secs(90);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let key = format!("w:{i}");
                if k.cmd(&[b"SET", key.as_bytes(), b"1"]) == b"+OK\r\n" {
                    if let Ok(mut a) = acked.lock() {
                        a.push((i, Instant::now()));
                    }
                } else {
                    failed += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                i += 1;
            }
            failed
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // One sentinel dies first: the others still elect, and the proxy
    // hears them.
    drop(sentinels.remove(0));
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    drop(master);
    within(60, "the replica is promoted", || role(&replica) == "master");
    let promoted = killed.elapsed();
    within(15, "the proxy follows", || {
        p.log().contains("switched from")
    });
    let followed = killed.elapsed();
    // Writes succeed again, on the new master.
    let mut k = Conn::new(p.port);
    within(10, "a write through the proxy succeeds", || {
        k.cmd(&[b"SET", b"after", b"1"]) == b"+OK\r\n"
    });
    assert_eq!(
        Conn::new(replica.port).cmd(&[b"GET", b"after"]),
        b"$1\r\n1\r\n"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let failed = writer
        .join()
        .unwrap_or_else(|_| panic!("the writer panicked"));
    // Every write acknowledged after the switch is on the new master.
    let switched_at = killed + followed;
    let after: Vec<u64> = acked
        .lock()
        .map(|a| {
            a.iter()
                .filter(|(_, t)| *t > switched_at)
                .map(|(i, _)| *i)
                .collect()
        })
        .unwrap_or_default();
    assert!(!after.is_empty(), "no write acknowledged after the switch");
    let mut r = Conn::new(replica.port);
    for i in &after {
        let key = format!("w:{i}");
        assert_eq!(
            r.cmd(&[b"EXISTS", key.as_bytes()]),
            b":1\r\n",
            "{key} acknowledged but not on the new master"
        );
    }
    let (_, metrics) = p.http_get("/metrics");
    assert!(
        metrics.contains("shardproxy_sentinel_failovers_total 1"),
        "{metrics}"
    );
    let address = format!(
        "shardproxy_server_address{{pool=\"alpha\",server=\"server1\",address=\"127.0.0.1:{}\"}} 1",
        replica.port
    );
    assert!(metrics.contains(&address), "{address} not in {metrics}");
    println!(
        "master killed: replica promoted after {promoted:?}, proxy switched after {followed:?}; {failed} writes failed during the switch, {} acknowledged after it, all on the new master",
        after.len()
    );
}

/// With every sentinel gone, the proxy keeps serving the last known master
/// and says so in its log.
#[test]
fn without_sentinels_the_last_master_is_kept() {
    let master = redis();
    let sentinels: Vec<Proc> = (0..2).map(|_| sentinel(master.port)).collect();
    let p = proxy(&master, &sentinels);
    let mut k = Conn::new(p.port);
    assert_eq!(k.cmd(&[b"SET", b"a", b"1"]), b"+OK\r\n");
    let up = |p: &Proc| {
        let (_, m) = p.http_get("/metrics");
        m.lines()
            .filter(|l| l.starts_with("shardproxy_sentinel_up{"))
            .map(|l| l.ends_with(" 1"))
            .collect::<Vec<bool>>()
    };
    within(10, "both sentinels are followed", || up(&p) == [true, true]);
    drop(sentinels);
    within(10, "both sentinels are gone", || up(&p) == [false, false]);
    within(15, "the proxy notices", || {
        p.log()
            .contains("no sentinel answers; serving the last known masters")
    });
    assert_eq!(k.cmd(&[b"SET", b"b", b"2"]), b"+OK\r\n");
    assert_eq!(Conn::new(master.port).cmd(&[b"GET", b"b"]), b"$1\r\n2\r\n");
}
