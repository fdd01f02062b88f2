//! Golden vectors from `shared/reference/hash-vectors.json` (a copy is vendored in
//! `tests/data/` so a clone without `shared/` still tests): every hash value, the
//! server order of every pool, the full continuum of pool `alpha`, the weight
//! edge case, the hash-tag cases and every observed key → server mapping of the
//! live nutcracker 0.5.0 binary.

use serde_json::Value;
use shardproxy::conf::Conf;
use shardproxy::dist::ketama::{points_for, Ketama};
use shardproxy::hash::HashFn;
use shardproxy::route::{route_key, Router};

fn vectors() -> Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let shared = format!("{root}/../shared/reference/hash-vectors.json");
    let vendored = format!("{root}/tests/data/hash-vectors.json");
    let path = if std::path::Path::new(&shared).exists() {
        shared
    } else {
        vendored
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}

#[test]
fn every_hash_vector() {
    let v = vectors();
    let mut checked = 0;
    for row in v["hash_vectors"].as_array().into_iter().flatten() {
        let key = hex(row["key_hex"].as_str().unwrap_or_default());
        for (name, want) in row["hashes"].as_object().into_iter().flatten() {
            let f: HashFn = name
                .parse()
                .unwrap_or_else(|_| panic!("unknown hash {name}"));
            assert_eq!(
                u64::from(f.hash(&key)),
                want.as_u64().unwrap_or(u64::MAX),
                "{name}({:?})",
                row["key_hex"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 12 * 19, "only {checked} values checked");
}

#[test]
fn every_pool_orders_and_maps_like_nutcracker() {
    let v = vectors();
    let pools = v["pools"].as_array().cloned().unwrap_or_default();
    assert_eq!(pools.len(), 5);
    let mut mapped = 0;
    for p in &pools {
        let name = p["pool"].as_str().unwrap_or_default();
        let conf = Conf::parse(name, p["config_yaml"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        let pool = &conf.pools[0];
        let order: Vec<&str> = p["server_order"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["name"].as_str().unwrap_or_default())
            .collect();
        let ours: Vec<&str> = pool.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(ours, order, "server order of {name}");
        if let Some(pps) = p["points_per_server"].as_object() {
            let total: u32 = pool.servers.iter().map(|s| s.weight).sum();
            for s in &pool.servers {
                let want = pps[&s.name].as_u64().unwrap_or(u64::MAX);
                assert_eq!(
                    u64::from(points_for(s.weight, total, pool.servers.len() as u32)),
                    want,
                    "{name}/{}",
                    s.name
                );
            }
        }
        let router = Router::new(
            pool.distribution,
            pool.hash,
            pool.hash_tag,
            pool.nodes(),
            None,
        );
        for m in p["mapping"].as_array().into_iter().flatten() {
            let key = m["key"].as_str().unwrap_or_default().as_bytes();
            let part = route_key(pool.hash_tag, key);
            assert_eq!(
                part.bytes,
                m["hashed_part"].as_str().unwrap_or_default().as_bytes(),
                "{name}: hashed part"
            );
            if let Some(h) = m["hash"].as_u64() {
                assert_eq!(
                    u64::from(pool.hash.hash(part.bytes)),
                    h,
                    "{name}: hash of {:?}",
                    m["key"]
                );
            }
            let idx = router.dispatch(key).unwrap_or(usize::MAX);
            assert_eq!(
                idx as u64,
                m["server_index"].as_u64().unwrap_or(u64::MAX),
                "{name}: {:?}",
                m["key"]
            );
            assert_eq!(
                pool.servers[idx].name,
                m["server"].as_str().unwrap_or_default()
            );
            mapped += 1;
        }
    }
    assert_eq!(mapped, 100);
}

#[test]
fn alpha_continuum_point_for_point() {
    let v = vectors();
    let alpha = &v["pools"][0];
    let conf = Conf::parse("alpha", alpha["config_yaml"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let k = Ketama::new(conf.pools[0].hash, &conf.pools[0].nodes());
    let want = v["ketama_continuum_alpha"]["points"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(k.points().len(), want.len());
    for (ours, w) in k.points().iter().zip(&want) {
        assert_eq!(u64::from(ours.value), w[0].as_u64().unwrap_or(u64::MAX));
        assert_eq!(u64::from(ours.index), w[1].as_u64().unwrap_or(u64::MAX));
    }
}

#[test]
fn weight_edge_case_and_ketama_samples() {
    let v = vectors();
    let e = &v["weight_edge_case"];
    let servers = e["servers"].as_array().cloned().unwrap_or_default();
    let weights: Vec<u32> = servers
        .iter()
        .map(|s| s[1].as_u64().unwrap_or(0) as u32)
        .collect();
    let total: u32 = weights.iter().sum();
    for (s, w) in servers.iter().zip(&weights) {
        let name = s[0].as_str().unwrap_or_default();
        let want = e["points_per_server"][name].as_u64().unwrap_or(u64::MAX);
        assert_eq!(
            u64::from(points_for(*w, total, weights.len() as u32)),
            want,
            "{name}"
        );
    }
    for s in v["ketama_hash_samples"].as_array().into_iter().flatten() {
        let d = shardproxy::hash::md5_digest(s["string"].as_str().unwrap_or_default().as_bytes());
        let a = s["alignment"].as_u64().unwrap_or(0) as usize;
        let got = u32::from_le_bytes([d[4 * a], d[4 * a + 1], d[4 * a + 2], d[4 * a + 3]]);
        assert_eq!(u64::from(got), s["value"].as_u64().unwrap_or(u64::MAX));
    }
}

#[test]
fn every_hash_tag_case() {
    let v = vectors();
    let cases = v["hash_tag_cases"].as_array().cloned().unwrap_or_default();
    assert!(cases.len() >= 19);
    for c in cases {
        let tag = c["hash_tag"].as_str().unwrap_or_default().as_bytes();
        let tag = [tag[0], tag[1]];
        let key = c["key"].as_str().unwrap_or_default();
        assert_eq!(
            route_key(Some(tag), key.as_bytes()).bytes,
            c["hashed_part"].as_str().unwrap_or_default().as_bytes(),
            "{key}"
        );
    }
}
