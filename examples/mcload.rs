//! A memcache load generator for `bench/run` (redis-benchmark speaks only
//! redis): `--clients` connections spread over `--threads` threads (one
//! current-thread tokio runtime each), each connection sending `--pipeline`
//! requests at a time and the next batch as soon as every reply to the last
//! is in — independently of the other connections, as redis-benchmark's
//! clients do — until `--requests` requests are done or `--seconds` pass.
//!
//! ```text
//! cargo run --release --example mcload -- --port 11211 --op get --requests 100000
//! ```
//!
//! Prints one JSON line: `{"rps":…, "p50_ms":…, "p90_ms":…, "p99_ms":…, "p999_ms":…, "requests":…, "errors":…}`
//! (latency is per batch: from writing it to its last reply). Loopback only.

use shardproxy::proto::memcache::scan_reply;
use shardproxy::proto::Scan;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone)]
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

/// One connection's loop, as redis-benchmark drives its clients: send a batch
/// of `pipeline` requests, read every reply, record the batch's latency, send
/// the next — each connection independently, so a slow reply on one does not
/// hold the others back (no barrier between connections).
async fn connection(
    a: &Args,
    left: &Cell<u64>,
    end: Instant,
    seed: u64,
    value: &[u8],
) -> std::io::Result<(u64, u64, Vec<f64>)> {
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).await?;
    s.set_nodelay(true)?;
    let mut rng = seed | 1;
    let (mut sent, mut errors) = (0u64, 0u64);
    let mut lat = Vec::new();
    let mut req = Vec::with_capacity(a.pipeline * (a.size + 64));
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    while Instant::now() < end {
        let n = a.pipeline.min(left.get() as usize);
        if n == 0 {
            break;
        }
        left.set(left.get() - n as u64);
        req.clear();
        for _ in 0..n {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            push_request(a, &mut req, rng % a.keys.max(1), value);
        }
        let started = Instant::now();
        s.write_all(&req).await?;
        let mut done = 0;
        while done < n {
            let scanned = if a.binary {
                shardproxy::proto::memcache::binary::scan_reply(&buf)
            } else {
                scan_reply(&buf)
            };
            match scanned {
                Ok(Scan::Complete(len)) => {
                    if failed(&buf[..len], a.binary) {
                        errors += 1;
                    }
                    buf.drain(..len);
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
            let read = tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut buf)).await;
            match read {
                Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
            }
        }
        lat.push(started.elapsed().as_secs_f64() * 1000.0);
        sent += n as u64;
    }
    Ok((sent, errors, lat))
}

/// An error reply (a miss is not one).
fn failed(r: &[u8], binary: bool) -> bool {
    if binary {
        !matches!(
            shardproxy::proto::memcache::binary::reply_status(r),
            Some(0 | 1)
        )
    } else {
        r.starts_with(b"SERVER_ERROR") || r.starts_with(b"CLIENT_ERROR") || r.starts_with(b"ERROR")
    }
}

fn push_request(a: &Args, req: &mut Vec<u8>, key: u64, value: &[u8]) {
    let mut k = [0u8; 16];
    let k = key_name(&mut k, key);
    let get = a.op == "get";
    if a.binary {
        let extras: &[u8] = if get { &[] } else { &[0; 8] };
        let val: &[u8] = if get { &[] } else { value };
        let body = extras.len() + k.len() + val.len();
        req.extend_from_slice(&[0x80, if get { 0x00 } else { 0x01 }]);
        req.extend_from_slice(&(k.len() as u16).to_be_bytes());
        req.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
        req.extend_from_slice(&(body as u32).to_be_bytes());
        req.extend_from_slice(&[0; 12]);
        req.extend_from_slice(extras);
        req.extend_from_slice(k);
        req.extend_from_slice(val);
    } else if get {
        req.extend_from_slice(b"get ");
        req.extend_from_slice(k);
        req.extend_from_slice(b"\r\n");
    } else {
        req.extend_from_slice(b"set ");
        req.extend_from_slice(k);
        req.extend_from_slice(b" 0 0 ");
        req.extend_from_slice(itoa::Buffer::new().format(value.len()).as_bytes());
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
}

/// `key:` and the number in 12 zero-padded digits (the keys redis-benchmark's
/// `-r` and bench/run's preload use).
fn key_name(out: &mut [u8; 16], key: u64) -> &[u8] {
    out[..4].copy_from_slice(b"key:");
    let mut n = key % 1_000_000_000_000;
    for d in out[4..].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    &out[..]
}

/// One thread: a current-thread runtime driving its share of the connections,
/// each a local task.
fn worker(
    a: Rc<Args>,
    conns: usize,
    budget: u64,
    seed: u64,
) -> std::io::Result<(u64, u64, Vec<f64>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let value: Rc<[u8]> = vec![b'x'; a.size].into();
    let end = Instant::now() + Duration::from_secs(a.seconds);
    let left = Rc::new(Cell::new(budget));
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let tasks: Vec<_> = (0..conns as u64)
            .map(|i| {
                let (a, left, value) = (a.clone(), left.clone(), value.clone());
                tokio::task::spawn_local(async move {
                    connection(&a, &left, end, seed ^ (i << 40), &value).await
                })
            })
            .collect();
        let mut total = (0u64, 0u64, Vec::new());
        for t in tasks {
            let (s, e, l) = t.await.map_err(std::io::Error::other)??;
            total.0 += s;
            total.1 += e;
            total.2.extend(l);
        }
        Ok(total)
    })
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
                sc.spawn(move || worker(Rc::new(a.clone()), conns, budget, 0x9e37_79b9 + t as u64))
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
        "{{\"rps\":{:.0},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"requests\":{sent},\"errors\":{errors}}}",
        sent as f64 / secs,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999)
    );
}
