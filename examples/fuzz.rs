//! A bounded, structure-aware fuzzer on stable Rust for everything that reads
//! bytes from the network or a file: both request scanners, both reply
//! scanners, the config loader, and the merge of fragment replies (`bench/fuzz`
//! runs it; `scripts/test` runs a short round).
//!
//! Inputs are valid messages from a seed corpus, mutated (bit flips, byte
//! insertions and deletions, truncation, splicing two seeds, numbers replaced
//! by huge, negative or malformed ones) or, sometimes, random bytes. Each input
//! is checked for:
//!
//! * no panic (every target runs under `catch_unwind`);
//! * no large allocation: a counting global allocator records the biggest
//!   single allocation while a target runs, which must stay below 1 MiB +
//!   64 × the input size (a declared length never turns into an allocation);
//! * scanner consistency: a `Complete(n)` has `1 ≤ n ≤ len`, and every strict
//!   prefix of those `n` bytes scans as `Incomplete` (a message cannot end
//!   before its end, however the bytes are split by the network).
//!
//! ```text
//! cargo run --release --example fuzz -- --seconds 60 [--seed N] [--out DIR]
//! ```
//! Prints inputs tried per target, crashes and violations; exits 1 on any,
//! saving each offending input to `--out` (default `target/fuzz-crashes`).

#![allow(unsafe_code)]

use bytes::Bytes;
use shardproxy::conf::Conf;
use shardproxy::proto::redis::Fragment;
use shardproxy::proto::{memcache, redis, Scan};
use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The system allocator, recording the largest single allocation.
struct Counting;

static BIGGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the only
// addition is a relaxed atomic update.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BIGGEST.fetch_max(l.size(), Relaxed);
        // SAFETY: same layout, as the caller guarantees for `alloc`.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by `System` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        BIGGEST.fetch_max(l.size(), Relaxed);
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        BIGGEST.fetch_max(new, Relaxed);
        // SAFETY: `p` was allocated by `System` with layout `l`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const REDIS_REQUESTS: &[&[u8]] = &[
    b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n",
    b"*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
    b"PING\r\n",
    b"SET k \"quoted value\"\r\n",
    b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$0\r\n\r\n",
    b"*0\r\n",
    b"*-1\r\n",
    b"*3\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\n0\r\n",
];

const REDIS_REPLIES: &[&[u8]] = &[
    b"+OK\r\n",
    b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n",
    b"*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$1\r\nx\r\n",
    b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n",
    b"$77\r\n# Server\r\nredis_version:7.0.1\r\n\r\n# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n\r\n",
    b"*2\r\n:1\r\n:0\r\n",
    b"*2\r\n$1\r\nc\r\n:3\r\n",
    b"-ERR wrong\r\n",
    b":12345\r\n",
    b"$5\r\nhello\r\n",
    b"$-1\r\n",
    b"*2\r\n$1\r\na\r\n$-1\r\n",
    b"*3\r\n:1\r\n*1\r\n+x\r\n$0\r\n\r\n",
    b"%1\r\n+k\r\n:1\r\n",
    b"~2\r\n_\r\n#t\r\n",
    b",3.14\r\n(12345678901234567890\r\n",
    b"=15\r\ntxt:Some string\r\n",
    b"|1\r\n+a\r\n+b\r\n:1\r\n",
    b">2\r\n+message\r\n+x\r\n",
    b"!5\r\nerror\r\n",
];

const MC_REQUESTS: &[&[u8]] = &[
    b"get k\r\n",
    b"get a b c a\r\n",
    b"gets a b\r\n",
    b"gat 100 a b\r\n",
    b"set k 0 0 5\r\nhello\r\n",
    b"set k 1 2 3 noreply\r\nabc\r\n",
    b"cas k 0 0 1 99\r\nx\r\n",
    b"append k 0 0 1\r\nx\r\n",
    b"incr k 5\r\n",
    b"decr k 1 noreply\r\n",
    b"touch k 10\r\n",
    b"delete k\r\n",
    b"delete k 0\r\n",
    b"version\r\n",
    b"verbosity 1\r\n",
    b"quit\r\n",
    b"ms k 2\r\nhi\r\n",
    b"ms k 2 q T0 F5 O9\r\nhi\r\n",
    b"mg k v f k q O123\r\n",
    b"mg aGVsbG8= b v\r\n",
    b"md k q\r\nma n N0 J5 v\r\nmn\r\n",
    b"me k\r\n",
    b"stats\r\n",
];

