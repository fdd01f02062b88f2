//! Cross-protocol scripting: what a browser sends when a web page posts a
//! form to the proxy's port (and TLS hellos, binary garbage) closes the
//! connection before anything in it runs, against real backends.

mod support;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use support::{memcached, redis, resp, servers, shardproxy, Conn, Proc};

/// The request a browser sends for a `text/plain` form posted to the proxy.
fn browser_post(body: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:22121\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// True once the proxy has closed the connection (EOF or reset), within 5 s.
fn closed_soon(c: &mut Conn) -> bool {
    c.s.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut b = [0u8; 256];
    match c.s.read(&mut b) {
        Ok(0) => true,
        // Anything at all answered to an attack is a failure.
        Ok(n) => panic!("the proxy answered: {:?}", String::from_utf8_lossy(&b[..n])),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Sends each attack on a connection of its own (in the given writes, 5 ms
/// apart): each connection must be closed within 3 s without a reply, and
/// `unchanged` must still hold after it.
fn attack_each(port: u16, attacks: &[(&str, Vec<Vec<u8>>)], unchanged: &dyn Fn(&str)) {
    for (what, writes) in attacks {
        let mut c = Conn::new(port);
        for w in writes {
            // A write after the proxy closed may fail: that is the point.
            let _ = c.s.write_all(w);
            if writes.len() > 1 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let t = Instant::now();
        assert!(closed_soon(&mut c), "{what}: the connection stayed open");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{what}: closed only after {:?}",
            t.elapsed()
        );
        unchanged(what);
    }
}

/// The security counters by reason, and `client_err`, are as expected.
fn assert_counted(p: &Proc, pool: &str, http: i64, tls: i64, binary: i64) {
    for (reason, n) in [("http", http), ("tls", tls), ("binary", binary)] {
        let labels = format!("pool=\"{pool}\",reason=\"{reason}\"");
        assert_eq!(
            sample(p, "shardproxy_security_rejects_total", &labels),
            n,
            "{reason}"
        );
    }
    assert_eq!(client_err(p, pool), http + tls + binary);
}

/// The value of a `/metrics` sample with these labels.
fn sample(p: &Proc, name: &str, labels: &str) -> i64 {
    let (_, body) = p.http_get("/metrics");
    let want = format!("{name}{{{labels}}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or_else(|| panic!("no {want} in /metrics:\n{body}"))
}

fn redis_pool(backends: &[&Proc]) -> impl Fn(u16) -> String {
    let s = servers(backends);
    move |port| {
        format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: murmur\n  servers:\n{s}"
        )
    }
}

fn mc_pool(backends: &[&Proc]) -> impl Fn(u16) -> String {
    let s = servers(backends);
    move |port| format!("beta:\n  listen: 127.0.0.1:{port}\n  hash: murmur\n  servers:\n{s}")
}

fn client_err(p: &Proc, pool: &str) -> i64 {
    let doc = p.stats();
    let at = doc
        .find(&format!("\"{pool}\": {{\"client_eof\":"))
        .unwrap_or_else(|| panic!("no pool {pool}: {doc}"));
    doc[at..]
        .split("\"client_err\":")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no client_err: {doc}"))
}

#[test]
fn redis_pool_closes_http_tls_and_binary() {
    let (a, b) = (redis(), redis());
    let p = shardproxy(&redis_pool(&[&a, &b]), &[]);
    let no_keys = |what: &str| {
        for be in [&a, &b] {
            let mut d = Conn::new(be.port);
            assert_eq!(
                d.cmd(&[b"EXISTS", b"pwned"]),
                b":0\r\n",
                "{what}: the attack ran on backend {}",
                be.port
            );
        }
    };
    let attacks: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "browser POST",
            vec![browser_post("SET pwned yes\r\nQUIT\r\n")],
        ),
        (
            "Host: first",
            vec![b"Host: 127.0.0.1\r\nSET pwned yes\r\n".to_vec()],
        ),
        (
            "RESP-encoded POST",
            vec![[resp(&[b"POST", b"/"]), resp(&[b"SET", b"pwned", b"yes"])].concat()],
        ),
        (
            "lowercase",
            vec![b"post / http/1.1\r\nhost: x\r\n\r\nSET pwned yes\r\n".to_vec()],
        ),
        (
            "GET request line",
            vec![b"GET / HTTP/1.1\r\nHost: x\r\n\r\nSET pwned yes\r\n".to_vec()],
        ),
        (
            "split across writes",
            browser_post("SET pwned yes\r\n")
                .chunks(3)
                .map(<[u8]>::to_vec)
                .collect(),
        ),
        (
            "TLS ClientHello",
            vec![vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ]],
        ),
        ("binary", vec![vec![0x00, 0xff, 0x13, 0x37]]),
    ];
    attack_each(p.port, &attacks, &no_keys);
    // Valid pipelined commands before the attack line are answered; nothing
    // after it runs, even what was in the same write.
    let mut c = Conn::new(p.port);
    let mut wire = resp(&[b"SET", b"before", b"1"]);
    wire.extend(b"GET before\r\n");
    wire.extend(browser_post("SET pwned yes\r\n"));
    wire.extend(resp(&[b"SET", b"after", b"1"]));
    c.send(&wire);
    assert_eq!(c.reply(), b"+OK\r\n");
    assert_eq!(c.reply(), b"$1\r\n1\r\n");
    assert!(closed_soon(&mut c), "attack after valid commands");
    no_keys("after valid commands");
    for be in [&a, &b] {
        assert_eq!(Conn::new(be.port).cmd(&[b"EXISTS", b"after"]), b":0\r\n");
    }
    // Another client is not affected.
    assert_eq!(Conn::new(p.port).cmd(&[b"GET", b"before"]), b"$1\r\n1\r\n");

    assert_counted(&p, "alpha", 7, 1, 1);
    let log = p.log();
    assert_eq!(
        log.matches("closing the connection from 127.0.0.1:")
            .count(),
        9,
        "one warning per connection:\n{log}"
    );
    assert!(log.contains("a TLS handshake on a plain-text listener"));
}

#[test]
fn memcache_pool_closes_http_tls_and_binary() {
    let (a, b) = (memcached(), memcached());
    let p = shardproxy(&mc_pool(&[&a, &b]), &[]);
    let no_keys = |what: &str| {
        for be in [&a, &b] {
            let mut d = Conn::new(be.port);
            assert_eq!(
                d.mc(b"get pwned\r\n"),
                b"END\r\n",
                "{what}: the attack ran on backend {}",
                be.port
            );
        }
    };
    let set = "set pwned 0 0 3\r\nyes\r\n";
    let attacks: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("browser POST", vec![browser_post(set)]),
        (
            "Host: first",
            vec![format!("Host: 127.0.0.1\r\n{set}").into_bytes()],
        ),
        (
            "GET request line",
            vec![format!("GET / HTTP/1.1\r\n\r\n{set}").into_bytes()],
        ),
        (
            "split across writes",
            browser_post(set).chunks(4).map(<[u8]>::to_vec).collect(),
        ),
        ("TLS ClientHello", vec![vec![0x16, 0x03, 0x01, 0x02, 0x00]]),
        // (0x80 starts memcache's binary protocol, which the proxy speaks.)
        ("binary", vec![vec![0xff, 0x00, 0x00, 0x05]]),
    ];
    attack_each(p.port, &attacks, &no_keys);
    let mut c = Conn::new(p.port);
    let mut wire = b"set before 0 0 1\r\n1\r\nget before\r\n".to_vec();
    wire.extend(browser_post(set));
    wire.extend(b"set after 0 0 1\r\n1\r\n");
    c.send(&wire);
    assert_eq!(c.mc_reply(), b"STORED\r\n");
    assert_eq!(c.mc_reply(), b"VALUE before 0 1\r\n1\r\nEND\r\n");
    assert!(closed_soon(&mut c), "attack after valid commands");
    no_keys("after valid commands");
    for be in [&a, &b] {
        assert_eq!(Conn::new(be.port).mc(b"get after\r\n"), b"END\r\n");
    }
    assert_counted(&p, "beta", 5, 1, 1);
    // A binary-protocol connection that then sends what is not a request
    // packet: closed, nothing run.
    let mut bin = Conn::new(p.port);
    let mut noop = vec![0x80, 0x0a];
    noop.extend([0u8; 22]);
    bin.send(&noop);
    let mut reply = [0u8; 24];
    bin.s
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("the noop's reply: {e}"));
    assert_eq!(reply[..2], [0x81, 0x0a]);
    bin.send(format!("\r\n{set}").as_bytes());
    assert!(closed_soon(&mut bin), "a binary connection sending text");
    no_keys("binary then text");
    // A framing error (client_err), not counted as an attack.
    let mut counted = 0;
    for _ in 0..100 {
        counted = client_err(&p, "beta");
        if counted == 8 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(counted, 8);
}
