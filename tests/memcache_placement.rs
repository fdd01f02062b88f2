//! Key placement for memcache pools against the live reference: the same keys
//! are set through Debian's nutcracker and through shardproxy over the same
//! memcached backends — ketama with weights, with names, and with servers on
//! port 11211 (which nutcracker names by host alone) — and the backend holding
//! each key (read directly) must be the same.

mod support;
use support::{memcached, memcached_11211, nutcracker, shardproxy, Conn, Proc};

fn keys(n: usize) -> Vec<String> {
    let mut x: u64 = 0x0123_4567_89ab_cdef;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("k{:x}:{i}", x >> 24)
        })
        .collect()
}

/// Sets every key through the proxy on `port`.
fn set_all(port: u16, keys: &[String]) {
    let mut k = Conn::new(port);
    let mut wire = Vec::new();
    for key in keys {
        wire.extend_from_slice(format!("set {key} 0 0 1\r\nx\r\n").as_bytes());
    }
    k.send(&wire);
    for key in keys {
        assert_eq!(k.mc_reply(), b"STORED\r\n", "{key}");
    }
}

/// For each key, the index of the backend holding it; then flushes them.
fn placement(backends: &[&Proc], keys: &[String]) -> Vec<Option<usize>> {
    let mut conns: Vec<Conn> = backends
        .iter()
        .map(|b| {
            let s = std::net::TcpStream::connect((b.host.as_str(), b.port))
                .unwrap_or_else(|e| panic!("{e}"));
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap_or_else(|e| panic!("{e}"));
            Conn::from(s)
        })
        .collect();
    let out = keys
        .iter()
        .map(|key| {
            let mut holders = Vec::new();
            for (i, c) in conns.iter_mut().enumerate() {
                if c.mc(format!("get {key}\r\n").as_bytes()) != b"END\r\n" {
                    holders.push(i);
                }
            }
            assert!(holders.len() <= 1, "{key} on {holders:?}");
            holders.first().copied()
        })
        .collect();
    for c in &mut conns {
        assert_eq!(c.mc(b"flush_all\r\n"), b"OK\r\n");
    }
    out
}

fn compare(name: &str, yaml: &dyn Fn(u16) -> String, backends: &[&Proc]) {
    let keys = keys(300);
    let nc = nutcracker(yaml);
    set_all(nc.port, &keys);
    drop(nc);
    let want = placement(backends, &keys);
    let sp = shardproxy(yaml, &[]);
    set_all(sp.port, &keys);
    drop(sp);
    let got = placement(backends, &keys);
    assert!(want.iter().all(Option::is_some), "{name}: a key was lost");
    let used: std::collections::BTreeSet<_> = want.iter().collect();
    assert_eq!(
        used.len(),
        backends.len(),
        "{name}: keys should reach every backend"
    );
    let diffs: Vec<String> = keys
        .iter()
        .zip(want.iter().zip(&got))
        .filter(|(_, (w, g))| w != g)
        .map(|(k, (w, g))| format!("{k}: nutcracker {w:?}, shardproxy {g:?}"))
        .collect();
    assert!(
        diffs.is_empty(),
        "{name}: {} keys differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

fn pool(servers: &str, extra: &str) -> impl Fn(u16) -> String {
    let servers = servers.to_string();
    let extra = extra.to_string();
    move |port| format!("m:\n  listen: 127.0.0.1:{port}\n{extra}  servers:\n{servers}")
}

#[test]
fn ketama_places_memcache_keys_like_nutcracker() {
    let (a, b, c) = (memcached(), memcached(), memcached());
    let bs = [&a, &b, &c];
    let weighted = format!(
        "   - {}:1\n   - {}:2\n   - {}:3\n",
        a.addr(),
        b.addr(),
        c.addr()
    );
    let named = format!(
        "   - {}:1 alpha\n   - {}:1 beta\n   - {}:2 gamma\n",
        a.addr(),
        b.addr(),
        c.addr()
    );
    for (name, servers, extra) in [
        ("weights, md5", &weighted, ""),
        ("weights, fnv1a_64", &weighted, "  hash: fnv1a_64\n"),
        (
            "names, murmur",
            &named,
            "  hash: murmur\n  hash_tag: \"{}\"\n",
        ),
        ("names, crc32a", &named, "  hash: crc32a\n"),
    ] {
        compare(name, &pool(servers, extra), &bs);
    }
}

#[test]
fn servers_on_port_11211_are_named_by_host() {
    // nutcracker names a server on 11211 by its host alone, so its ketama
    // points differ from a server on any other port.
    let (a, b) = (memcached_11211(), memcached_11211());
    let c = memcached();
    let servers = format!(
        "   - {}:1\n   - {}:2\n   - {}:1\n",
        a.addr(),
        b.addr(),
        c.addr()
    );
    compare("11211", &pool(&servers, "  hash: md5\n"), &[&a, &b, &c]);
}
