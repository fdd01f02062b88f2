//! Redis Sentinel (`sentinels:`): a master killed under a continuous write
//! load; three real sentinels promote its replica; the proxy follows
//! `+switch-master` and writes to the new master.

mod support;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{redis, redis_with, shardproxy, start, within, Conn, Proc};

fn sentinel(master: u16) -> Proc {
    sentinel_of(&[("server1", master)])
}

/// A sentinel monitoring these masters (name, port), quorum 2, down after 1 s.
fn sentinel_of(masters: &[(&str, u16)]) -> Proc {
    start("redis-sentinel", |port, dir| {
        let conf = dir.join("sentinel.conf");
        let mut text = format!("port {port}\nbind 127.0.0.1\ndir {}\n", dir.display());
        for (name, master) in masters {
            text += &format!("sentinel monitor {name} 127.0.0.1 {master} 2\nsentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\nsentinel parallel-syncs {name} 1\n");
        }
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("{e}"));
        let mut c = Command::new("redis-server");
        c.arg(&conf).arg("--sentinel");
        c
    })
}

/// Whether `sentinel` sees the two other sentinels and the one replica of
/// master `name`.
fn sees_all(sentinel: &Proc, name: &str) -> bool {
    let r = Conn::new(sentinel.port).value(&[b"SENTINEL", b"MASTER", name.as_bytes()]);
    let items = r.items();
    let get = |k: &str| {
        items
            .chunks(2)
            .find(|p| p.len() == 2 && p[0].text() == k)
            .map(|p| p[1].text())
            .unwrap_or_default()
    };
    get("num-other-sentinels") == "2" && get("num-slaves") == "1"
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

/// The node's role; "" while it cannot answer (Sentinel kills the
/// connections of a node it reconfigures: `CLIENT KILL TYPE normal`).
fn role(p: &Proc) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", p.port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(&support::resp(&[b"ROLE"])).is_err() {
        return String::new();
    }
    let mut buf = vec![0u8; 4096];
    let Ok(n) = s.read(&mut buf) else {
        return String::new();
    };
    // `*N\r\n$L\r\n<role>\r\n…`: the first bulk string.
    String::from_utf8_lossy(&buf[..n])
        .split("\r\n")
        .nth(2)
        .unwrap_or_default()
        .to_string()
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
        sees_all(&sentinels[0], "server1")
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
    // When Sentinel announces the switch (what the proxy's reaction is
    // measured from).
    let announced = {
        let mut a = Conn::new(sentinels[1].port);
        a.send(&support::resp(&[b"SUBSCRIBE", b"+switch-master"]));
        let _ = a.reply();
        std::thread::spawn(move || {
            let _ = a.reply();
            Instant::now()
        })
    };
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
    // The proxy writes to the new master within 1 s of Sentinel's
    // announcement (its own detection time).
    let announced = announced
        .join()
        .unwrap_or_else(|_| panic!("no +switch-master announcement"));
    let first_after = acked
        .lock()
        .ok()
        .and_then(|a| a.iter().map(|(_, t)| *t).find(|t| *t > announced))
        .unwrap_or_else(|| panic!("no write acknowledged after the announcement"));
    let reaction = first_after.duration_since(announced);
    assert!(
        reaction < Duration::from_secs(1),
        "the first write after the announcement came {reaction:?} after it"
    );
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
        "master killed: replica promoted after {promoted:?}, announced after {:?}, proxy switched after {followed:?}, first write acknowledged by the new master {reaction:?} after the announcement; {failed} writes failed during the switch, {} acknowledged after it, all on the new master",
        announced.duration_since(killed),
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

/// A master with two replicas in sync, watched by three sentinels that see
/// both replicas.
fn replicated() -> (Proc, Vec<Proc>, Vec<Proc>) {
    let master = redis();
    let mport = master.port.to_string();
    let replicas: Vec<Proc> = (0..2)
        .map(|_| redis_with(&["--replicaof", "127.0.0.1", &mport]))
        .collect();
    within(20, "both replicas are in sync", || {
        Conn::new(master.port)
            .value(&[b"INFO", b"replication"])
            .text()
            .matches("state=online")
            .count()
            == 2
    });
    let sentinels: Vec<Proc> = (0..3).map(|_| sentinel(master.port)).collect();
    within(30, "the sentinels see both replicas", || {
        sentinels.iter().all(|s| {
            let r = Conn::new(s.port).value(&[b"SENTINEL", b"REPLICAS", b"server1"]);
            r.items().len() == 2
                && r.items().iter().all(|x| {
                    x.items().chunks(2).any(|p| {
                        p.len() == 2 && p[0].text() == "master-link-status" && p[1].text() == "ok"
                    })
                })
        })
    });
    (master, replicas, sentinels)
}

