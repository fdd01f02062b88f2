//! nutcracker's stats document, byte for byte (spec §3.2): members as
//! `"name":value, `, objects opened as `"name": {`, closed by turning the
//! trailing `, ` into `},`, and the document's last `,` turned into `}\n`.

use super::{Snapshot, POOL_METRICS, SERVER_METRICS};
use crate::cli::COMPAT_VERSION;

fn name(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    // nutcracker writes names raw; quotes, backslashes and control bytes are
    // escaped here so that an odd pool name cannot break the document.
    for &b in s.as_bytes() {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn string(out: &mut Vec<u8>, key: &str, v: &str) {
    name(out, key);
    out.push(b':');
    name(out, v);
    out.extend_from_slice(b", ");
}

fn number(out: &mut Vec<u8>, key: &str, v: i64) {
    name(out, key);
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    out.extend_from_slice(b", ");
}

fn open(out: &mut Vec<u8>, key: &str) {
    name(out, key);
    out.extend_from_slice(b": {");
}

/// Closes the innermost object: its trailing `, ` (or, after a nested
/// object, `,`) becomes `},`.
fn close(out: &mut Vec<u8>) {
    if out.ends_with(b", ") {
        out.truncate(out.len() - 2);
    } else if out.ends_with(b",") {
        out.truncate(out.len() - 1);
    }
    out.extend_from_slice(b"},");
}

/// Renders the document.
pub fn render(s: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + s.pools.len() * 1024);
    out.push(b'{');
    string(&mut out, "service", "nutcracker");
    string(&mut out, "source", &s.hostname);
    string(&mut out, "version", COMPAT_VERSION);
    number(&mut out, "uptime", s.uptime as i64);
    number(&mut out, "timestamp", s.timestamp as i64);
    number(&mut out, "total_connections", s.total_connections);
    number(&mut out, "curr_connections", s.curr_connections);
    for p in &s.pools {
        open(&mut out, &p.name);
        for ((key, _), v) in POOL_METRICS.iter().zip(p.m) {
            number(&mut out, key, v);
        }
        for sv in &p.servers {
            open(&mut out, &sv.name);
            for ((key, _), v) in SERVER_METRICS.iter().zip(sv.m) {
                number(&mut out, key, v);
            }
            close(&mut out);
        }
        close(&mut out);
    }
    // The last separator becomes the document's closing brace.
    if out.ends_with(b", ") {
        out.truncate(out.len() - 2);
    } else if out.ends_with(b",") {
        out.truncate(out.len() - 1);
    }
    out.extend_from_slice(b"}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::metrics::HistogramSum;
    use crate::stats::{PoolSnap, ServerSnap};

    fn server(name: &str, m: [i64; 13]) -> ServerSnap {
        ServerSnap {
            name: name.into(),
            m,
            latency: HistogramSum::default(),
            ejected: false,
            pinned: 0,
            address: String::new(),
            replicas: Vec::new(),
            replica_reads: 0,
            replica_retries: 0,
        }
    }

    /// The spec's sample document (§3.2), rebuilt from its numbers.
    #[test]
    fn matches_nutcrackers_bytes() {
        let snap = Snapshot {
            hostname: "vm".into(),
            uptime: 6,
            timestamp: 1795581981,
            total_connections: 12,
            curr_connections: 5,
            threads: 1,
            reloads: (0, 0),
            failovers: 0,
            slot_maps: 0,
            slot_map_fetches: 0,
            sentinels: Vec::new(),
            config: (0, 0),
            pools: vec![
                PoolSnap {
                    name: "alpha".into(),
                    m: [6, 0, 1, 0, 0, 0],
                    latency: Default::default(),
                    security: [0; 3],
                    redirects: [0; 3],
                    listening: true,
                    servers: vec![
                        server("beta_node", [0, 0, 0, 1, 0, 11, 304, 11, 109, 0, 0, 0, 0]),
                        server("127.0.0.1:16379", [0; 13]),
                    ],
                },
                PoolSnap {
                    name: "gamma".into(),
                    m: [1, 0, 0, 0, 0, 0],
                    latency: Default::default(),
                    security: [0; 3],
                    redirects: [0; 3],
                    listening: true,
                    servers: vec![server(
                        "127.0.0.1:21211",
                        [0, 0, 0, 1, 0, 2, 26, 2, 29, 0, 0, 0, 0],
                    )],
                },
            ],
        };
        let want = r#"{"service":"nutcracker", "source":"vm", "version":"0.5.0", "uptime":6, "timestamp":1795581981, "total_connections":12, "curr_connections":5, "alpha": {"client_eof":6, "client_err":0, "client_connections":1, "server_ejects":0, "forward_error":0, "fragments":0, "beta_node": {"server_eof":0, "server_err":0, "server_timedout":0, "server_connections":1, "server_ejected_at":0, "requests":11, "request_bytes":304, "responses":11, "response_bytes":109, "in_queue":0, "in_queue_bytes":0, "out_queue":0, "out_queue_bytes":0},"127.0.0.1:16379": {"server_eof":0, "server_err":0, "server_timedout":0, "server_connections":0, "server_ejected_at":0, "requests":0, "request_bytes":0, "responses":0, "response_bytes":0, "in_queue":0, "in_queue_bytes":0, "out_queue":0, "out_queue_bytes":0}},"gamma": {"client_eof":1, "client_err":0, "client_connections":0, "server_ejects":0, "forward_error":0, "fragments":0, "127.0.0.1:21211": {"server_eof":0, "server_err":0, "server_timedout":0, "server_connections":1, "server_ejected_at":0, "requests":2, "request_bytes":26, "responses":2, "response_bytes":29, "in_queue":0, "in_queue_bytes":0, "out_queue":0, "out_queue_bytes":0}}}
"#;
        assert_eq!(String::from_utf8_lossy(&render(&snap)), want);
    }

    #[test]
    fn odd_names_stay_valid_json() {
        let snap = Snapshot {
            hostname: "h\"x".into(),
            uptime: 0,
            timestamp: 0,
            total_connections: 0,
            curr_connections: 0,
            threads: 1,
            reloads: (0, 0),
            failovers: 0,
            slot_maps: 0,
            slot_map_fetches: 0,
            sentinels: Vec::new(),
            config: (0, 0),
            pools: vec![],
        };
        let doc = render(&snap);
        assert!(doc.ends_with(b"\"curr_connections\":0}\n"));
        assert!(String::from_utf8_lossy(&doc).contains(r#""source":"h\"x""#));
    }
}
