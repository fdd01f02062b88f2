//! Control-plane connections: the proxy's own short conversations with
//! sentinels and cluster nodes (`SENTINEL …`, `ROLE`, `INFO`, `CLUSTER
//! SHARDS`), outside the request path. A command is written whole and its
//! reply read whole (bounded: 1 MB, [`LIMIT`] per reply).

use crate::conf::ServerAddr;
use crate::proto::redis::reply::scan_reply;
use crate::proto::redis::request::{put_array_header, put_bulk};
use crate::proto::Scan;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connect and reply time limit.
pub const LIMIT: Duration = Duration::from_secs(2);

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    put_array_header(&mut out, args.len());
    for a in args {
        put_bulk(&mut out, a);
    }
    out
}

/// A connection that sends commands and reads whole replies.
#[derive(Debug)]
pub struct Conn {
    s: TcpStream,
    buf: BytesMut,
}

impl Conn {
    pub async fn open(
        addr: &ServerAddr,
        auth: Option<(Option<&str>, &str)>,
    ) -> std::io::Result<Conn> {
        let ServerAddr::Tcp { host, port } = addr else {
            return Err(std::io::Error::other(
                "a control connection is made over TCP",
            ));
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

    pub async fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        self.s.write_all(&command(args)).await
    }

    /// The next complete reply (no time limit: subscribers wait).
    pub async fn next(&mut self) -> std::io::Result<Vec<u8>> {
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

    pub async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
        self.send(args).await?;
        tokio::time::timeout(LIMIT, self.next())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }
}
