//! TLS on both sides: the listener (`tls_cert`, `tls_key`, `tls_ca`) and the
//! servers (`server_tls`, `server_tls_ca`, `server_tls_cert`,
//! `server_tls_key`, `server_tls_name`, `server_tls_verify`).
//!
//! rustls with the *ring* provider: no OpenSSL linkage, a small C/assembly
//! core that builds in seconds (aws-lc-rs needs cmake and a much longer
//! build, for FIPS we do not need). Certificates and keys are read when the
//! configuration is loaded ([`attach`]: `-t` says which file is wrong), and
//! again on every reload (SIGUSR1, `--watch-config`): a rotated file makes
//! a new version of its pool, so new connections use the new certificate
//! and existing ones keep theirs.
//!
//! The handshake is tokio-rustls's; after it the connection is driven
//! sans-IO ([`TlsStream`]): the same readiness-based loops as plain TCP
//! read TLS records from the socket into rustls and plaintext out of it,
//! and write plaintext into rustls and records to the socket. The plain
//! path pays one branch for it.

use crate::conf::{Conf, ConfError, PoolConf};
use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// How long a client (or server) gets to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool's TLS material, loaded and checked.
pub struct PoolTls {
    /// The listener's (with client verification when `tls_ca`).
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// The servers'.
    pub connector: Option<Connector>,
    /// Of every file's bytes and the settings: a reload that changes
    /// nothing here keeps the pool as it is.
    pub fingerprint: u64,
    /// Per configured certificate file: when it expires.
    pub expiries: Vec<Expiry>,
}

impl std::fmt::Debug for PoolTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolTls")
            .field("listener", &self.acceptor.is_some())
            .field("servers", &self.connector.is_some())
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl PartialEq for PoolTls {
    fn eq(&self, other: &PoolTls) -> bool {
        self.fingerprint == other.fingerprint
    }
}

/// How the proxy reaches its servers over TLS.
#[derive(Clone)]
pub struct Connector {
    pub connector: tokio_rustls::TlsConnector,
    /// `server_tls_name`: verified (and sent as SNI) instead of each
    /// server's host.
    pub name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.name)
            .finish()
    }
}

/// When a configured certificate expires (Prometheus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub pool: String,
    /// The key that names the file (`tls_cert`, `server_tls_ca`…).
    pub key: &'static str,
    pub file: String,
    /// Unix time of the earliest `notAfter` among the file's certificates.
    pub not_after: i64,
}

/// Reads and checks the TLS files of every pool that has some.
pub fn attach(conf: &mut Conf, file: &str) -> Result<(), ConfError> {
    for p in &mut conf.pools {
        p.tls_loaded = load(p)
            .map_err(|(key, msg)| ConfError {
                file: file.into(),
                line: None,
                pool: Some(p.name.clone()),
                key: Some(key.into()),
                msg,
            })?
            .map(Arc::new);
    }
    Ok(())
}

type LoadError = (&'static str, String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A pool's TLS material, or which key's file is wrong and why.
pub fn load(p: &PoolConf) -> Result<Option<PoolTls>, LoadError> {
    let t = &p.tls;
    if t.cert.is_none() && !t.server {
        return Ok(None);
    }
    let mut fp = Fnv::default();
    fp.add(format!("{t:?}").as_bytes());
    let mut expiries = Vec::new();
    let mut read = |key: &'static str, path: &str| -> Result<Vec<u8>, LoadError> {
        let bytes =
            std::fs::read(path).map_err(|e| (key, format!("cannot read \"{path}\": {e}")))?;
        fp.add(&bytes);
        Ok(bytes)
    };
    let mut certs_of =
        |key: &'static str, path: &str| -> Result<Vec<CertificateDer<'static>>, LoadError> {
            let bytes = read(key, path)?;
            let certs = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    (
                        key,
                        format!("\"{path}\" is not a PEM certificate file: {e}"),
                    )
                })?;
            if certs.is_empty() {
                return Err((key, format!("\"{path}\" holds no PEM certificate")));
            }
            let mut earliest = i64::MAX;
            for c in &certs {
                let (_, x) = x509_parser::parse_x509_certificate(c).map_err(|e| {
                    (
                        key,
                        format!("\"{path}\" holds a certificate that does not parse: {e}"),
                    )
                })?;
                earliest = earliest.min(x.validity().not_after.timestamp());
            }
            expiries.push(Expiry {
                pool: p.name.clone(),
                key,
                file: path.into(),
                not_after: earliest,
            });
            Ok(certs)
        };
    let cert = match &t.cert {
        Some(path) => Some(certs_of("tls_cert", path)?),
        None => None,
    };
    let ca = match &t.ca {
        Some(path) => Some(certs_of("tls_ca", path)?),
        None => None,
    };
    let server_ca = match &t.server_ca {
        Some(path) => Some(certs_of("server_tls_ca", path)?),
        None => None,
    };
    let server_cert = match &t.server_cert {
        Some(path) => Some(certs_of("server_tls_cert", path)?),
        None => None,
    };
    let mut key_of = |key: &'static str, path: &str| -> Result<PrivateKeyDer<'static>, LoadError> {
        let bytes = read(key, path)?;
        PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|e| (key, format!("\"{path}\" holds no PEM private key: {e}")))
    };
    let key = match &t.key {
        Some(path) => Some(key_of("tls_key", path)?),
        None => None,
    };
    let server_key = match &t.server_key {
        Some(path) => Some(key_of("server_tls_key", path)?),
        None => None,
    };
    let acceptor = match (cert, key) {
        (Some(cert), Some(key)) => Some(server_config(cert, key, ca)?),
        _ => None,
    };
    let connector = if t.server {
        Some(client_config(p, server_ca, server_cert.zip(server_key))?)
    } else {
        None
    };
    Ok(Some(PoolTls {
        acceptor,
        connector,
        fingerprint: fp.0,
        expiries,
    }))
}

