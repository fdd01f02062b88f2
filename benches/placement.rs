//! Key placement costs: each hash function per key, hash + dispatch per key
//! for each distribution (through the `Router`, as the data path calls it),
//! and ketama's continuum build for 1,000 servers (what an ejection or a
//! restore costs).
//!
//! Run: `cargo bench --bench placement` (criterion; results in
//! target/criterion). Numbers depend on the machine: compare runs on one
//! machine, never against a fixed figure.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardproxy::dist::{strategy, Node};
use shardproxy::hash::HashFn;
use shardproxy::route::Router;
use std::hint::black_box;

fn keys() -> Vec<Vec<u8>> {
    (0..1024)
        .map(|i| format!("user:{i}:session:{:x}", i * 2_654_435_761u64).into_bytes())
        .collect()
}

fn nodes(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| Node {
            index: i,
            name: format!("10.0.{}.{}:6379", i / 250, i % 250),
            named: false,
            weight: 1 + (i % 3) as u32,
        })
        .collect()
}

fn hashes(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Elements(keys.len() as u64));
    for (h, _) in HashFn::ALL {
        g.bench_function(h.name(), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for k in &keys {
                    acc ^= h.hash(black_box(k));
                }
                acc
            })
        });
    }
    g.finish();
}

fn dispatch(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(keys.len() as u64));
    for dist in ["ketama", "modula", "random"] {
        for h in [HashFn::Fnv1a_64, HashFn::Md5, HashFn::Murmur] {
            let Some(s) = strategy(dist) else { continue };
            let router = Router::new(s, h, Some(*b"{}"), nodes(16), None);
            g.bench_function(format!("{dist}/{}/16 servers", h.name()), |b| {
                b.iter(|| {
                    let mut acc = 0usize;
                    for k in &keys {
                        acc ^= router.dispatch(black_box(k)).unwrap_or(0);
                    }
                    acc
                })
            });
        }
    }
    if let Some(s) = strategy("server_name") {
        let named: Vec<Node> = (0..16)
            .map(|i| Node {
                index: i,
                name: format!("r{i}"),
                named: true,
                weight: 1,
            })
            .collect();
        let router = Router::new(s, HashFn::Fnv1a_64, None, named, None);
        let keys: Vec<Vec<u8>> = (0..1024)
            .map(|i| format!("r{}:user:{i}", i % 16).into_bytes())
            .collect();
        g.bench_function("server_name/16 servers", |b| {
            b.iter(|| {
                let mut acc = 0usize;
                for k in &keys {
                    acc ^= router.dispatch(black_box(k)).unwrap_or(0);
                }
                acc
            })
        });
    }
    g.finish();
}

fn ketama_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("ketama build");
    g.sample_size(20);
    let Some(s) = strategy("ketama") else { return };
    for n in [10usize, 1000] {
        g.bench_function(format!("{n} servers"), |b| {
            b.iter_batched(
                || nodes(n),
                |nodes| Router::new(s, HashFn::Md5, None, nodes, None),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, hashes, dispatch, ketama_build);
criterion_main!(benches);
