//! The request path before any I/O, per request: scan the RESP request, look
//! the command up in the table, check its arity, find its keys (the
//! single-key fast path, or the key specs) and route every key — for `GET`,
//! for `MGET` of 10 keys, and for `LMOVE` (two keys that must share a server).
//!
//! Run: `cargo bench --bench commands`. Compare runs on one machine only.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardproxy::dist::{strategy, Node};
use shardproxy::hash::HashFn;
use shardproxy::proto::redis::keys::{find, KeyPositions};
use shardproxy::proto::redis::{lookup, scan_request, KeyShape, Limits, Route};
use shardproxy::proto::Scan;
use shardproxy::route::Router;
use std::hint::black_box;
use std::ops::Range;

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Scans every request of `wire`, and routes each: the server of every key.
fn route_all(wire: &[u8], router: &Router, args: &mut Vec<Range<usize>>) -> usize {
    let limits = Limits::default();
    let mut pos = 0;
    let mut acc = 0;
    let mut keys = KeyPositions::new();
    while pos < wire.len() {
        let buf = &wire[pos..];
        let Ok(Scan::Complete(n)) = scan_request(buf, &limits, args) else {
            break;
        };
        let Some(cmd) = lookup(&buf[args[0].clone()]) else {
            break;
        };
        if !cmd.accepts(args.len()) {
            break;
        }
        let routing = router.routing();
        if let Route::Split(_) = cmd.route {
            // Split commands route every key argument (MGET; MSET's keys
            // are every other one).
            for a in &args[1..] {
                acc += routing.dispatch(&buf[a.clone()]).unwrap_or(0);
            }
            pos += n;
            continue;
        }
        match cmd.keys {
            KeyShape::Single(p) => acc += routing.dispatch(&buf[args[p].clone()]).unwrap_or(0),
            KeyShape::Specs => {
                keys.clear();
                let _ = find(
                    cmd.spec,
                    args.len(),
                    |i| &buf[args[i].clone()],
                    true,
                    &mut keys,
                );
                for &k in &keys {
                    acc += routing
                        .dispatch(&buf[args[k as usize].clone()])
                        .unwrap_or(0);
                }
            }
            KeyShape::None => {}
        }
        pos += n;
    }
    acc
}

fn request_path(c: &mut Criterion) {
    let nodes: Vec<Node> = (0..3)
        .map(|i| Node {
            index: i,
            name: format!("127.0.0.1:{}", 6379 + i),
            named: false,
            weight: 1,
        })
        .collect();
    let Some(ketama) = strategy("ketama") else {
        return;
    };
    let router = Router::new(ketama, HashFn::Fnv1a_64, None, nodes, None);
    let keys: Vec<String> = (0..10).map(|i| format!("user:{i}:session")).collect();
    let k: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mget: Vec<&str> = std::iter::once("MGET").chain(k.iter().copied()).collect();
    let cases: [(&str, Vec<u8>); 3] = [
        ("GET", resp(&["GET", k[0]])),
        ("MGET 10", resp(&mget)),
        ("LMOVE", resp(&["LMOVE", k[0], k[1], "LEFT", "RIGHT"])),
    ];
    let mut g = c.benchmark_group("request path");
    for (name, one) in cases {
        let wire = one.repeat(16);
        g.throughput(Throughput::Elements(16));
        let mut args = Vec::new();
        g.bench_function(format!("{name} ×16: scan, lookup, keys, route"), |b| {
            b.iter(|| route_all(black_box(&wire), &router, &mut args))
        });
    }
    g.finish();
}

criterion_group!(benches, request_path);
criterion_main!(benches);