fn reading_proxy(master: &Proc, sentinels: &[Proc], read_from: &str) -> Proc {
    let list: String = sentinels
        .iter()
        .map(|s| format!("   - 127.0.0.1:{}:1\n", s.port))
        .collect();
    let mport = master.port;
    let read_from = read_from.to_string();
    shardproxy(
        &move |port| {
            format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 1000\n  read_from: {read_from}\n  server_retry_timeout: 2000\n  servers:\n   - 127.0.0.1:{mport}:1 server1\n  sentinels:\n{list}")
        },
        &[],
    )
}

/// The replicas the proxy reads from, by its metrics.
fn read_replicas(p: &Proc) -> Vec<u16> {
    let (_, m) = p.http_get("/metrics");
    let mut v: Vec<u16> = m
        .lines()
        .filter(|l| l.starts_with("shardproxy_replica{"))
        .filter_map(|l| l.split("replica=\"127.0.0.1:").nth(1))
        .filter_map(|r| r.split('"').next())
        .filter_map(|r| r.parse().ok())
        .collect();
    v.sort();
    v
}

fn calls(p: &Proc, cmd: &str) -> i64 {
    support::commandstat_calls(p.port, cmd)
}

#[test]
fn read_from_replica_sends_reads_to_replicas_and_writes_to_the_master() {
    let (master, replicas, sentinels) = replicated();
    let p = reading_proxy(&master, &sentinels, "replica");
    let mut ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    ports.sort();
    within(20, "the proxy reads from both replicas", || {
        read_replicas(&p) == ports
    });
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/", p.port))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..50 {
        let () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Replication is asynchronous: wait until the replicas have the writes.
    for r in &replicas {
        within(10, "the replicas have the writes", || {
            Conn::new(r.port).cmd(&[b"GET", b"k49"]) == b"$2\r\n49\r\n"
        });
    }
    let master_gets = calls(&master, "get");
    let before: Vec<i64> = replicas.iter().map(|r| calls(r, "get")).collect();
    for i in 0..50 {
        let v: Option<i64> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut c)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, Some(i));
    }
    let v: Vec<Option<i64>> = redis::cmd("MGET")
        .arg("k1")
        .arg("k2")
        .query(&mut c)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v, vec![Some(1), Some(2)]);
    // The GETs reached the replicas (round-robin: both), not the master.
    let replica_gets: Vec<i64> = replicas
        .iter()
        .zip(&before)
        .map(|(r, b)| calls(r, "get") - b)
        .collect();
    assert_eq!(replica_gets.iter().sum::<i64>(), 50, "{replica_gets:?}");
    assert!(replica_gets.iter().all(|&n| n > 0), "{replica_gets:?}");
    assert_eq!(calls(&master, "get"), master_gets);
    assert!(calls(&master, "set") >= 50);
    // Inside a transaction, reads go to the master with the writes.
    let (got,): (Option<i64>,) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("t")
        .arg(7)
        .ignore()
        .cmd("GET")
        .arg("t")
        .query(&mut c)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, Some(7));
    assert_eq!(calls(&master, "get"), master_gets + 1);
    let (_, metrics) = p.http_get("/metrics");
    let reads = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("shardproxy_replica_reads_total{pool=\"alpha\",server=\"server1\"} ")
        })
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(0);
    assert!(reads >= 51, "{metrics}");
}

/// `prefer_replica`: a replica killed under a continuous read load costs no
/// failed read (the reads in flight there are sent again), and the killed
/// replica stops being read from; with none left, reads go to the master.
#[test]
fn a_replica_killed_mid_load_costs_no_failed_read() {
    let (master, mut replicas, sentinels) = replicated();
    let p = reading_proxy(&master, &sentinels, "prefer_replica");
    within(20, "the proxy reads from both replicas", || {
        read_replicas(&p).len() == 2
    });
    let mut w = Conn::new(master.port);
    for i in 0..100 {
        let k = format!("r{i}");
        assert_eq!(w.cmd(&[b"SET", k.as_bytes(), k.as_bytes()]), b"+OK\r\n");
    }
    assert_eq!(w.cmd(&[b"WAIT", b"2", b"5000"]), b":2\r\n");
    let stop = Arc::new(AtomicBool::new(false));
    // Four readers, each its own connection, all along.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, port) = (stop.clone(), p.port);
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .and_then(|c| c.get_connection())
                    .unwrap_or_else(|e| panic!("{e}"));
                let (mut ok, mut failed) = (0u64, Vec::new());
                let end = Instant::now() + Duration::from_secs(60);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let k = format!("r{}", i % 100);
                    match redis::cmd("GET").arg(&k).query::<Option<String>>(&mut c) {
                        Ok(Some(v)) if v == k => ok += 1,
                        other => failed.push(format!("{k}: {other:?}")),
                    }
                    i += 1;
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let first = replicas.remove(0);
    let first_port = first.port;
    drop(first);
    within(
        20,
        "the proxy stops reading from the killed replica",
        || read_replicas(&p) == [replicas[0].port],
    );
    std::thread::sleep(Duration::from_millis(300));
    let last_gets = calls(&replicas[0], "get");
    assert!(last_gets > 0);
    drop(replicas.remove(0));
    within(20, "the proxy reads from no replica", || {
        read_replicas(&p).is_empty()
    });
    let master_gets = calls(&master, "get");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        calls(&master, "get") > master_gets,
        "reads go to the master"
    );
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for r in readers {
        let (o, f) = r.join().unwrap_or_else(|_| panic!("a reader panicked"));
        ok += o;
        failed.extend(f);
    }
    let (_, metrics) = p.http_get("/metrics");
    let retries = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "shardproxy_replica_read_retries_total{pool=\"alpha\",server=\"server1\"} ",
            )
        })
        .unwrap_or("?")
        .to_string();
    println!(
        "replica {first_port} then the other killed under load: {ok} reads answered, {} failed, {retries} sent again after failing at a replica",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed reads: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100);
}

