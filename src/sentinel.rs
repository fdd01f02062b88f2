//! Following Redis Sentinel (`sentinels:`): where each server of a pool is.
//!
//! A server's name is its Sentinel master name; the address in `servers:` is
//! only where to start. For every pool with sentinels, a task on the main
//! thread:
//!
//! * asks the sentinels (`SENTINEL get-master-addr-by-name`) for every
//!   master at start and then every [`RECHECK`] as a safety net, taking the
//!   first sentinel that answers;
//! * listens on **every** sentinel for `+switch-master` (a subscriber
//!   connection each, reconnected when it drops), so a failover is learned
//!   as soon as any sentinel announces it;
//! * checks a new address with `ROLE` (it must say `master`) before it
//!   reports a switch.
//!
//! A switch becomes a new version of the pool (see [`crate::reload`]) in which
//! the server has its new address — the ketama ring is built from names, so
//! no key moves — and the old master's connections are closed at once:
//! requests in flight there get an error reply, and nothing more is
//! acknowledged by a demoted master once the proxy knows.

use crate::conf::ServerAddr;
use crate::proto::redis::reply::scan_reply;
use crate::proto::redis::request::{put_array_header, put_bulk};
use crate::proto::Scan;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;

/// How often the masters are asked for even without an announcement.
pub const RECHECK: Duration = Duration::from_secs(5);
/// Connect and reply time limit for a sentinel or a new master.
const LIMIT: Duration = Duration::from_secs(2);

/// A master's (new) address, for pool `pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub pool: String,
    pub server: String,
    pub host: String,
    pub port: u16,
}

/// What one pool's follower needs.
#[derive(Debug, Clone)]
pub struct Follow {
    pub pool: String,
    pub masters: Vec<String>,
    pub sentinels: Vec<ServerAddr>,
    pub sentinel_auth: Option<String>,
    /// How to log in to a data node for `ROLE`: (user, password).
    pub node_auth: Option<(Option<String>, String)>,
    /// Per sentinel (same order): subscribed to it now (Prometheus).
    pub up: Vec<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Starts following the sentinels of one pool (on the current runtime).
pub fn spawn(f: Follow, tx: UnboundedSender<Switch>) {
    for (i, s) in f.sentinels.clone().into_iter().enumerate() {
        let up = f.up.get(i).cloned().unwrap_or_default();
        tokio::spawn(listen(f.clone(), s, up, tx.clone()));
    }
    tokio::spawn(poll(f, tx));
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    put_array_header(&mut out, args.len());
    for a in args {
        put_bulk(&mut out, a);
    }
    out
}

/// A connection that sends commands and reads whole replies.
struct Conn {
    s: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn open(addr: &ServerAddr, auth: Option<(Option<&str>, &str)>) -> std::io::Result<Conn> {
        let ServerAddr::Tcp { host, port } = addr else {
            return Err(std::io::Error::other("a sentinel is reached over TCP"));
        };
        let s = tokio::time::timeout(LIMIT, TcpStream::connect((host.as_str(), *port)))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let mut c = Conn {
            s,
            buf: BytesMut::with_capacity(4096),
        };
        if let Some((user, pw)) = auth {
            let r = match user {
                Some(u) => c.call(&[b"AUTH", u.as_bytes(), pw.as_bytes()]).await?,
                None => c.call(&[b"AUTH", pw.as_bytes()]).await?,
            };
            if r.first() == Some(&b'-') {
                return Err(std::io::Error::other(
                    String::from_utf8_lossy(&r).trim().to_string(),
                ));
            }
        }
        Ok(c)
    }

    async fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        self.s.write_all(&command(args)).await
    }

    /// The next complete reply (no time limit: subscribers wait).
    async fn next(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            match scan_reply(&self.buf) {
                Ok(Scan::Complete(n)) => return Ok(self.buf.split_to(n).to_vec()),
                Ok(Scan::Incomplete { .. }) => {}
                Err(_) => return Err(std::io::Error::other("an unreadable reply")),
            }
            if self.buf.len() > 1 << 20 {
                return Err(std::io::Error::other("a reply too large"));
            }
            if self.s.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
        self.send(args).await?;
        tokio::time::timeout(LIMIT, self.next())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }
}

