//! Configuration: a nutcracker YAML file → a validated [`Conf`].
//!
//! Loads every nutcracker 0.5 configuration unchanged, with its defaults, its
//! validation and its ordering (pools and servers sorted by name length, then
//! bytes). Unlike nutcracker, every error says why: file, line, pool, key, the
//! bad value and what was expected. Pure code: no tokio; the only I/O is reading
//! the file and resolving `listen` addresses, exactly when nutcracker does.
//!
//! * [`yaml`] turns the text into pools of `key → scalar | list` with lines;
//! * [`addr`] parses `listen` values and `servers` entries;
//! * this module applies the keys, defaults and cross-checks.

pub mod addr;
pub mod yaml;

pub use addr::{Listen, ServerAddr, ServerConf};

use crate::dist::{self, Node, Strategy};
use crate::hash::HashFn;
use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;
use yaml::{Entry, RawPool, Scalar, Value};

/// A `client_users:` entry: `name password readonly|readwrite`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientUser {
    pub name: String,
    pub password: String,
    /// Only commands without the `write` flag.
    pub readonly: bool,
}

impl ClientUser {
    fn parse(spec: &str) -> Result<ClientUser, String> {
        let parts: Vec<&str> = spec.split_whitespace().collect();
        let [name, password, mode] = parts[..] else {
            return Err(format!(
                "\"{spec}\": expected \"name password readonly|readwrite\""
            ));
        };
        let readonly = match mode {
            "readonly" => true,
            "readwrite" => false,
            other => {
                return Err(format!(
                    "\"{other}\" is not a mode: expected readonly or readwrite"
                ))
            }
        };
        Ok(ClientUser {
            name: name.into(),
            password: password.into(),
            readonly,
        })
    }
}

/// `read_from` (shardproxy's own key): where read-only commands go in a pool
/// that follows Sentinel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// Every command goes to the master (the default, nutcracker's way).
    #[default]
    Master,
    /// Reads go to a healthy replica of the key's server, else the master.
    PreferReplica,
    /// Reads go to replicas only; none healthy: an error reply.
    Replica,
}

impl ReadFrom {
    pub fn parse(s: &str) -> Option<ReadFrom> {
        match s {
            "master" => Some(ReadFrom::Master),
            "prefer_replica" => Some(ReadFrom::PreferReplica),
            "replica" => Some(ReadFrom::Replica),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ReadFrom::Master => "master",
            ReadFrom::PreferReplica => "prefer_replica",
            ReadFrom::Replica => "replica",
        }
    }
}

/// Default of `replica_max_lag`, in seconds (Redis's own
/// `min-replicas-max-lag` default).
pub const DEFAULT_REPLICA_MAX_LAG: u32 = 10;

/// TLS settings of a pool (shardproxy's own keys; files are read by
/// [`crate::tls`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConf {
    /// `tls_cert`/`tls_key`: the listener speaks TLS with this certificate
    /// chain and key (PEM).
    pub cert: Option<String>,
    pub key: Option<String>,
    /// `tls_ca`: clients must present a certificate signed by these CAs.
    pub ca: Option<String>,
    /// `server_tls`: the servers are reached over TLS.
    pub server: bool,
    /// `server_tls_ca`: the CAs a server certificate must chain to (default:
    /// the system's roots).
    pub server_ca: Option<String>,
    /// `server_tls_cert`/`server_tls_key`: the proxy's client certificate.
    pub server_cert: Option<String>,
    pub server_key: Option<String>,
    /// `server_tls_name`: the name to verify (and send as SNI) instead of
    /// each server's host.
    pub server_name: Option<String>,
    /// `server_tls_verify` (default true): verify server certificates.
    pub server_verify: bool,
}