fn roots(
    key: &'static str,
    certs: Vec<CertificateDer<'static>>,
) -> Result<rustls::RootCertStore, LoadError> {
    let mut roots = rustls::RootCertStore::empty();
    let (_, bad) = roots.add_parsable_certificates(certs);
    if roots.is_empty() || bad > 0 {
        return Err((key, format!("{bad} certificate(s) cannot be used as a CA")));
    }
    Ok(roots)
}

fn server_config(
    cert: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: Option<Vec<CertificateDer<'static>>>,
) -> Result<tokio_rustls::TlsAcceptor, LoadError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("tls_cert", e.to_string()))?;
    let builder = match ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots("tls_ca", ca)?),
                provider,
            )
            .build()
            .map_err(|e| ("tls_ca", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(cert, key)
        .map_err(|e| ("tls_key", format!("does not go with \"tls_cert\": {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn client_config(
    p: &PoolConf,
    ca: Option<Vec<CertificateDer<'static>>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Connector, LoadError> {
    let t = &p.tls;
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("server_tls", e.to_string()))?;
    let builder = if !t.server_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let roots = match ca {
            Some(ca) => roots("server_tls_ca", ca)?,
            None => {
                let native = rustls_native_certs::load_native_certs();
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err((
                        "server_tls_ca",
                        "no system CA certificates found: name the servers' CA with \"server_tls_ca:\"".into(),
                    ));
                }
                roots
            }
        };
        builder.with_root_certificates(roots)
    };
    let config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(cert, key).map_err(|e| {
            (
                "server_tls_key",
                format!("does not go with \"server_tls_cert\": {e}"),
            )
        })?,
        None => builder.with_no_client_auth(),
    };
    let name = match &t.server_name {
        Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| {
            (
                "server_tls_name",
                format!("\"{n}\" is not a server name: {e}"),
            )
        })?),
        None => None,
    };
    Ok(Connector {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        name,
    })
}

/// `server_tls_verify: false`: any server certificate is accepted (the
/// handshake's signatures are still checked).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Default)]
struct Fnv(u64);

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        if self.0 == 0 {
            self.0 = 0xcbf2_9ce4_8422_2325;
        }
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Which side a handshake failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A client of the proxy's listener.
    Client = 0,
    /// A server the proxy connects to.
    Server = 1,
}

impl Side {
    pub const ALL: [Side; 2] = [Side::Client, Side::Server];

    pub fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// Why handshakes fail, as counted (`shardproxy_tls_handshake_failures_total`).
pub const REASONS: [&str; 11] = [
    "expired",
    "not_yet_valid",
    "unknown_ca",
    "name_mismatch",
    "bad_certificate",
    "no_certificate",
    "peer_alert",
    "protocol",
    "timeout",
    "eof",
    "io",
];

static FAILURES: [[AtomicU64; REASONS.len()]; 2] =
    [const { [const { AtomicU64::new(0) }; REASONS.len()] }; 2];

/// Handshake failures so far: per side, per [`REASONS`].
pub fn failures(side: Side) -> [u64; REASONS.len()] {
    let mut out = [0; REASONS.len()];
    for (o, c) in out.iter_mut().zip(&FAILURES[side as usize]) {
        *o = c.load(Relaxed);
    }
    out
}

/// The counted reason of a handshake error.
pub fn reason(e: &io::Error) -> &'static str {
    use rustls::CertificateError as C;
    use rustls::Error as E;
    if let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        return match r {
            E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
            E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "not_yet_valid",
            E::InvalidCertificate(C::UnknownIssuer) => "unknown_ca",
            E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                "name_mismatch"
            }
            E::InvalidCertificate(_) => "bad_certificate",
            E::NoCertificatesPresented => "no_certificate",
            E::AlertReceived(_) => "peer_alert",
            _ => "protocol",
        };
    }
    match e.kind() {
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::UnexpectedEof => "eof",
        io::ErrorKind::InvalidData => "protocol",
        _ => "io",
    }
}