const MC_REPLIES: &[&[u8]] = &[
    b"VALUE k 0 5\r\nhello\r\nEND\r\n",
    b"VALUE a 1 1 7\r\nx\r\nVALUE b 0 0\r\n\r\nEND\r\n",
    b"END\r\n",
    b"STORED\r\n",
    b"NOT_STORED\r\n",
    b"EXISTS\r\n",
    b"NOT_FOUND\r\n",
    b"DELETED\r\n",
    b"TOUCHED\r\n",
    b"42\r\n",
    b"ERROR\r\n",
    b"CLIENT_ERROR bad data chunk\r\n",
    b"SERVER_ERROR out of memory\r\n",
    b"VERSION 1.6.18\r\n",
    b"VA 2 f5 kk O123\r\nhi\r\n",
    b"HD c8\r\n",
    b"EN\r\n",
    b"NF\r\nMN\r\n",
    b"ME k exp=-1 la=3 cas=2 fetch=no cls=1 size=63\r\n",
];

/// Binary packets: getkq, set with extras, noop; a get reply, a miss.
const MC_BINARY_REQUESTS: &[&[u8]] = &[
    b"\x80\x0d\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x00k",
    b"\x80\x01\x00\x01\x08\x00\x00\x00\x00\x00\x00\x0b\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\xde\xad\xbe\xef\x00\x00\x00\x00kvv",
    b"\x80\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x09\x00\x00\x00\x00\x00\x00\x00\x00",
];

const MC_BINARY_REPLIES: &[&[u8]] = &[
    b"\x81\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00hi",
    b"\x81\x0d\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x00Not found",
];

const CONFS: &[&str] = &[
    "alpha:\n  listen: 127.0.0.1:22121\n  hash: fnv1a_64\n  distribution: ketama\n  auto_eject_hosts: true\n  redis: true\n  server_retry_timeout: 2000\n  server_failure_limit: 1\n  servers:\n   - 127.0.0.1:6379:1\n",
    "beta:\n  listen: 127.0.0.1:22122\n  hash: fnv1a_64\n  hash_tag: \"{}\"\n  distribution: ketama\n  auto_eject_hosts: false\n  timeout: 400\n  redis: true\n  servers:\n   - 127.0.0.1:6380:1 server1\n   - 127.0.0.1:6381:1 server2\n",
    "gamma:\n  listen: /tmp/gamma.sock 0666\n  hash: murmur\n  distribution: modula\n  preconnect: true\n  server_connections: 4\n  servers:\n   - 127.0.0.1:11212:1\n   - 127.0.0.1:11213:2\n",
    "delta:\n  listen: 0.0.0.0:22124\n  distribution: server_name\n  redis: true\n  redis_auth: secret\n  redis_db: 3\n  servers:\n   - 127.0.0.1:6379:1 r1\n   - [::1]:6380:1 r2\n",
];

const NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"-2",
    b"4294967296",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"2147483647",
    b"536870912",
    b"1073741825",
    b"+5",
    b" 5",
    b"0x10",
    b"",
];

