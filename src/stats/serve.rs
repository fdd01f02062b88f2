//! The two listeners of the stats side, run on the main thread's runtime
//! (never on a worker's):
//!
//! * the stats port (`-s`/`-a`): each connection gets the JSON document at
//!   once and is closed; whatever the peer sends is ignored (spec §3.1);
//! * `--metrics-port`: HTTP/1.1 (hyper) with `GET /metrics` (Prometheus text)
//!   and `GET /healthz` (200 when every pool listener is up, 503 and the
//!   pools that are not otherwise).

use super::{json, prom, Registry};
use crate::conf::Listen;
use crate::net::{self, StdListener};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// A stats client that does not take its document within this is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves `host` (an address or a name) and binds a TCP listener on it.
pub fn bind(host: &str, port: u16, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let host_only = host.trim_start_matches('[').trim_end_matches(']');
    let addr: SocketAddr = (host_only, port)
        .to_socket_addrs()
        .with_context(|| format!("{what}: cannot resolve '{host}'"))?
        .next()
        .with_context(|| format!("{what}: '{host}' has no address"))?;
    let listen = Listen::Tcp {
        host: host.to_string(),
        port,
        addr,
    };
    match net::bind(&listen, 1024, false) {
        Ok(StdListener::Tcp(l)) => Ok(tokio::net::TcpListener::from_std(l)?),
        Ok(StdListener::Unix(_)) => anyhow::bail!("{what}: not a TCP address"),
        Err(e) => Err(e).with_context(|| format!("{what}: bind to {addr} failed")),
    }
}

/// The next connection, or `None` at shutdown. Accept errors (EMFILE…) are
/// logged and retried after a short pause instead of spinning.
async fn accept(
    listener: &tokio::net::TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<tokio::net::TcpStream> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => return Some(s),
                Err(e) => {
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Serves the stats port until `shutdown`.
pub async fn stats_port(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    while let Some(mut stream) = accept(&listener, &shutdown, "stats").await {
        let doc = json::render(&registry.snapshot());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
                if stream.write_all(&doc).await.is_ok() {
                    let _ = stream.shutdown().await;
                }
            })
            .await;
        });
    }
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Answers one HTTP request of the metrics port.
pub fn route<B>(registry: &Registry, req: &Request<B>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => response(
            StatusCode::OK,
            prom::CONTENT_TYPE,
            prom::render(registry.snapshot(), prom::Process::read()),
        ),
        "/healthz" => match registry.all_listening() {
            Ok(()) => response(StatusCode::OK, TEXT, "ok\n"),
            Err(down) => response(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not listening: {}\n", down.join(", ")),
            ),
        },
        _ => response(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics or /healthz\n",
        ),
    }
}

/// Serves `/metrics` and `/healthz` until `shutdown`.
pub async fn metrics_port(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    while let Some(stream) = accept(&listener, &shutdown, "metrics").await {
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let r = route(&registry, &req);
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("metrics: connection error: {e}");
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}
