//! Key placement against the live reference: the same keys are SET through
//! Debian's nutcracker and through shardproxy over the same three redis backends,
//! for every hash × {ketama, modula}, with weights, names and hash tags; the
//! backend that holds each key (read directly) must be the same.

mod support;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use support::{redis, resp, Conn, Proc};

const HASHES: [&str; 12] = [
    "one_at_a_time",
    "md5",
    "crc16",
    "crc32",
    "crc32a",
    "fnv1_64",
    "fnv1a_64",
    "fnv1_32",
    "fnv1a_32",
    "hsieh",
    "murmur",
    "jenkins",
];

/// The pools: (name, extra keys, servers lines).
fn pools(b: &[&Proc]) -> Vec<(String, String, String)> {
    let mut v = Vec::new();
    for (i, h) in HASHES.iter().enumerate() {
        for dist in ["ketama", "modula"] {
            let (servers, tag) = match i % 3 {
                0 => (format!("   - 127.0.0.1:{}:1\n   - 127.0.0.1:{}:1\n   - 127.0.0.1:{}:1\n", b[0].port, b[1].port, b[2].port), ""),
                1 => (format!("   - 127.0.0.1:{}:1 alpha\n   - 127.0.0.1:{}:2 beta\n   - 127.0.0.1:{}:3 gamma_node\n", b[0].port, b[1].port, b[2].port), "  hash_tag: \"{}\"\n"),
                _ => (format!("   - 127.0.0.1:{}:3\n   - 127.0.0.1:{}:1 s2\n   - 127.0.0.1:{}:2\n", b[0].port, b[1].port, b[2].port), "  hash_tag: \"$$\"\n"),
            };
            v.push((
                format!("p_{h}_{dist}"),
                format!("  hash: {h}\n  distribution: {dist}\n{tag}"),
                servers,
            ));
        }
    }
    v
}

fn yaml(sock_dir: &std::path::Path, port: u16, pools: &[(String, String, String)]) -> String {
    let mut y = format!(
        "probe:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - 127.0.0.1:1:1\n"
    );
    for (name, extra, servers) in pools {
        y.push_str(&format!(
            "{name}:\n  listen: {}/{name}.sock\n  redis: true\n{extra}  servers:\n{servers}",
            sock_dir.display()
        ));
    }
    y
}

fn keys(pool: &str) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ pool.len() as u64;
    let mut out = Vec::new();
    for i in 0..40 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut k = format!("{pool}:{:x}:{i}", x >> 20).into_bytes();
        match i % 4 {
            1 => k = format!("{{t{}}}{}", x % 7, String::from_utf8_lossy(&k)).into_bytes(),
            2 => k = format!("u$g{}$:{}", x % 5, String::from_utf8_lossy(&k)).into_bytes(),
            3 => k.push(0x80 | (x as u8)),
            _ => {}
        }
        out.push(k);
    }
    out
}

fn set_all(sock_dir: &std::path::Path, pools: &[(String, String, String)]) {
    for (name, _, _) in pools {
        let mut s = UnixStream::connect(sock_dir.join(format!("{name}.sock")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        let ks = keys(name);
        let mut wire = Vec::new();
        for k in &ks {
            wire.extend(resp(&[b"SET", k, name.as_bytes()]));
        }
        s.write_all(&wire).unwrap_or_else(|e| panic!("{e}"));
        let want = b"+OK\r\n".repeat(ks.len());
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
    }
}

/// key → backend index, read from the backends, then flushed.
fn placement(backends: &[&Proc]) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for (i, b) in backends.iter().enumerate() {
        let mut c = Conn::new(b.port);
        let r = c.cmd(&[b"KEYS", b"*"]);
        let mut elems = Vec::new();
        shardproxy::proto::redis::reply::array_elements(&r, &mut elems)
            .unwrap_or_else(|_| panic!("KEYS reply"));
        for e in elems {
            let el = &r[e];
            let start = el.iter().position(|&c| c == b'\n').map_or(0, |p| p + 1);
            m.insert(el[start..el.len() - 2].to_vec(), i);
        }
        assert_eq!(c.cmd(&[b"FLUSHALL"]), b"+OK\r\n");
    }
    m
}

#[test]
fn every_hash_and_distribution_places_keys_like_nutcracker() {
    let (a, b, c) = (redis(), redis(), redis());
    let backends = [&a, &b, &c];
    let pools = pools(&backends);
    let nc_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sp_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let nc_placement = {
        let nd = nc_dir.path().to_path_buf();
        let pl = pools.clone();
        let nc = support::nutcracker(&move |port| yaml(&nd, port, &pl));
        std::thread::sleep(std::time::Duration::from_millis(200));
        set_all(nc_dir.path(), &pools);
        drop(nc);
        placement(&backends)
    };
    let sp_placement = {
        let sd = sp_dir.path().to_path_buf();
        let pl = pools.clone();
        let sp = support::shardproxy(&move |port| yaml(&sd, port, &pl), &[]);
        std::thread::sleep(std::time::Duration::from_millis(200));
        set_all(sp_dir.path(), &pools);
        drop(sp);
        placement(&backends)
    };
    assert_eq!(nc_placement.len(), pools.len() * 40);
    let used: std::collections::BTreeSet<usize> = nc_placement.values().copied().collect();
    assert_eq!(used.len(), 3, "the keys should reach every backend");
    let diffs: Vec<String> = nc_placement
        .iter()
        .filter(|(k, v)| sp_placement.get(*k) != Some(v))
        .map(|(k, v)| {
            format!(
                "{:?}: nutcracker {v}, shardproxy {:?}",
                String::from_utf8_lossy(k),
                sp_placement.get(k)
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{} of {} keys placed differently:\n{}",
        diffs.len(),
        nc_placement.len(),
        diffs.join("\n")
    );
    assert_eq!(sp_placement.len(), nc_placement.len());
}
