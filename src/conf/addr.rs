//! `listen:` values and `servers:` entries (spec §1.3, §1.4).

use std::net::{SocketAddr, ToSocketAddrs};

/// Longest unix socket path (`sizeof(sun_path)` − 1 on Linux).
pub const MAX_UNIX_PATH: usize = 107;

/// Where a pool listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// TCP, resolved at load time (first address of getaddrinfo, as nutcracker).
    Tcp {
        host: String,
        port: u16,
        addr: SocketAddr,
    },
    /// A unix socket path, with the permission bits applied after bind.
    Unix { path: String, perm: Option<u32> },
}

/// Parses a `listen:` value.
pub fn parse_listen(v: &str) -> Result<Listen, String> {
    if v.starts_with('/') {
        let (path, perm) = match v.rsplit_once(' ') {
            Some((path, perm)) => (path.trim_end(), Some(perm)),
            None => (v, None),
        };
        let perm = match perm {
            None => None,
            Some(p) => {
                // nutcracker uses strtol(…, 8) and silently ignores what is not octal
                // ("999" becomes 0: no chmod). We refuse it instead (compatibility.md).
                let mode = u32::from_str_radix(p, 8)
                    .ok()
                    .filter(|_| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                match mode {
                    Some(m) if m <= 0o777 => (m != 0).then_some(m),
                    _ => {
                        return Err(format!(
                            "has an invalid file permission \"{p}\": expected \"/path/to/socket [octal permissions ≤ 0777]\", e.g. \"/tmp/x.sock 0600\""
                        ))
                    }
                }
            }
        };
        if path.len() > MAX_UNIX_PATH {
            return Err(format!(
                "unix socket path is {} bytes long; the limit is {MAX_UNIX_PATH}",
                path.len()
            ));
        }
        return Ok(Listen::Unix {
            path: path.to_string(),
            perm,
        });
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err("has an invalid \"hostname:port\" format string: expected \"host:port\" or \"/path/to/socket [perm]\"".into());
    };
    let port = parse_port(port).ok_or_else(|| {
        format!("has an invalid port \"{port}\": expected 1..65535 in \"hostname:port\"")
    })?;
    let addr = resolve(host, port)?;
    Ok(Listen::Tcp {
        host: host.to_string(),
        port,
        addr,
    })
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if host.is_empty() {
        return Err("has an empty host: expected \"host:port\"".into());
    }
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("address \"{host}\" resolved to nothing")),
        Err(e) => Err(format!("address resolution of \"{host}\" failed: {e}")),
    }
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 5 {
        return None;
    }
    s.parse::<u16>().ok().filter(|&p| p != 0)
}

/// Where a server is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddr {
    /// Host (resolved at every connect, as nutcracker) and port.
    Tcp { host: String, port: u16 },
    /// A unix socket path.
    Unix { path: String },
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            ServerAddr::Unix { path } => f.write_str(path),
        }
    }
}

/// One `servers:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConf {
    /// The entry as written (`127.0.0.1:6379:1 r1`).
    pub spec: String,
    /// The server name (spec §1.4.7).
    pub name: String,
    /// Whether the name was given explicitly.
    pub named: bool,
    pub addr: ServerAddr,
    pub weight: u32,
}

const SERVER_FORMAT: &str =
    "expected \"host:port:weight [name]\" or \"/path/to/socket:weight [name]\"";

