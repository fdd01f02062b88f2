//! Fault injection against real backends and hostile clients: a backend
//! restarted, a backend at its `maxclients`, clients that vanish mid-pipeline
//! or half-close, a client that never reads, and a bounded soak with random
//! backend kills and restarts that counts every request and reply.

mod support;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};
use support::{eventually, redis, redis_at, redis_with, resp, shardproxy, Conn, Proc};

fn pool(backends: &[&Proc], extra: &str) -> impl Fn(u16) -> String {
    let s = support::servers(backends);
    let extra = extra.to_string();
    move |port| {
        format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: murmur\n  timeout: 3000\n{extra}  servers:\n{s}")
    }
}

fn rss_kb(p: &Proc) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", p.pid()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn stat(p: &Proc, path: &[&str]) -> i64 {
    let v: serde_json::Value =
        serde_json::from_str(&p.stats()).unwrap_or_else(|e| panic!("stats: {e}"));
    let mut cur = &v;
    for k in path {
        cur = &cur[*k];
    }
    cur.as_i64().unwrap_or_else(|| panic!("{path:?}: {cur}"))
}

#[test]
fn a_restarted_backend_is_served_again() {
    let mut b = redis();
    let port = b.port;
    let p = shardproxy(&pool(&[&b], ""), &[]);
    let mut k = Conn::new(p.port);
    assert_eq!(k.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    b.signal(libc::SIGKILL);
    let _ = b.wait_exit(Duration::from_secs(5));
    // The backend is gone: each request gets one error, the client stays.
    let r = k.cmd(&[b"GET", b"k"]);
    assert!(
        r == b"-ERR Connection closed by server\r\n" || r == b"-ERR Connection refused\r\n",
        "{:?}",
        String::from_utf8_lossy(&r)
    );
    assert_eq!(k.cmd(&[b"GET", b"k"]), b"-ERR Connection refused\r\n");
    drop(b);
    // Restarted on the same port (empty: no persistence): served at once.
    let _b2 = redis_at(port, &[]);
    assert_eq!(k.cmd(&[b"GET", b"k"]), b"$-1\r\n");
    assert_eq!(k.cmd(&[b"SET", b"k", b"again"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"GET", b"k"]), b"$5\r\nagain\r\n");
}

#[test]
fn a_backend_at_maxclients_answers_with_its_error_then_recovers() {
    let b = redis_with(&["--maxclients", "1"]);
    let p = shardproxy(&pool(&[&b], ""), &["--threads", "1"]);
    // Someone else holds the backend's only client slot.
    let mut holder = Conn::new(b.port);
    assert_eq!(holder.cmd(&[b"PING"]), b"+PONG\r\n");
    let mut k = Conn::new(p.port);
    for _ in 0..3 {
        let r = k.cmd(&[b"GET", b"k"]);
        assert!(
            r == b"-ERR max number of clients reached\r\n"
                || r == b"-ERR Connection closed by server\r\n"
                || r == b"-ERR Connection reset by peer\r\n",
            "{:?}",
            String::from_utf8_lossy(&r)
        );
    }
    drop(holder);
    // The slot is free again: the next connection works.
    eventually("the backend serves again", || {
        k.cmd(&[b"SET", b"k", b"v"]) == b"+OK\r\n"
    });
    assert_eq!(k.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
}

#[test]
fn clients_vanishing_mid_pipeline_leak_nothing() {
    let (a, b) = (redis(), redis());
    let p = shardproxy(&pool(&[&a, &b], ""), &[]);
    let burst = |n: usize| {
        for i in 0..n {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", p.port))
                .unwrap_or_else(|e| panic!("{e}"));
            let mut wire = Vec::new();
            for j in 0..200 {
                let key = format!("k{}", j % 50);
                wire.extend(resp(&[b"SET", key.as_bytes(), &[b'x'; 300]]));
                wire.extend(resp(&[b"GET", key.as_bytes()]));
            }
            wire.extend(resp(&[b"MGET", b"k1", b"k2", b"k3", b"k4"]));
            let _ = s.write_all(&wire);
            if i % 2 == 0 {
                // Read a little, then vanish with replies still coming.
                let mut buf = [0u8; 100];
                let _ = s.read(&mut buf);
            }
            drop(s);
        }
    };
    burst(30);
    eventually("the first burst's clients are gone", || {
        stat(&p, &["alpha", "client_connections"]) == 0
    });
    let baseline_rss = rss_kb(&p);
    burst(200);
    eventually("every client is gone", || {
        stat(&p, &["alpha", "client_connections"]) == 0
    });
    eventually("queues drain", || {
        ["in_queue", "out_queue", "in_queue_bytes", "out_queue_bytes"]
            .iter()
            .all(|f| {
                [&a, &b]
                    .iter()
                    .all(|s| stat(&p, &["alpha", &format!("127.0.0.1:{}", s.port), f]) == 0)
            })
    });
    // No client connection left: open connections are the listener and the
    // server connections.
    eventually("connections return to the baseline", || {
        let servers: i64 = [&a, &b]
            .iter()
            .map(|s| {
                stat(
                    &p,
                    &[
                        "alpha",
                        &format!("127.0.0.1:{}", s.port),
                        "server_connections",
                    ],
                )
            })
            .sum();
        stat(&p, &["curr_connections"]) == 1 + servers
    });
    let grown = rss_kb(&p).saturating_sub(baseline_rss);
    assert!(
        grown < 8 * 1024,
        "RSS grew by {grown} KB over 200 vanished clients"
    );
    // And the proxy still serves.
    assert_eq!(Conn::new(p.port).cmd(&[b"SET", b"z", b"1"]), b"+OK\r\n");
}

#[test]
fn a_half_closed_client_gets_every_reply() {
    let (a, b) = (redis(), redis());
    let p = shardproxy(&pool(&[&a, &b], ""), &[]);
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut wire = Vec::new();
    for i in 0..100 {
        wire.extend(resp(&[b"SET", format!("h{i}").as_bytes(), b"v"]));
    }
    wire.extend(resp(&[b"MGET", b"h1", b"h2", b"h99"]));
    s.write_all(&wire).unwrap_or_else(|e| panic!("{e}"));
    s.shutdown(Shutdown::Write)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap_or_else(|e| panic!("{e}"));
    let mut want = b"+OK\r\n".repeat(100);
    want.extend_from_slice(b"*3\r\n$1\r\nv\r\n$1\r\nv\r\n$1\r\nv\r\n");
    assert_eq!(all, want);
}

#[test]
fn a_client_that_never_reads_is_back_pressured() {
    let b = redis();
    let p = shardproxy(&pool(&[&b], ""), &["--client-buffer", "4194304"]);
    let value = vec![b'v'; 16 * 1024];
    assert_eq!(Conn::new(p.port).cmd(&[b"SET", b"big", &value]), b"+OK\r\n");
    let before = rss_kb(&p);
    // 20,000 GETs of 16 KB: 320 MB of replies, not read for a while.
    let n = 20_000;
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|e| panic!("{e}"));
    let writer = {
        let mut w = s.try_clone().unwrap_or_else(|e| panic!("{e}"));
        std::thread::spawn(move || {
            let one = resp(&[b"GET", b"big"]);
            for _ in 0..n / 100 {
                if w.write_all(&one.repeat(100)).is_err() {
                    break;
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let peak = rss_kb(&p).saturating_sub(before);
    // Meanwhile another client is served promptly.
    let mut other = Conn::new(p.port);
    let t = Instant::now();
    assert_eq!(other.cmd(&[b"SET", b"o", b"1"]), b"+OK\r\n");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // Bounded: the 4 MB client buffer, plus the replies to the requests
    // already forwarded (at most 1,024 in flight, and one read's worth),
    // plus socket buffers, far below the 320 MB the client asked for.
    eprintln!("a client that does not read: proxy RSS grew by {peak} KB");
    assert!(
        peak < 96 * 1024,
        "proxy RSS grew by {peak} KB for a client that does not read"
    );
    // Now read everything: exactly one reply per request.
    let reply_len = format!("${}\r\n", value.len()).len() + value.len() + 2;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    while got < n * reply_len {
        let k = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read after {got} bytes: {e}"));
        assert!(k > 0, "closed after {got} bytes");
        got += k;
    }
    assert_eq!(got, n * reply_len);
    writer.join().unwrap_or_else(|_| panic!("writer"));
}

/// Requests sent vs replies received per client while backends are killed
/// and restarted at random: every request gets exactly one well-formed reply.
#[test]
fn soak_with_backend_kills_loses_no_reply() {
    let secs: u64 = std::env::var("SHARDPROXY_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut backends: Vec<Proc> = (0..3).map(|_| redis()).collect();
    let ports: Vec<u16> = backends.iter().map(|b| b.port).collect();
    let p = shardproxy(
        &pool(&backends.iter().collect::<Vec<_>>(), ""),
        &["--threads", "2"],
    );
    let port = p.port;
    let end = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..12)
        .map(|c| {
            std::thread::spawn(move || {
                let mut k = Conn::new(port);
                let (mut sent, mut replies, mut errors) = (0u64, 0u64, 0u64);
                let mut rng = 0x9e37_79b9_u64 + c;
                while Instant::now() < end {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let depth = 1 + (rng % 32) as usize;
                    let mut wire = Vec::new();
                    let mut kinds = Vec::new();
                    for i in 0..depth {
                        let key = format!("s{}", (rng >> 8).wrapping_add(i as u64) % 500);
                        match (rng >> (i % 40)) % 3 {
                            0 => {
                                wire.extend(resp(&[b"SET", key.as_bytes(), b"val"]));
                                kinds.push(b'+');
                            }
                            1 => {
                                wire.extend(resp(&[b"GET", key.as_bytes()]));
                                kinds.push(b'$');
                            }
                            _ => {
                                wire.extend(resp(&[b"MGET", key.as_bytes(), b"s1", b"s2", b"s3"]));
                                kinds.push(b'*');
                            }
                        }
                    }
                    k.send(&wire);
                    sent += depth as u64;
                    for kind in kinds {
                        let r = k.reply();
                        replies += 1;
                        if r[0] == b'-' {
                            errors += 1;
                        } else {
                            assert_eq!(r[0], kind, "{:?}", String::from_utf8_lossy(&r));
                        }
                    }
                }
                // The connection survived everything.
                assert_eq!(k.cmd(&[b"PING"]), b"+PONG\r\n");
                (sent, replies, errors)
            })
        })
        .collect();
    // Chaos: kill -9 a random backend, restart it on its port, repeat.
    let mut kills = 0;
    let mut x = 12345u64;
    while Instant::now() + Duration::from_millis(1200) < end {
        std::thread::sleep(Duration::from_millis(400));
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % 3) as usize;
        backends[i].signal(libc::SIGKILL);
        let _ = backends[i].wait_exit(Duration::from_secs(5));
        kills += 1;
        std::thread::sleep(Duration::from_millis(150));
        backends[i] = redis_at(ports[i], &[]);
    }
    let mut totals = (0u64, 0u64, 0u64);
    for h in clients {
        let (s, r, e) = h.join().unwrap_or_else(|_| panic!("a client failed"));
        assert_eq!(s, r, "a client sent {s} requests and got {r} replies");
        totals = (totals.0 + s, totals.1 + r, totals.2 + e);
    }
    eprintln!(
        "soak: {secs} s, 12 clients, {kills} backend kills: {} requests, {} replies ({} errors), 0 lost, 0 duplicated",
        totals.0, totals.1, totals.2
    );
    assert!(
        kills >= 2 && totals.0 > 1000,
        "{kills} kills, {} requests",
        totals.0
    );
}

#[test]
fn a_loading_backend_fails_its_requests_like_nutcracker_then_serves() {
    let b = redis_with(&["--enable-debug-command", "yes"]);
    let mut direct = Conn::new(b.port);
    assert_eq!(direct.cmd(&[b"DEBUG", b"POPULATE", b"200000"]), b"+OK\r\n");
    // Make a reload slow, and let redis answer clients while it loads.
    assert_eq!(
        direct.cmd(&[b"CONFIG", b"SET", b"key-load-delay", b"20"]),
        b"+OK\r\n"
    );
    assert_eq!(
        direct.cmd(&[
            b"CONFIG",
            b"SET",
            b"loading-process-events-interval-bytes",
            b"1024"
        ]),
        b"+OK\r\n"
    );
    let p = shardproxy(&pool(&[&b], ""), &["--threads", "1"]);
    let mut k = Conn::new(p.port);
    assert_eq!(k.cmd(&[b"GET", b"key:1"]), b"$7\r\nvalue:1\r\n");
    let reload = std::thread::spawn(move || direct.cmd(&[b"DEBUG", b"RELOAD"]));
    std::thread::sleep(Duration::from_millis(400));
    // While it loads, redis answers -LOADING: not forwarded (nutcracker's
    // transient-error rule, spec §5.3); one error reply each, the client
    // connection stays open.
    for _ in 0..3 {
        assert_eq!(k.cmd(&[b"GET", b"key:1"]), b"-ERR Invalid argument\r\n");
    }
    let mut fast = Conn::new(b.port);
    assert_eq!(
        fast.cmd(&[b"CONFIG", b"SET", b"key-load-delay", b"0"]),
        b"+OK\r\n"
    );
    assert_eq!(
        reload.join().unwrap_or_else(|_| panic!("reload")),
        b"+OK\r\n"
    );
    eventually("the backend serves again", || {
        k.cmd(&[b"GET", b"key:1"]) == b"$7\r\nvalue:1\r\n"
    });
    assert!(
        stat(
            &p,
            &["alpha", &format!("127.0.0.1:{}", b.port), "server_err"]
        ) >= 3
    );
}
