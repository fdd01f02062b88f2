//! Stats: nutcracker's metric names and descriptions (`-D`).
//!
//! The stats port, JSON writer and Prometheus exporter build on these tables.

/// Pool-level metrics, in nutcracker's order: (name, description).
pub const POOL_METRICS: &[(&str, &str)] = &[
    ("client_eof", "# eof on client connections"),
    ("client_err", "# errors on client connections"),
    ("client_connections", "# active client connections"),
    ("server_ejects", "# times backend server was ejected"),
    ("forward_error", "# times we encountered a forwarding error"),
    (
        "fragments",
        "# fragments created from a multi-vector request",
    ),
];

/// Server-level metrics, in nutcracker's order: (name, description).
pub const SERVER_METRICS: &[(&str, &str)] = &[
    ("server_eof", "# eof on server connections"),
    ("server_err", "# errors on server connections"),
    ("server_timedout", "# timeouts on server connections"),
    ("server_connections", "# active server connections"),
    (
        "server_ejected_at",
        "timestamp when server was ejected in usec since epoch",
    ),
    ("requests", "# requests"),
    ("request_bytes", "total request bytes"),
    ("responses", "# responses"),
    ("response_bytes", "total response bytes"),
    ("in_queue", "# requests in incoming queue"),
    ("in_queue_bytes", "current request bytes in incoming queue"),
    ("out_queue", "# requests in outgoing queue"),
    ("out_queue_bytes", "current request bytes in outgoing queue"),
];

/// The `-D` text, byte for byte as nutcracker prints it after the banner.
pub fn describe() -> String {
    let mut s = String::from("pool stats:\n");
    for (name, desc) in POOL_METRICS {
        s.push_str(&format!("  {name:<20}\"{desc}\"\n"));
    }
    s.push_str("\nserver stats:\n");
    for (name, desc) in SERVER_METRICS {
        s.push_str(&format!("  {name:<20}\"{desc}\"\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn describe_layout() {
        let d = super::describe();
        assert!(
            d.starts_with("pool stats:\n  client_eof          \"# eof on client connections\"\n")
        );
        assert!(d.contains("\"\n\nserver stats:\n  server_eof "));
        assert!(d.ends_with("  out_queue_bytes     \"current request bytes in outgoing queue\"\n"));
    }
}
