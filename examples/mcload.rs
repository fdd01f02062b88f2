//! A memcache load generator for `bench/run` (redis-benchmark speaks only
//! redis): `--clients` connections spread over `--threads` threads, each
//! sending `--pipeline` requests at a time and reading every reply before the
//! next batch, until `--requests` requests are done or `--seconds` pass.
//!
//! ```text
//! cargo run --release --example mcload -- --port 11211 --op get --requests 100000
//! ```
//!
//! Prints one JSON line: `{"rps":…, "p50_ms":…, "p99_ms":…, "requests":…, "errors":…}`
//! (latency is per batch: from writing it to its last reply). Loopback only.

use shardproxy::proto::memcache::scan_reply;
use shardproxy::proto::Scan;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Args {
    port: u16,
    op: String,
    clients: usize,
    threads: usize,
    requests: u64,
    pipeline: usize,
    size: usize,
    keys: u64,
    seconds: u64,
    /// `--protocol binary`: memcache's binary protocol (get, set).
    binary: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        port: 0,
        op: "get".into(),
        clients: 50,
        threads: 2,
        requests: 100_000,
        pipeline: 1,
        size: 100,
        keys: 10_000,
        seconds: 60,
        binary: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--port" => a.port = num(&v)? as u16,
            "--op" => a.op = v,
            "--clients" => a.clients = num(&v)? as usize,
            "--threads" => a.threads = num(&v)? as usize,
            "--requests" => a.requests = num(&v)?,
            "--pipeline" => a.pipeline = num(&v)? as usize,
            "--size" => a.size = num(&v)? as usize,
            "--keys" => a.keys = num(&v)?,
            "--seconds" => a.seconds = num(&v)?,
            "--protocol" => a.binary = v == "binary",
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.port == 0 || !matches!(a.op.as_str(), "get" | "set") {
        return Err("usage: mcload --port N [--op get|set] [--clients 50] [--threads 2] [--requests 100000] [--pipeline 1] [--size 100] [--keys 10000] [--seconds 60] [--protocol ascii|binary]".into());
    }
    a.clients = a.clients.max(1);
    a.threads = a.threads.clamp(1, a.clients);
    a.pipeline = a.pipeline.max(1);
    Ok(a)
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

/// Reads `n` complete replies; returns how many were errors.
fn read_replies(c: &mut Conn, n: usize, binary: bool) -> std::io::Result<u64> {
    let mut errors = 0;
    let mut done = 0;
    let mut chunk = vec![0u8; 256 * 1024];
    while done < n {
        let scanned = if binary {
            shardproxy::proto::memcache::binary::scan_reply(&c.buf)
        } else {
            scan_reply(&c.buf)
        };
        match scanned {
            Ok(Scan::Complete(len)) => {
                let r = &c.buf[..len];
                let failed = if binary {
                    // Not OK and not a miss.
                    !matches!(
                        shardproxy::proto::memcache::binary::reply_status(r),
                        Some(0 | 1)
                    )
                } else {
                    r.starts_with(b"SERVER_ERROR")
                        || r.starts_with(b"CLIENT_ERROR")
                        || r.starts_with(b"ERROR")
                };
                if failed {
                    errors += 1;
                }
                c.buf.drain(..len);
                done += 1;
                continue;
            }
            Ok(Scan::Incomplete { .. }) => {}
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "bad reply",
                ))
            }
        }
        let k = c.s.read(&mut chunk)?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        c.buf.extend_from_slice(&chunk[..k]);
    }
    Ok(errors)
}

fn worker(a: &Args, conns: usize, budget: u64, seed: u64) -> std::io::Result<(u64, u64, Vec<f64>)> {
    let mut cs = Vec::with_capacity(conns);
    for _ in 0..conns {
        let s = TcpStream::connect(("127.0.0.1", a.port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        cs.push(Conn { s, buf: Vec::new() });
    }
    let value = vec![b'x'; a.size];
    let end = Instant::now() + Duration::from_secs(a.seconds);
    let mut rng = seed | 1;
    let (mut sent, mut errors) = (0u64, 0u64);
    let mut lat = Vec::new();
    let mut req = Vec::with_capacity(a.pipeline * (a.size + 64));
    while sent < budget && Instant::now() < end {
        let mut started = Vec::with_capacity(cs.len());
        let mut batches = Vec::with_capacity(cs.len());
        for c in cs.iter_mut() {
            let n = a.pipeline.min((budget - sent) as usize);
            if n == 0 {
                break;
            }
            req.clear();
            for _ in 0..n {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let key = rng % a.keys.max(1);
                if a.binary {
                    let k = format!("key:{key:012}");
                    let get = a.op == "get";
                    let extras: &[u8] = if get { &[] } else { &[0; 8] };
                    let val: &[u8] = if get { &[] } else { &value };
                    let body = extras.len() + k.len() + val.len();
                    req.extend_from_slice(&[0x80, if get { 0x00 } else { 0x01 }]);
                    req.extend_from_slice(&(k.len() as u16).to_be_bytes());
                    req.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
                    req.extend_from_slice(&(body as u32).to_be_bytes());
                    req.extend_from_slice(&[0; 12]);
                    req.extend_from_slice(extras);
                    req.extend_from_slice(k.as_bytes());
                    req.extend_from_slice(val);
                } else if a.op == "get" {
                    req.extend_from_slice(format!("get key:{key:012}\r\n").as_bytes());
                } else {
                    req.extend_from_slice(
                        format!("set key:{key:012} 0 0 {}\r\n", a.size).as_bytes(),
                    );
                    req.extend_from_slice(&value);
                    req.extend_from_slice(b"\r\n");
                }
            }
            c.s.write_all(&req)?;
            started.push(Instant::now());
            batches.push(n);
            sent += n as u64;
        }
        for (i, c) in cs.iter_mut().enumerate().take(batches.len()) {
            errors += read_replies(c, batches[i], a.binary)?;
            lat.push(started[i].elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok((sent, errors, lat))
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let t0 = Instant::now();
    let results: Vec<std::io::Result<(u64, u64, Vec<f64>)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..a.threads)
            .map(|t| {
                let conns = a.clients / a.threads + usize::from(t < a.clients % a.threads);
                let budget = a.requests / a.threads as u64
                    + u64::from((t as u64) < a.requests % a.threads as u64);
                let a = &a;
                sc.spawn(move || worker(a, conns, budget, 0x9e37_79b9 + t as u64))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("thread panicked")))
            })
            .collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    let (mut sent, mut errors, mut lat) = (0u64, 0u64, Vec::new());
    for r in results {
        match r {
            Ok((s, e, l)) => {
                sent += s;
                errors += e;
                lat.extend(l);
            }
            Err(e) => {
                eprintln!("mcload: {e}");
                std::process::exit(1);
            }
        }
    }
    lat.sort_by(|x, y| x.total_cmp(y));
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * p) as usize]
        }
    };
    println!(
        "{{\"rps\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"requests\":{sent},\"errors\":{errors}}}",
        sent as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
}