impl TlsConf {
    /// Every file the settings name: (key, path).
    pub fn files(&self) -> Vec<(&'static str, &str)> {
        [
            ("tls_cert", &self.cert),
            ("tls_key", &self.key),
            ("tls_ca", &self.ca),
            ("server_tls_ca", &self.server_ca),
            ("server_tls_cert", &self.server_cert),
            ("server_tls_key", &self.server_key),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// Default of `session_connections`: pinned server connections per worker
/// and pool.
pub const DEFAULT_SESSION_CONNECTIONS: u32 = 1024;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Conf {
    /// Pools in nutcracker's order (name length, then bytes): the pool index order.
    pub pools: Vec<PoolConf>,
}

/// One validated pool.
#[derive(Debug, Clone)]
pub struct PoolConf {
    pub name: String,
    /// The `listen` value as written (used for duplicate detection and logs).
    pub listen_spec: String,
    pub listen: Listen,
    /// The hash function (`fnv1a_64` by default; unused by strategies with their own hash).
    pub hash: HashFn,
    /// `hash_tag`: the left and right tag bytes.
    pub hash_tag: Option<[u8; 2]>,
    /// The distribution strategy.
    pub distribution: &'static Strategy,
    /// Per-request server timeout; `None` waits forever (`timeout` unset or 0).
    pub timeout: Option<Duration>,
    pub backlog: u32,
    /// Maximum client connections for the pool; 0 = no limit of its own.
    pub client_connections: u32,
    pub redis: bool,
    pub redis_auth: Option<String>,
    /// `redis_username` (shardproxy's own key): the ACL user the proxy
    /// authenticates as on every server (`AUTH user redis_auth`).
    pub redis_username: Option<String>,
    /// `client_users` (shardproxy's own key): users clients may `AUTH` as,
    /// besides `redis_auth`'s default user.
    pub client_users: Vec<ClientUser>,
    /// `sentinels:` (documented by upstream, never implemented there): the
    /// Sentinels that say where each server (a master named like it) is.
    pub sentinels: Vec<ServerAddr>,
    /// `sentinel_auth` (shardproxy's own key): the Sentinels' password.
    pub sentinel_auth: Option<String>,
    /// `read_from` (shardproxy's own key): where read-only commands go.
    pub read_from: ReadFrom,
    /// `replica_max_lag` (shardproxy's own key): a replica whose last
    /// acknowledgement to its master is older than this is not read from.
    pub replica_max_lag: Duration,
    pub redis_db: u32,
    pub preconnect: bool,
    pub auto_eject_hosts: bool,
    pub server_connections: u32,
    /// `session_connections` (shardproxy's own key): the most server
    /// connections one worker pins for client sessions (WATCH, blocking
    /// commands, subscriptions) in this pool; past it such a request gets an
    /// error. Default [`DEFAULT_SESSION_CONNECTIONS`].
    pub session_connections: u32,
    pub server_retry_timeout: Duration,
    pub server_failure_limit: u32,
    pub tcpkeepalive: bool,
    pub reuseport: bool,
    /// Servers in nutcracker's order (name length, then bytes): the server index order.
    pub servers: Vec<ServerConf>,
    /// TLS on either side.
    pub tls: TlsConf,
    /// `redis_cluster`: the seed nodes as written (`servers` then holds the
    /// cluster's masters, as the proxy last learned them).
    pub seeds: Vec<ServerAddr>,
    /// `redis_cluster`: the slot map over `servers` (slot → index), `None`
    /// until the cluster has been asked.
    pub cluster_slots: Option<std::sync::Arc<Vec<u16>>>,
    /// The certificates and keys `tls` names, read and checked
    /// ([`crate::tls::attach`]); `None` without TLS.
    pub tls_loaded: Option<std::sync::Arc<crate::tls::PoolTls>>,
}

impl PoolConf {
    /// The pool's servers as the distribution sees them.
    pub fn nodes(&self) -> Vec<Node> {
        self.servers
            .iter()
            .enumerate()
            .map(|(index, s)| Node {
                index,
                name: s.name.clone(),
                named: s.named,
                weight: s.weight,
            })
            .collect()
    }
}

/// A configuration error: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    pub file: String,
    pub line: Option<usize>,
    pub pool: Option<String>,
    pub key: Option<String>,
    pub msg: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(pool) = &self.pool {
            write!(f, "pool \"{pool}\": ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.msg)
    }
}

impl std::error::Error for ConfError {}

/// nutcracker's name order: shorter first, then bytewise.
pub fn name_order(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

impl Conf {
    /// Reads and validates a configuration file.
    pub fn load(path: &str) -> Result<Conf, ConfError> {
        let text = std::fs::read(path).map_err(|e| ConfError {
            file: path.to_string(),
            line: None,
            pool: None,
            key: None,
            msg: format!("cannot open the configuration file: {e}"),
        })?;
        let text = String::from_utf8(text).map_err(|e| ConfError {
            file: path.to_string(),
            line: None,
            pool: None,
            key: None,
            msg: format!(
                "the file is not valid UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ),
        })?;
        let mut conf = Conf::parse(path, &text)?;
        crate::tls::attach(&mut conf, path)?;
        Ok(conf)
    }

    /// Validates configuration text; `file` only labels errors.
    pub fn parse(file: &str, text: &str) -> Result<Conf, ConfError> {
        let raw = yaml::read(text).map_err(|e| ConfError {
            file: file.to_string(),
            line: e.line,
            pool: None,
            key: None,
            msg: e.msg,
        })?;
        let mut pools = Vec::with_capacity(raw.len());
        for p in &raw {
            if let Some(first) = pools.iter().find(|q: &&PoolConf| q.name == p.name.text) {
                let _ = first;
                return Err(ConfError {
                    file: file.to_string(),
                    line: Some(p.name.line),
                    pool: Some(p.name.text.clone()),
                    key: None,
                    msg: "a pool with this name is already defined".into(),
                });
            }
            pools.push(build_pool(p).map_err(|e| ConfError {
                file: file.to_string(),
                line: e.line,
                pool: Some(p.name.text.clone()),
                key: e.key,
                msg: e.msg,
            })?);
        }
        for (i, a) in pools.iter().enumerate() {
            if let Some(b) = pools[i + 1..]
                .iter()
                .find(|b| b.listen_spec == a.listen_spec)
            {
                return Err(ConfError {
                    file: file.to_string(),
                    line: None,
                    pool: Some(b.name.clone()),
                    key: Some("listen".into()),
                    msg: format!(
                        "\"{}\" is already the listen address of pool \"{}\"",
                        b.listen_spec, a.name
                    ),
                });
            }
        }
        pools.sort_by(|a, b| name_order(&a.name, &b.name));
        Ok(Conf { pools })
    }
}

/// An error inside one pool.
struct PoolError {
    line: Option<usize>,
    key: Option<String>,
    msg: String,
}

fn at(s: &Scalar, key: &str, msg: impl Into<String>) -> PoolError {
    PoolError {
        line: Some(s.line),
        key: Some(key.to_string()),
        msg: msg.into(),
    }
}

/// The keys as they are set, before defaults.
#[derive(Default)]
struct Draft {
    listen: Option<(String, Listen)>,
    hash: Option<String>,
    hash_tag: Option<[u8; 2]>,
    distribution: Option<&'static Strategy>,
    timeout: Option<u32>,
    backlog: Option<u32>,
    client_connections: Option<u32>,
    redis: Option<bool>,
    redis_auth: Option<(String, usize)>,
    redis_username: Option<String>,
    client_users: Vec<(ClientUser, usize)>,
    sentinels: Vec<(ServerConf, usize)>,
    sentinel_auth: Option<String>,
    read_from: Option<(ReadFrom, usize)>,
    replica_max_lag: Option<u32>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_ca: Option<String>,
    server_tls: Option<bool>,
    server_tls_ca: Option<String>,
    server_tls_cert: Option<String>,
    server_tls_key: Option<String>,
    server_tls_name: Option<String>,
    server_tls_verify: Option<bool>,
    redis_db: Option<u32>,
    preconnect: Option<bool>,
    auto_eject_hosts: Option<bool>,
    server_connections: Option<(u32, usize)>,
    session_connections: Option<u32>,
    server_retry_timeout: Option<u32>,
    server_failure_limit: Option<u32>,
    tcpkeepalive: Option<bool>,
    reuseport: Option<bool>,
    servers: Vec<(ServerConf, usize)>,
}

/// Every key nutcracker knows (and `reuseport`, from its unreleased HEAD), and
/// shardproxy's own `session_connections`.
pub const KEYS: &[&str] = &[
    "listen",
    "hash",
    "hash_tag",
    "distribution",
    "timeout",
    "backlog",
    "client_connections",
    "redis",
    "redis_auth",
    "redis_username",
    "client_users",
    "sentinels",
    "sentinel_auth",
    "read_from",
    "replica_max_lag",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "server_tls",
    "server_tls_ca",
    "server_tls_cert",
    "server_tls_key",
    "server_tls_name",
    "server_tls_verify",
    "redis_db",
    "preconnect",
    "auto_eject_hosts",
    "server_connections",
    "session_connections",
    "server_retry_timeout",
    "server_failure_limit",
    "tcpkeepalive",
    "reuseport",
    "servers",
];

fn number(v: &Scalar, key: &str) -> Result<u32, PoolError> {
    let t = v.text.as_str();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = t.parse::<u32>() {
            if n <= i32::MAX as u32 {
                return Ok(n);
            }
        }
        return Err(at(
            v,
            key,
            format!("\"{t}\" is too large: the limit is 2147483647"),
        ));
    }
    Err(at(
        v,
        key,
        format!("\"{t}\" is not a number (expected decimal digits only)"),
    ))
}

fn boolean(v: &Scalar, key: &str) -> Result<bool, PoolError> {
    match v.text.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        t => Err(at(v, key, format!("\"{t}\" is not \"true\" or \"false\""))),
    }
}

/// Stores a key's value once; a second value is a duplicate.
fn once<T>(slot: &mut Option<T>, v: &Scalar, key: &str, value: T) -> Result<(), PoolError> {
    if slot.is_some() {
        return Err(at(v, key, "is given more than once"));
    }
    *slot = Some(value);
    Ok(())
}

fn set(d: &mut Draft, key: &Scalar, v: &Scalar) -> Result<(), PoolError> {
    let k = key.text.as_str();
    if v.text.is_empty() {
        return Err(at(v, k, "has no value"));
    }
    match k {
        "listen" => {
            let l =
                addr::parse_listen(&v.text).map_err(|m| at(v, k, format!("\"{}\" {m}", v.text)))?;
            once(&mut d.listen, v, k, (v.text.clone(), l))
        }
        "hash" => {
            if v.text.parse::<HashFn>().is_err() && dist::strategy_owning_hash(&v.text).is_none() {
                let names: Vec<&str> = HashFn::ALL.iter().map(|(_, n)| *n).collect();
                return Err(at(
                    v,
                    k,
                    format!(
                        "\"{}\" is not a valid hash: expected one of {}, server_name",
                        v.text,
                        names.join(", ")
                    ),
                ));
            }
            once(&mut d.hash, v, k, v.text.clone())
        }
        "hash_tag" => {
            let b = v.text.as_bytes();
            if b.len() != 2 {
                return Err(at(v, k, format!("\"{}\" is not a valid hash tag: expected exactly two characters, e.g. \"{{}}\"", v.text)));
            }
            once(&mut d.hash_tag, v, k, [b[0], b[1]])
        }
        "distribution" => {
            let s = dist::strategy(&v.text).ok_or_else(|| {
                let names: Vec<&str> = dist::STRATEGIES.iter().map(|s| s.name).collect();
                at(
                    v,
                    k,
                    format!(
                        "\"{}\" is not a valid distribution: expected one of {}",
                        v.text,
                        names.join(", ")
                    ),
                )
            })?;
            once(&mut d.distribution, v, k, s)
        }
        "timeout" => once(&mut d.timeout, v, k, number(v, k)?),
        "backlog" => once(&mut d.backlog, v, k, number(v, k)?),
        "client_connections" => once(&mut d.client_connections, v, k, number(v, k)?),
        "redis" => once(&mut d.redis, v, k, boolean(v, k)?),
        "redis_auth" => once(&mut d.redis_auth, v, k, (v.text.clone(), v.line)),
        "redis_username" => once(&mut d.redis_username, v, k, v.text.clone()),
        "sentinel_auth" => once(&mut d.sentinel_auth, v, k, v.text.clone()),
        "read_from" => {
            let r = ReadFrom::parse(&v.text).ok_or_else(|| {
                at(
                    v,
                    k,
                    format!(
                        "\"{}\" is not a choice: expected master, prefer_replica or replica",
                        v.text
                    ),
                )
            })?;
            once(&mut d.read_from, v, k, (r, v.line))
        }
        "replica_max_lag" => once(&mut d.replica_max_lag, v, k, number(v, k)?),
        "tls_cert" => once(&mut d.tls_cert, v, k, v.text.clone()),
        "tls_key" => once(&mut d.tls_key, v, k, v.text.clone()),
        "tls_ca" => once(&mut d.tls_ca, v, k, v.text.clone()),
        "server_tls" => once(&mut d.server_tls, v, k, boolean(v, k)?),
        "server_tls_ca" => once(&mut d.server_tls_ca, v, k, v.text.clone()),
        "server_tls_cert" => once(&mut d.server_tls_cert, v, k, v.text.clone()),
        "server_tls_key" => once(&mut d.server_tls_key, v, k, v.text.clone()),
        "server_tls_name" => once(&mut d.server_tls_name, v, k, v.text.clone()),
        "server_tls_verify" => once(&mut d.server_tls_verify, v, k, boolean(v, k)?),
        "sentinels" => {
            // `host:port:weight`: the weight is accepted and ignored, as
            // upstream documents.
            let s = addr::parse_server(&v.text).map_err(|m| at(v, k, m))?;
            if !matches!(s.addr, ServerAddr::Tcp { .. }) {
                return Err(at(
                    v,
                    k,
                    "a sentinel is reached over TCP (host:port:weight)",
                ));
            }
            d.sentinels.push((s, v.line));
            Ok(())
        }
        "client_users" => {
            let u = ClientUser::parse(&v.text).map_err(|m| at(v, k, m))?;
            if d.client_users.iter().any(|(o, _)| o.name == u.name) {
                return Err(at(v, k, format!("user \"{}\" is listed twice", u.name)));
            }
            d.client_users.push((u, v.line));
            Ok(())
        }
        "redis_db" => once(&mut d.redis_db, v, k, number(v, k)?),
        "preconnect" => once(&mut d.preconnect, v, k, boolean(v, k)?),
        "auto_eject_hosts" => once(&mut d.auto_eject_hosts, v, k, boolean(v, k)?),
        "server_connections" => once(&mut d.server_connections, v, k, (number(v, k)?, v.line)),
        "session_connections" => once(&mut d.session_connections, v, k, number(v, k)?),
        "server_retry_timeout" => once(&mut d.server_retry_timeout, v, k, number(v, k)?),
        "server_failure_limit" => once(&mut d.server_failure_limit, v, k, number(v, k)?),
        "tcpkeepalive" => once(&mut d.tcpkeepalive, v, k, boolean(v, k)?),
        "reuseport" => once(&mut d.reuseport, v, k, boolean(v, k)?),
        "servers" => {
            let s = addr::parse_server(&v.text).map_err(|m| at(v, k, m))?;
            d.servers.push((s, v.line));
            Ok(())
        }
        _ => Err(at(
            key,
            k,
            format!("unknown key (known keys: {})", KEYS.join(", ")),
        )),
    }
}

fn build_pool(p: &RawPool) -> Result<PoolConf, PoolError> {
    let mut d = Draft::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut sequences = 0;
    for Entry { key, value } in &p.entries {
        if seen.contains(&key.text.as_str()) {
            return Err(at(key, &key.text, "is given more than once"));
        }
        seen.push(&key.text);
        match value {
            Value::Scalar(v) => set(&mut d, key, v)?,
            Value::Seq(items) => {
                // nutcracker allows one list per pool (and feeds a list
                // under another key to that key); `client_users:` is ours.
                if key.text != "client_users" && key.text != "sentinels" {
                    sequences += 1;
                    if sequences > 1 {
                        return Err(at(
                            key,
                            &key.text,
                            "a pool may have only one list (the \"servers:\" list), besides \"client_users:\" and \"sentinels:\"",
                        ));
                    }
                }
                for v in items {
                    set(&mut d, key, v)?;
                }
            }
        }
    }
    let pool_err = |msg: String| PoolError {
        line: Some(p.name.line),
        key: None,
        msg,
    };
    if sequences == 0 {
        return Err(pool_err(
            "has no \"servers:\" list (\"- host:port:weight [name]\" entries)".into(),
        ));
    }
    let Some((listen_spec, listen)) = d.listen else {
        return Err(pool_err(
            "the \"listen:\" key is missing (e.g. \"listen: 127.0.0.1:22121\")".into(),
        ));
    };
    if d.servers.is_empty() {
        return Err(pool_err("has no servers".into()));
    }
    let redis = d.redis.unwrap_or(false);
    if let Some((0, line)) = d.server_connections {
        return Err(PoolError {
            line: Some(line),
            key: Some("server_connections".into()),
            msg: "cannot be 0".into(),
        });
    }
    if let (Some((_, line)), false) = (&d.redis_auth, redis) {
        return Err(PoolError {
            line: Some(*line),
            key: Some("redis_auth".into()),
            msg: "is only valid for a redis pool (add \"redis: true\")".into(),
        });
    }
    if let (Some(_), None) = (&d.redis_username, &d.redis_auth) {
        return Err(pool_err(
            "\"redis_username:\" needs \"redis_auth:\" (the user's password)".into(),
        ));
    }
    if let Some((_, line)) = d.sentinels.first() {
        if !redis {
            return Err(PoolError {
                line: Some(*line),
                key: Some("sentinels".into()),
                msg: "is only valid for a redis pool (add \"redis: true\")".into(),
            });
        }
        if let Some((s, line)) = d.servers.iter().find(|(s, _)| !s.named) {
            return Err(PoolError {
                line: Some(*line),
                key: Some("servers".into()),
                msg: format!(
                    "\"{}\" has no name: with \"sentinels:\", every server is named after its Sentinel master (\"host:port:weight name\")",
                    s.spec
                ),
            });
        }
    }
    if let Some((r, line)) = d.read_from {
        let cluster = d.distribution.is_some_and(|s| s.name == "redis_cluster");
        if r != ReadFrom::Master && d.sentinels.is_empty() && !cluster {
            return Err(PoolError {
                line: Some(line),
                key: Some("read_from".into()),
                msg: format!(
                    "\"{}\" needs \"sentinels:\" or \"distribution: redis_cluster\" (replicas are found through Sentinel or the cluster)",
                    r.name()
                ),
            });
        }
    }
    let tls = TlsConf {
        cert: d.tls_cert,
        key: d.tls_key,
        ca: d.tls_ca,
        server: d.server_tls.unwrap_or(false),
        server_ca: d.server_tls_ca,
        server_cert: d.server_tls_cert,
        server_key: d.server_tls_key,
        server_name: d.server_tls_name,
        server_verify: d.server_tls_verify.unwrap_or(true),
    };
    let tls_err = |key: &str, msg: &str| PoolError {
        line: Some(p.name.line),
        key: Some(key.into()),
        msg: msg.into(),
    };
    match (&tls.cert, &tls.key) {
        (Some(_), None) => return Err(tls_err("tls_cert", "needs \"tls_key:\" (its private key)")),
        (None, Some(_)) => return Err(tls_err("tls_key", "needs \"tls_cert:\" (its certificate)")),
        _ => {}
    }
    if tls.ca.is_some() && tls.cert.is_none() {
        return Err(tls_err(
            "tls_ca",
            "needs \"tls_cert:\" and \"tls_key:\" (client certificates are checked on a TLS listener)",
        ));
    }
    if tls.cert.is_some() && !matches!(listen, Listen::Tcp { .. }) {
        return Err(tls_err(
            "tls_cert",
            "TLS is for TCP listeners only (a unix socket stays plain)",
        ));
    }
    if !tls.server {
        for (key, set) in [
            ("server_tls_ca", tls.server_ca.is_some()),
            ("server_tls_cert", tls.server_cert.is_some()),
            ("server_tls_key", tls.server_key.is_some()),
            ("server_tls_name", tls.server_name.is_some()),
            ("server_tls_verify", d.server_tls_verify.is_some()),
        ] {
            if set {
                return Err(tls_err(key, "needs \"server_tls: true\""));
            }
        }
    }
    match (&tls.server_cert, &tls.server_key) {
        (Some(_), None) => {
            return Err(tls_err(
                "server_tls_cert",
                "needs \"server_tls_key:\" (its private key)",
            ))
        }
        (None, Some(_)) => {
            return Err(tls_err(
                "server_tls_key",
                "needs \"server_tls_cert:\" (its certificate)",
            ))
        }
        _ => {}
    }
    if let (Some((_, line)), false) = (d.client_users.first(), redis) {
        return Err(PoolError {
            line: Some(*line),
            key: Some("client_users".into()),
            msg: "is only valid for a redis pool (add \"redis: true\")".into(),
        });
    }
    for (i, (a, _)) in d.servers.iter().enumerate() {
        if let Some((b, line)) = d.servers[i + 1..].iter().find(|(b, _)| b.name == a.name) {
            return Err(PoolError {
                line: Some(*line),
                key: Some("servers".into()),
                msg: format!(
                    "\"{}\" has the same name \"{}\" as \"{}\": server names must be unique",
                    b.spec, b.name, a.spec
                ),
            });
        }
    }
    let distribution = d.distribution.unwrap_or_else(dist::default_strategy);
    let hash = match d.hash.as_deref() {
        None => HashFn::DEFAULT,
        Some(h) => match (h.parse::<HashFn>(), distribution.own_hash) {
            (Ok(f), None) => f,
            (Ok(_), Some(own)) => {
                return Err(PoolError {
                    line: None,
                    key: Some("hash".into()),
                    msg: format!("\"{h}\" cannot be used with distribution {}: remove \"hash:\" or write \"hash: {own}\"", distribution.name),
                })
            }
            (Err(_), Some(own)) if own == h => HashFn::DEFAULT,
            (Err(_), _) => {
                let owner = dist::strategy_owning_hash(h).map_or("?", |s| s.name);
                return Err(PoolError {
                    line: None,
                    key: Some("hash".into()),
                    msg: format!("\"{h}\" only works with \"distribution: {owner}\", not {}", distribution.name),
                });
            }
        },
    };
    let cluster = distribution.name == "redis_cluster";
    if cluster {
        let no = |key: &str, msg: String| PoolError {
            line: Some(p.name.line),
            key: Some(key.into()),
            msg,
        };
        if !redis {
            return Err(no(
                "distribution",
                "redis_cluster is for redis pools (add \"redis: true\")".into(),
            ));
        }
        if d.hash_tag.is_some_and(|t| t != *b"{}") {
            return Err(no(
                "hash_tag",
                "does not apply to redis_cluster: the cluster's own hash tags, \"{}\", always apply (remove it)".into(),
            ));
        }
        if let Some((s, line)) = d.servers.iter().find(|(s, _)| s.weight != 1) {
            return Err(PoolError {
                line: Some(*line),
                key: Some("servers".into()),
                msg: format!(
                    "\"{}\": weights do not apply to redis_cluster (the cluster places keys by slot): write :1",
                    s.spec
                ),
            });
        }
        if d.auto_eject_hosts == Some(true) {
            return Err(no(
                "auto_eject_hosts",
                "does not apply to redis_cluster: the cluster fails over by itself".into(),
            ));
        }
        if !d.sentinels.is_empty() {
            return Err(no(
                "sentinels",
                "do not apply to redis_cluster: the cluster fails over by itself".into(),
            ));
        }
        if let Some((s, line)) = d
            .servers
            .iter()
            .find(|(s, _)| !matches!(s.addr, ServerAddr::Tcp { .. }))
        {
            return Err(PoolError {
                line: Some(*line),
                key: Some("servers".into()),
                msg: format!("\"{}\": cluster nodes are reached over TCP", s.spec),
            });
        }
    }
    let mut servers: Vec<ServerConf> = d.servers.into_iter().map(|(s, _)| s).collect();
    servers.sort_by(|a, b| name_order(&a.name, &b.name));
    let seeds = if cluster {
        servers.iter().map(|s| s.addr.clone()).collect()
    } else {
        Vec::new()
    };
    let conf = PoolConf {
        name: p.name.text.clone(),
        listen_spec,
        listen,
        hash,
        hash_tag: if cluster { Some(*b"{}") } else { d.hash_tag },
        distribution,
        timeout: d
            .timeout
            .filter(|&t| t > 0)
            .map(|t| Duration::from_millis(u64::from(t))),
        backlog: d.backlog.unwrap_or(512),
        client_connections: d.client_connections.unwrap_or(0),
        redis,
        redis_auth: d.redis_auth.map(|(a, _)| a),
        redis_username: d.redis_username,
        client_users: d.client_users.into_iter().map(|(u, _)| u).collect(),
        sentinels: d.sentinels.into_iter().map(|(s, _)| s.addr).collect(),
        sentinel_auth: d.sentinel_auth,
        read_from: d.read_from.map_or(ReadFrom::Master, |(r, _)| r),
        replica_max_lag: Duration::from_secs(u64::from(
            d.replica_max_lag.unwrap_or(DEFAULT_REPLICA_MAX_LAG),
        )),
        redis_db: d.redis_db.unwrap_or(0),
        preconnect: d.preconnect.unwrap_or(false),
        auto_eject_hosts: d.auto_eject_hosts.unwrap_or(false),
        server_connections: d.server_connections.map_or(1, |(n, _)| n),
        session_connections: d.session_connections.unwrap_or(DEFAULT_SESSION_CONNECTIONS),
        server_retry_timeout: Duration::from_millis(u64::from(
            d.server_retry_timeout.unwrap_or(30_000),
        )),
        server_failure_limit: d.server_failure_limit.unwrap_or(2),
        tcpkeepalive: d.tcpkeepalive.unwrap_or(false),
        reuseport: d.reuseport.unwrap_or(false),
        servers,
        tls,
        seeds,
        cluster_slots: None,
        tls_loaded: None,
    };
    (distribution.validate)(&conf.nodes()).map_err(|msg| PoolError {
        line: None,
        key: Some("servers".into()),
        msg,
    })?;
    Ok(conf)
}

#[cfg(test)]
mod tests;