/// Parses a `servers:` entry (parsed from the end, like nutcracker).
pub fn parse_server(spec: &str) -> Result<ServerConf, String> {
    let (rest, name) = match spec.rsplit_once(' ') {
        Some((rest, name)) => {
            if name.is_empty() {
                // nutcracker accepts an empty name here; it is always a typo.
                return Err(format!(
                    "\"{spec}\" ends with a space but has no name after it: {SERVER_FORMAT}"
                ));
            }
            if rest.contains(' ') {
                return Err(format!(
                    "\"{spec}\": a server name cannot contain spaces (nutcracker reads this as an invalid weight): {SERVER_FORMAT}"
                ));
            }
            (rest, Some(name))
        }
        None => (spec, None),
    };
    let Some((addr, weight)) = rest.rsplit_once(':') else {
        return Err(format!("\"{spec}\" has too few fields: {SERVER_FORMAT}"));
    };
    let weight = if !weight.is_empty() && weight.bytes().all(|b| b.is_ascii_digit()) {
        match weight.parse::<u32>() {
            Ok(0) => return Err(format!("\"{spec}\" has a zero weight: weights start at 1")),
            Ok(w) if w <= i32::MAX as u32 => w,
            _ => return Err(format!("\"{spec}\" has an invalid weight \"{weight}\": expected a number from 1 to 2147483647")),
        }
    } else {
        return Err(format!(
            "\"{spec}\" has an invalid weight \"{weight}\": {SERVER_FORMAT}"
        ));
    };
    let (addr, default_name) = if addr.starts_with('/') {
        if addr.len() > MAX_UNIX_PATH {
            return Err(format!(
                "\"{spec}\": unix socket path is {} bytes long; the limit is {MAX_UNIX_PATH}",
                addr.len()
            ));
        }
        (
            ServerAddr::Unix {
                path: addr.to_string(),
            },
            format!("{addr}:"),
        )
    } else {
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(format!("\"{spec}\" has too few fields: {SERVER_FORMAT}"));
        };
        let port = parse_port(port).ok_or_else(|| {
            format!("\"{spec}\" has an invalid port \"{port}\": expected 1..65535")
        })?;
        if host.is_empty() {
            return Err(format!("\"{spec}\" has an empty host: {SERVER_FORMAT}"));
        }
        // libmemcached compatibility: port 11211 is left out of the ketama name.
        let default_name = if port == 11211 {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        (
            ServerAddr::Tcp {
                host: host.to_string(),
                port,
            },
            default_name,
        )
    };
    Ok(ServerConf {
        spec: spec.to_string(),
        named: name.is_some(),
        name: name.map_or(default_name, str::to_string),
        addr,
        weight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_entries() {
        let s = parse_server("127.0.0.1:6379:1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s.name.as_str(), s.named, s.weight),
            ("127.0.0.1:6379", false, 1)
        );
        let s = parse_server("127.0.0.2:11211:2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.name, "127.0.0.2");
        let s = parse_server("127.0.0.1:6379:3 r1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.name.as_str(), s.named, s.weight), ("r1", true, 3));
        let s = parse_server("/tmp/r.sock:1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s.name.as_str(), s.addr.clone()),
            (
                "/tmp/r.sock:",
                ServerAddr::Unix {
                    path: "/tmp/r.sock".into()
                }
            )
        );
        let s = parse_server("::1:6379:1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.addr,
            ServerAddr::Tcp {
                host: "::1".into(),
                port: 6379
            }
        );
        // nutcracker's quirk, kept: extra fields become part of the host.
        let s = parse_server("127.0.0.1:6379:1:2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s.addr, s.weight),
            (
                ServerAddr::Tcp {
                    host: "127.0.0.1:6379".into(),
                    port: 1
                },
                2
            )
        );
        for bad in [
            "127.0.0.1:6379",
            "/tmp/r.sock",
            "h:1:0",
            "h:1:x",
            "h:0:1",
            "h:70000:1",
            "h:1:1 ",
            "h:1:1 my server",
            ":1:1",
            "h:1:99999999999",
        ] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_values() {
        assert!(matches!(
            parse_listen("127.0.0.1:22121"),
            Ok(Listen::Tcp { port: 22121, .. })
        ));
        assert!(matches!(parse_listen("::1:22121"), Ok(Listen::Tcp { .. })));
        assert_eq!(
            parse_listen("/tmp/x.sock 0600"),
            Ok(Listen::Unix {
                path: "/tmp/x.sock".into(),
                perm: Some(0o600)
            })
        );
        assert_eq!(
            parse_listen("/tmp/x.sock"),
            Ok(Listen::Unix {
                path: "/tmp/x.sock".into(),
                perm: None
            })
        );
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:x",
            "127.0.0.1:70000",
            ":22121",
            "/tmp/x.sock 1000",
            "/tmp/x.sock 999",
            "127.0.0.1:22121 0666",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }
}