/// A manual failover (`SENTINEL FAILOVER`) demotes a live master: the
/// sessions pinned to it (a WATCH, a subscription) are closed with it, so
/// nothing more runs there through the proxy.
#[test]
fn a_failover_ends_the_sessions_pinned_to_the_demoted_master() {
    let (master, replicas, sentinels) = replicated();
    let p = reading_proxy(&master, &sentinels, "master");
    let mut watcher = Conn::new(p.port);
    assert_eq!(watcher.cmd(&[b"WATCH", b"w"]), b"+OK\r\n");
    let mut sub = Conn::new(p.port);
    sub.send(&support::resp(&[b"SUBSCRIBE", b"news"]));
    let _ = sub.reply();
    let on_master = |what: &str| {
        Conn::new(master.port)
            .value(&[b"CLIENT", b"LIST"])
            .text()
            .lines()
            .filter(|l| l.contains(what) && !l.contains("name=sentinel"))
            .count()
    };
    assert_eq!(on_master("cmd=watch"), 1);
    assert_eq!(on_master("cmd=subscribe"), 1);
    // A new version of the pool (a reload): the sessions stay on the one
    // they pinned in, and a failover must still end them.
    let conf = p.dir.path().join("proxy.yml");
    let text = std::fs::read_to_string(&conf).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&conf, text.replace("timeout: 1000", "timeout: 1500"))
        .unwrap_or_else(|e| panic!("{e}"));
    p.signal(libc::SIGUSR1);
    within(5, "the reload is done", || {
        p.log().contains("configuration") && p.log().contains("reloaded")
    });
    assert_eq!(on_master("cmd=watch"), 1);
    assert_eq!(
        Conn::new(sentinels[0].port).cmd(&[b"SENTINEL", b"FAILOVER", b"server1"]),
        b"+OK\r\n"
    );
    within(30, "the proxy follows the manual failover", || {
        p.log().contains("switched from")
    });
    within(
        5,
        "the pinned connections to the old master are closed",
        || on_master("cmd=watch") + on_master("cmd=subscribe") == 0,
    );
    // The watcher's transaction fails with an error; nothing ran.
    assert_eq!(watcher.cmd(&[b"MULTI"]), b"+OK\r\n");
    let queued = watcher.cmd(&[b"SET", b"w", b"1"]);
    let exec = watcher.cmd(&[b"EXEC"]);
    assert!(
        queued.starts_with(b"-") || exec.starts_with(b"-") || exec == b"*-1\r\n",
        "{:?} {:?}",
        String::from_utf8_lossy(&queued),
        String::from_utf8_lossy(&exec)
    );
    let promoted = replicas
        .iter()
        .find(|r| role(r) == "master")
        .unwrap_or_else(|| panic!("no replica was promoted"));
    assert_eq!(Conn::new(promoted.port).cmd(&[b"EXISTS", b"w"]), b":0\r\n");
    // The subscriber was told (its connection's subscriptions are gone).
    assert!(sub.closed() || !sub.silent_for(Duration::from_secs(2)));
}