/// The top-level elements of an array reply that are bulk strings (others,
/// such as ROLE's offset and replica list, are skipped).
fn strings(reply: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if reply.first() != Some(&b'*') {
        return out;
    }
    let Some(nl) = reply.iter().position(|&b| b == b'\n') else {
        return out;
    };
    let Ok(n) = std::str::from_utf8(&reply[1..nl.saturating_sub(1)])
        .unwrap_or("")
        .parse::<usize>()
    else {
        return out;
    };
    let mut pos = nl + 1;
    for _ in 0..n {
        let Some(rest) = reply.get(pos..) else { break };
        let Ok(Scan::Complete(len)) = scan_reply(rest) else {
            break;
        };
        let e = &rest[..len];
        if e.first() == Some(&b'$') {
            if let Some(start) = e.iter().position(|&b| b == b'\n') {
                if start < len.saturating_sub(2) {
                    out.push(String::from_utf8_lossy(&e[start + 1..len - 2]).into_owned());
                }
            }
        }
        pos += len;
    }
    out
}

fn sentinel_auth(f: &Follow) -> Option<(Option<&str>, &str)> {
    f.sentinel_auth.as_deref().map(|p| (None, p))
}

/// Reports `name` at `host:port` if the node there says it is a master.
async fn report(f: &Follow, name: &str, host: String, port: u16, tx: &UnboundedSender<Switch>) {
    let addr = ServerAddr::Tcp {
        host: host.clone(),
        port,
    };
    let auth = f
        .node_auth
        .as_ref()
        .map(|(u, p)| (u.as_deref(), p.as_str()));
    let role = match Conn::open(&addr, auth).await {
        Ok(mut c) => c.call(&[b"ROLE"]).await.map(|r| strings(&r)),
        Err(e) => Err(e),
    };
    match role {
        Ok(r) if r.first().is_some_and(|x| x == "master") => {
            let _ = tx.send(Switch {
                pool: f.pool.clone(),
                server: name.into(),
                host,
                port,
            });
        }
        Ok(r) => tracing::warn!(
            "pool '{}': sentinel names {host}:{port} master of '{name}', but it says it is {:?}; not switching yet",
            f.pool,
            r.first()
        ),
        Err(e) => tracing::warn!(
            "pool '{}': sentinel names {host}:{port} master of '{name}', but it cannot be checked ({e}); not switching yet",
            f.pool
        ),
    }
}

/// Asks the sentinels where every master is, at start and every RECHECK.
async fn poll(f: Follow, tx: UnboundedSender<Switch>) {
    let mut warned = false;
    loop {
        let mut answered = false;
        for s in &f.sentinels {
            let Ok(mut c) = Conn::open(s, sentinel_auth(&f)).await else {
                continue;
            };
            let mut all = true;
            for m in &f.masters {
                match c
                    .call(&[b"SENTINEL", b"get-master-addr-by-name", m.as_bytes()])
                    .await
                {
                    Ok(r) => {
                        let v = strings(&r);
                        if let [host, port] = &v[..] {
                            if let Ok(port) = port.parse() {
                                report(&f, m, host.clone(), port, &tx).await;
                            }
                        }
                    }
                    Err(_) => all = false,
                }
            }
            if all {
                answered = true;
                break;
            }
        }
        if !answered && !warned {
            tracing::warn!(
                "pool '{}': no sentinel answers; serving the last known masters",
                f.pool
            );
        }
        warned = !answered;
        tokio::time::sleep(RECHECK).await;
    }
}

/// Listens for `+switch-master` on one sentinel, reconnecting.
async fn listen(
    f: Follow,
    sentinel: ServerAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tx: UnboundedSender<Switch>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        if let Ok(mut c) = Conn::open(&sentinel, sentinel_auth(&f)).await {
            if c.send(&[b"SUBSCRIBE", b"+switch-master"]).await.is_ok() {
                while let Ok(m) = c.next().await {
                    up.store(true, Relaxed);
                    let v = strings(&m);
                    // ["message", "+switch-master", "name oldip oldport newip newport"]
                    let [kind, _, text] = &v[..] else { continue };
                    if kind != "message" {
                        continue;
                    }
                    let w: Vec<&str> = text.split(' ').collect();
                    if let [name, _, _, host, port] = w[..] {
                        if f.masters.iter().any(|m| m == name) {
                            if let Ok(port) = port.parse() {
                                tracing::info!(
                                    "pool '{}': sentinel announces +switch-master {text}",
                                    f.pool
                                );
                                report(&f, name, host.into(), port, &tx).await;
                            }
                        }
                    }
                }
            }
        }
        up.store(false, Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::strings;

    #[test]
    fn bulk_elements_of_replies() {
        assert_eq!(
            strings(b"*3\r\n$6\r\nmaster\r\n:3129659\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n9001\r\n$7\r\n3129242\r\n"),
            vec!["master".to_string()]
        );
        assert_eq!(
            strings(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n"),
            vec!["127.0.0.1".to_string(), "6380".to_string()]
        );
        assert!(strings(b"*-1\r\n").is_empty());
        assert!(strings(b"-ERR x\r\n").is_empty());
        assert!(strings(b"*5\r\n$1\r\n").is_empty());
    }
}