/// One random change to `b`.
fn mutate(r: &mut Rng, b: &mut Vec<u8>, seeds: &[&[u8]]) {
    match r.below(8) {
        0 if !b.is_empty() => {
            let i = r.below(b.len());
            b[i] ^= 1 << r.below(8);
        }
        1 => {
            let i = r.below(b.len() + 1);
            let c = *r.pick(b"\r\n $*:+-0123456789abc\x00\xff");
            b.insert(i, c);
        }
        2 if !b.is_empty() => {
            let i = r.below(b.len());
            let n = r.below(8).min(b.len() - i);
            b.drain(i..i + n);
        }
        3 => {
            let n = r.below(b.len() + 1);
            b.truncate(n);
        }
        4 => {
            let other = r.pick(seeds);
            let cut = r.below(b.len() + 1);
            let from = r.below(other.len() + 1);
            b.truncate(cut);
            b.extend_from_slice(&other[from..]);
        }
        5 => {
            // Replace a run of digits with a hostile number.
            let digits: Vec<usize> = (0..b.len()).filter(|&i| b[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                let start = *r.pick(&digits);
                let mut end = start;
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                }
                let n = r.pick(NUMBERS);
                b.splice(start..end, n.iter().copied());
            }
        }
        6 => {
            let other = r.pick(seeds);
            b.extend_from_slice(other);
        }
        _ => {
            let i = r.below(b.len() + 1);
            let n = r.below(16);
            let junk: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
            b.splice(i..i, junk);
        }
    }
}

/// A mutated message that its scanner still takes as exactly one complete
/// message (what the proxy hands to the merge code), else a seed.
fn complete<E>(r: &mut Rng, seeds: &[&[u8]], scan: fn(&[u8]) -> Result<Scan, E>) -> Vec<u8> {
    let whole = |b: &[u8]| matches!(scan(b), Ok(Scan::Complete(n)) if n == b.len());
    let b = input(r, seeds);
    if whole(&b) {
        return b;
    }
    // A seed that is one whole message (some seeds are two, or a prefix).
    let ones: Vec<&[u8]> = seeds.iter().copied().filter(|s| whole(s)).collect();
    r.pick(&ones).to_vec()
}

fn input(r: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
    if r.below(32) == 0 {
        let n = r.below(64);
        return (0..n).map(|_| r.next() as u8).collect();
    }
    let mut b = r.pick(seeds).to_vec();
    for _ in 0..1 + r.below(4) {
        mutate(r, &mut b, seeds);
    }
    b
}

/// Checks a scanner's result on `buf` and on the prefixes of a complete
/// message.
fn check_scan<E>(buf: &[u8], scan: &mut dyn FnMut(&[u8]) -> Result<Scan, E>) -> Result<(), String> {
    if let Ok(Scan::Complete(n)) = scan(buf) {
        if n == 0 || n > buf.len() {
            return Err(format!("Complete({n}) for {} bytes", buf.len()));
        }
        for k in 0..n {
            match scan(&buf[..k]) {
                Ok(Scan::Incomplete { .. }) => {}
                Ok(Scan::Complete(m)) => {
                    return Err(format!(
                        "prefix of {k} bytes is Complete({m}), the whole is Complete({n})"
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "prefix of {k} bytes is an error, the whole is Complete({n})"
                    ))
                }
            }
        }
    }
    Ok(())
}

const TARGETS: [&str; 9] = [
    "redis request",
    "redis reply",
    "memcache request",
    "memcache reply",
    "config",
    "redis merge",
    "memcache merge",
    "memcache binary request",
    "memcache binary reply",
];