/// A failed handshake: `log` is told its reason, then it is counted (in
/// that order: whoever sees the counter move finds the log line written).
pub fn failed(side: Side, e: &io::Error, log: impl FnOnce(&'static str)) {
    let r = reason(e);
    log(r);
    if let Some(i) = REASONS.iter().position(|x| *x == r) {
        FAILURES[side as usize][i].fetch_add(1, Relaxed);
    }
}

static EXPIRIES: Mutex<Vec<Expiry>> = Mutex::new(Vec::new());

/// The certificates of the pools in effect now (at start, after a reload).
pub fn publish<'a>(pools: impl IntoIterator<Item = &'a PoolConf>) {
    let all: Vec<Expiry> = pools
        .into_iter()
        .filter_map(|p| p.tls_loaded.as_ref())
        .flat_map(|t| t.expiries.iter().cloned())
        .collect();
    if let Ok(mut e) = EXPIRIES.lock() {
        *e = all;
    }
}

/// When each configured certificate file expires.
pub fn expiries() -> Vec<Expiry> {
    EXPIRIES.lock().map(|e| e.clone()).unwrap_or_default()
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake took too long")
}

/// The handshake with a client of a TLS listener.
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
) -> io::Result<TlsStream> {
    let s = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| timed_out())??;
    let (tcp, conn) = s.into_inner();
    Ok(TlsStream::new(tcp, rustls::Connection::Server(conn)))
}

/// The handshake with a server at `host` (verified as `name` when given).
pub async fn connect(
    c: &Connector,
    host: &str,
    tcp: tokio::net::TcpStream,
    deadline: Option<tokio::time::Instant>,
) -> io::Result<TlsStream> {
    let name = match &c.name {
        Some(n) => n.clone(),
        None => ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
    };
    let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + HANDSHAKE_TIMEOUT);
    let s = tokio::time::timeout_at(deadline, c.connector.connect(name, tcp))
        .await
        .map_err(|_| timed_out())??;
    let (tcp, conn) = s.into_inner();
    Ok(TlsStream::new(tcp, rustls::Connection::Client(conn)))
}

/// A TCP connection with TLS on it, driven sans-IO by the same
/// readiness-based loops as plain TCP.
pub struct TlsStream {
    pub tcp: tokio::net::TcpStream,
    conn: RefCell<rustls::Connection>,
    /// The handshake may have read application data already: the first
    /// wait for readability does not wait.
    primed: Cell<bool>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").field("tcp", &self.tcp).finish()
    }
}

/// The socket as rustls reads and writes it (non-blocking: `WouldBlock`
/// clears tokio's readiness).
struct Sock<'a>(&'a tokio::net::TcpStream);

impl Read for Sock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Sock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsStream {
    fn new(tcp: tokio::net::TcpStream, conn: rustls::Connection) -> TlsStream {
        TlsStream {
            tcp,
            conn: RefCell::new(conn),
            primed: Cell::new(true),
        }
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.primed.replace(false) {
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_write_ready(cx)
    }

    /// TLS records wait to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.borrow().wants_write()
    }

    /// Writes pending TLS records as far as the socket takes them.
    pub fn flush(&self) -> io::Result<()> {
        flush(&self.tcp, &mut self.conn.borrow_mut())
    }

    /// Reads plaintext into `buf` (growing it as needed): `Ok(0)` is the end
    /// of the stream, `WouldBlock` means nothing to read yet.
    pub fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut c = self.conn.borrow_mut();
        loop {
            let mut total = 0;
            loop {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(16 * 1024);
                }
                let at = buf.len();
                // Zeroed before rustls writes into it: at most a record's worth
                // at a time, not a buffer grown for a large value.
                let room = (buf.capacity() - at).min(32 * 1024);
                buf.resize(at + room, 0);
                let r = c.reader().read(&mut buf[at..]);
                match r {
                    Ok(n) if n > 0 => {
                        buf.truncate(at + n);
                        total += n;
                    }
                    Ok(_) => {
                        // close_notify: the end, once what came before is read.
                        buf.truncate(at);
                        if total == 0 {
                            return Ok(0);
                        }
                        break;
                    }
                    Err(e) => {
                        buf.truncate(at);
                        if e.kind() == io::ErrorKind::WouldBlock || total > 0 {
                            break;
                        }
                        return Err(e);
                    }
                }
            }
            if total > 0 {
                // Replies to what was read (key updates) go out with the next write.
                let _ = flush(&self.tcp, &mut c);
                return Ok(total);
            }
            if c.read_tls(&mut Sock(&self.tcp))? == 0 {
                return Ok(0);
            }
            if let Err(e) = c.process_new_packets() {
                // Tell the peer (an alert), then give up.
                let _ = flush(&self.tcp, &mut c);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Takes plaintext (as much as rustls buffers) and writes records.
    pub fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut c = self.conn.borrow_mut();
        let n = c.writer().write_vectored(bufs)?;
        flush(&self.tcp, &mut c)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

fn flush(tcp: &tokio::net::TcpStream, c: &mut rustls::Connection) -> io::Result<()> {
    while c.wants_write() {
        match c.write_tls(&mut Sock(tcp)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