/// A reload that adds `sentinels:` to a pool starts following them, one
/// that removes them stops (no `shardproxy_sentinel_up` left).
#[test]
fn a_reload_starts_and_stops_following_sentinels() {
    let master = redis();
    let sentinels: Vec<Proc> = (0..2).map(|_| sentinel(master.port)).collect();
    let mport = master.port;
    let plain = move |port: u16| {
        format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - 127.0.0.1:{mport}:1 server1\n")
    };
    let p = shardproxy(&plain, &[]);
    let ups = |p: &Proc| {
        let (_, m) = p.http_get("/metrics");
        m.lines()
            .filter(|l| l.starts_with("shardproxy_sentinel_up{"))
            .map(|l| l.ends_with(" 1"))
            .collect::<Vec<bool>>()
    };
    assert!(ups(&p).is_empty());
    let list: String = sentinels
        .iter()
        .map(|s| format!("   - 127.0.0.1:{}:1\n", s.port))
        .collect();
    let reload = |text: String| {
        std::fs::write(p.dir.path().join("proxy.yml"), text).unwrap_or_else(|e| panic!("{e}"));
        p.signal(libc::SIGUSR1);
    };
    reload(format!("{}  sentinels:\n{list}", plain(p.port)));
    within(10, "both sentinels are followed", || {
        ups(&p) == [true, true]
    });
    reload(plain(p.port));
    within(10, "no sentinel is followed", || ups(&p).is_empty());
    assert_eq!(Conn::new(p.port).cmd(&[b"SET", b"a", b"1"]), b"+OK\r\n");
}

/// Two masters, each with a replica: keys written through the proxy before
/// and after a failover of each master land on the right master — a
/// failover moves no key (the ring is built from the names).
#[test]
fn failovers_of_each_master_move_no_key() {
    let masters: Vec<Proc> = (0..2).map(|_| redis()).collect();
    let replicas: Vec<Proc> = masters
        .iter()
        .map(|m| redis_with(&["--replicaof", "127.0.0.1", &m.port.to_string()]))
        .collect();
    for m in &masters {
        within(20, "the replica is in sync", || {
            Conn::new(m.port)
                .value(&[b"INFO", b"replication"])
                .text()
                .contains("state=online")
        });
    }
    let names = ["server1", "server2"];
    let monitored: Vec<(&str, u16)> = names
        .iter()
        .copied()
        .zip(masters.iter().map(|m| m.port))
        .collect();
    let sentinels: Vec<Proc> = (0..3).map(|_| sentinel_of(&monitored)).collect();
    within(30, "the sentinels see each other and the replicas", || {
        names.iter().all(|n| sees_all(&sentinels[0], n))
    });
    let list: String = sentinels
        .iter()
        .map(|s| format!("   - 127.0.0.1:{}:1\n", s.port))
        .collect();
    let (m1, m2) = (masters[0].port, masters[1].port);
    let p = shardproxy(
        &move |port| {
            format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 1000\n  distribution: ketama\n  servers:\n   - 127.0.0.1:{m1}:1 server1\n   - 127.0.0.1:{m2}:1 server2\n  sentinels:\n{list}")
        },
        &[],
    );
    let mut k = Conn::new(p.port);
    let keys: Vec<String> = (0..200).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        assert_eq!(k.cmd(&[b"SET", key.as_bytes(), b"0"]), b"+OK\r\n");
    }
    // Which server (index) each key went to; both get some.
    let home: Vec<usize> = keys
        .iter()
        .map(|key| {
            let on: Vec<usize> = (0..2)
                .filter(|&i| {
                    Conn::new(masters[i].port).cmd(&[b"EXISTS", key.as_bytes()]) == b":1\r\n"
                })
                .collect();
            assert_eq!(on.len(), 1, "{key} on {on:?}");
            on[0]
        })
        .collect();
    assert!(home.contains(&0) && home.contains(&1));
    let mut masters: Vec<Option<Proc>> = masters.into_iter().map(Some).collect();
    for (i, name) in names.iter().enumerate() {
        // Kill this master; the proxy follows Sentinel to its replica.
        drop(masters[i].take());
        within(60, "the replica is promoted", || {
            role(&replicas[i]) == "master"
        });
        within(15, "the proxy follows", || {
            p.log().contains(&format!("server '{name}' switched from"))
        });
        // Every key, written again, lands on the current master of the
        // server it was on: the promoted replica, or the other master.
        let round = (i + 1).to_string();
        for key in &keys {
            within(10, "a write through the proxy succeeds", || {
                k.cmd(&[b"SET", key.as_bytes(), round.as_bytes()]) == b"+OK\r\n"
            });
        }
        for (key, &h) in keys.iter().zip(&home) {
            let port = match &masters[h] {
                Some(m) => m.port,
                None => replicas[h].port,
            };
            let want = format!("${}\r\n{round}\r\n", round.len());
            assert_eq!(
                Conn::new(port).cmd(&[b"GET", key.as_bytes()]),
                want.as_bytes(),
                "{key} (server{}) after the failover of {name}",
                h + 1
            );
        }
    }
}