/// Runs target `t` on a fresh input; returns the input and any violation.
fn run_one(
    r: &mut Rng,
    t: usize,
    args: &mut Vec<std::ops::Range<usize>>,
    req: &mut memcache::Request,
) -> (Vec<u8>, Result<(), String>) {
    match t {
        0 => {
            let b = input(r, REDIS_REQUESTS);
            let limits = redis::Limits::default();
            let v = check_scan(&b, &mut |x| redis::scan_request(x, &limits, args));
            (b, v)
        }
        1 => {
            let b = input(r, REDIS_REPLIES);
            let mut v = check_scan(&b, &mut redis::reply::scan_reply);
            // A subscribed connection's frames: the same scanner with pushes,
            // then classified.
            if v.is_ok() {
                v = check_scan(&b, &mut redis::reply::scan_frame);
                if let Ok(Scan::Complete(n)) = redis::reply::scan_frame(&b) {
                    let _ = redis::pubsub::frame(&b[..n]);
                }
            }
            if v.is_ok() {
                if let Ok(Scan::Complete(n)) = redis::reply::scan_reply(&b) {
                    let mut elems = Vec::new();
                    if redis::reply::array_elements(&b[..n], &mut elems).is_ok()
                        && elems.iter().any(|e| e.end > n)
                    {
                        v = Err("array element beyond the reply".into());
                    }
                    let _ = redis::reply::integer(&b[..n]);
                }
            }
            (b, v)
        }
        2 => {
            let b = input(r, MC_REQUESTS);
            let limits = memcache::Limits::default();
            let v = check_scan(&b, &mut |x| memcache::scan_request(x, &limits, req));
            (b, v)
        }
        3 => {
            let b = input(r, MC_REPLIES);
            let mut v = check_scan(&b, &mut memcache::scan_reply);
            if v.is_ok() {
                if let Ok(Scan::Complete(n)) = memcache::scan_reply(&b) {
                    let mut vals = Vec::new();
                    if memcache::values(&b[..n], &mut vals).is_ok()
                        && vals.iter().any(|x| x.block.end > n || x.key.end > n)
                    {
                        v = Err("VALUE block beyond the reply".into());
                    }
                }
            }
            (b, v)
        }
        4 => {
            let seeds: Vec<&[u8]> = CONFS.iter().map(|c| c.as_bytes()).collect();
            let b = input(r, &seeds);
            let text = String::from_utf8_lossy(&b);
            let _ = Conf::parse("fuzz.yml", &text);
            (b, Ok(()))
        }
        5 => {
            // Two parts' replies (possibly mangled), keys assigned to parts.
            let kind = *r.pick(&[
                Fragment::Mget,
                Fragment::Sum,
                Fragment::Mset,
                Fragment::AllOk,
                Fragment::AnyOk,
                Fragment::Same,
                Fragment::Concat,
                Fragment::And,
                Fragment::PairSum,
                Fragment::Random,
                Fragment::Min,
                Fragment::Info { clients: 3 },
                Fragment::Scan {
                    server: 1,
                    servers: 3,
                },
            ]);
            let a = complete(r, REDIS_REPLIES, redis::reply::scan_reply);
            let c = complete(r, REDIS_REPLIES, redis::reply::scan_reply);
            let order: Vec<u32> = (0..r.below(8)).map(|_| r.below(2) as u32).collect();
            let out = shardproxy::client::redis::merge(
                kind,
                &[Bytes::from(a.clone()), Bytes::from(c)],
                &order,
            );
            let v = match redis::reply::scan_reply(&out) {
                Ok(Scan::Complete(n)) if n == out.len() => Ok(()),
                other => Err(format!("merged reply is not one RESP message: {other:?}")),
            };
            (a, v)
        }
        7 => {
            let b = input(r, MC_BINARY_REQUESTS);
            let v = check_scan(&b, &mut |x| {
                memcache::binary::scan_request(x, 1 << 20).and_then(|(s, h)| match (s, h) {
                    // A complete packet is exactly its header's length.
                    (Scan::Complete(n), Some(h)) if h.packet_len() != n => {
                        Err(memcache::binary::Bad::Magic)
                    }
                    (Scan::Complete(_), None) => Err(memcache::binary::Bad::Magic),
                    _ => Ok(s),
                })
            });
            (b, v)
        }
        8 => {
            let b = input(r, MC_BINARY_REPLIES);
            let mut v = check_scan(&b, &mut memcache::binary::scan_reply);
            if v.is_ok() {
                if let Ok(Scan::Complete(n)) = memcache::binary::scan_reply(&b) {
                    let _ = memcache::binary::suppressed(0x0d, &b[..n]);
                    if memcache::binary::with_opcode(&b[..n], 0x09).len() != n {
                        v = Err("opcode rewrite changed the length".into());
                    }
                }
            }
            (b, v)
        }
        _ => {
            let keys_req = input(r, &[b"get a b c d\r\n", b"gets k1 k2\r\n"]);
            let nkeys = r.below(6);
            let keys: Vec<std::ops::Range<usize>> = (0..nkeys)
                .map(|_| {
                    let s = r.below(keys_req.len() + 1);
                    s..(s + r.below(4)).min(keys_req.len())
                })
                .collect();
            let order: Vec<u32> = (0..nkeys).map(|_| r.below(2) as u32).collect();
            let a = complete(r, MC_REPLIES, memcache::scan_reply);
            let c = complete(r, MC_REPLIES, memcache::scan_reply);
            let out = shardproxy::client::memcache::merge(
                &keys_req,
                &keys,
                &[Bytes::from(a.clone()), Bytes::from(c)],
                &order,
            );
            let v = match memcache::scan_reply(&out) {
                Ok(Scan::Complete(n)) if n == out.len() => Ok(()),
                other => Err(format!("merged reply is not one memcache reply: {other:?}")),
            };
            (a, v)
        }
    }
}

fn main() {
    let mut seconds = 10u64;
    let mut seed = 0x5eed_u64;
    let mut out_dir = std::path::PathBuf::from("target/fuzz-crashes");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_default();
        match flag.as_str() {
            "--seconds" => seconds = v.parse().unwrap_or(seconds),
            "--seed" => seed = v.parse().unwrap_or(seed),
            "--out" => out_dir = v.into(),
            _ => {
                eprintln!("usage: fuzz [--seconds N] [--seed N] [--out DIR]");
                std::process::exit(2);
            }
        }
    }
    // Mangled host names in configs go to the resolver: keep a lookup short
    // on machines without DNS (glibc reads this at its first lookup).
    std::env::set_var("RES_OPTIONS", "timeout:1 attempts:1");
    // Panics are counted, not printed one by one.
    std::panic::set_hook(Box::new(|_| {}));
    let mut r = Rng(seed | 1);
    let mut tried = [0u64; TARGETS.len()];
    let mut spent = [Duration::ZERO; TARGETS.len()];
    let mut failures: Vec<(usize, String, Vec<u8>)> = Vec::new();
    let mut args = Vec::new();
    let mut req = memcache::Request::default();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut i = 0u64;
    while Instant::now() < end {
        for _ in 0..1000 {
            // The config loader resolves host names (getaddrinfo), which is
            // slow for mangled names: it gets a fifth of the time at most.
            let config_due = spent[4] < start.elapsed() / 5;
            let n = TARGETS.len() as u64;
            let t = if i % n == 4 && !config_due {
                [0, 1, 2, 3, 5, 6, 7, 8][(i / n % 8) as usize]
            } else {
                (i % n) as usize
            };
            i += 1;
            BIGGEST.store(0, Relaxed);
            let mut rng = Rng(r.next() | 1);
            let t0 = Instant::now();
            let res = catch_unwind(AssertUnwindSafe(|| {
                run_one(&mut rng, t, &mut args, &mut req)
            }));
            spent[t] += t0.elapsed();
            tried[t] += 1;
            let (input, verdict) = match res {
                Ok((b, v)) => (b, v),
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    (Vec::new(), Err(format!("panic: {msg}")))
                }
            };
            let biggest = BIGGEST.load(Relaxed);
            let verdict = verdict.and_then(|()| {
                if biggest > (1 << 20) + 64 * input.len().max(64) {
                    Err(format!(
                        "allocated {biggest} bytes at once for a {}-byte input",
                        input.len()
                    ))
                } else {
                    Ok(())
                }
            });
            if let Err(why) = verdict {
                if failures.len() < 100 {
                    failures.push((t, why, input));
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let total: u64 = tried.iter().sum();
    println!(
        "fuzz: {total} inputs in {secs:.1} s ({:.0}/s), seed {seed}",
        total as f64 / secs
    );
    for ((t, n), d) in TARGETS.iter().zip(tried).zip(spent) {
        println!("  {t:<18} {n:>12} inputs {:>8.2} s", d.as_secs_f64());
    }
    if failures.is_empty() {
        println!("0 crashes, 0 violations");
        return;
    }
    let _ = std::fs::create_dir_all(&out_dir);
    for (k, (t, why, input)) in failures.iter().enumerate() {
        let path = out_dir.join(format!("{k}-{}.bin", TARGETS[*t].replace(' ', "-")));
        let _ = std::fs::write(&path, input);
        println!("FAIL {}: {why} ({})", TARGETS[*t], path.display());
    }
    std::process::exit(1);
}
