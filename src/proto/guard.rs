//! Requests no cache client ever sends, recognised so the connection can be
//! closed before anything after them runs (cross-protocol scripting).
//!
//! A web page can make a victim's browser POST to `http://127.0.0.1:22121/`.
//! The body is free text, so it can carry `SET pwned yes` or `set k 0 0 3`.
//! redis-server closes a connection whose command is `POST` or `Host:` for that
//! reason (since 3.2.7); a proxy that answers errors and carries on would run
//! the body. The checks here run only where a request was not recognised (a
//! command-table miss, a line that is not RESP, an unknown memcache command),
//! so the request path pays nothing for them.

/// Why a connection was closed as an attack: the `reason` label of
/// `shardproxy_security_rejects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// An HTTP request line (`POST / HTTP/1.1`) or header (`Host: …`).
    Http,
    /// A TLS ClientHello (first byte 0x16) on a plain listener.
    Tls,
    /// Another byte no text command starts with (binary garbage).
    Binary,
}

impl Attack {
    pub const ALL: [Attack; 3] = [Attack::Http, Attack::Tls, Attack::Binary];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Attack::Http => "http",
            Attack::Tls => "tls",
            Attack::Binary => "binary",
        }
    }

    /// What the log says.
    pub fn describe(self) -> &'static str {
        match self {
            Attack::Http => "an HTTP request (POST, Host: or an HTTP request line)",
            Attack::Tls => "a TLS handshake on a plain-text listener",
            Attack::Binary => "binary data where a text command was expected",
        }
    }
}

/// The first byte of a text command line that no client sends: a TLS record
/// header (0x16), or a control or non-ASCII byte. Whitespace and line ends are
/// text (an empty line is a valid, ignored request).
#[inline]
pub fn binary_start(first: u8) -> Option<Attack> {
    match first {
        0x16 => Some(Attack::Tls),
        b'\t' | b'\n' | b'\r' | b' ' => None,
        0..=0x1f | 0x7f..=0xff => Some(Attack::Binary),
        _ => None,
    }
}

/// A command name redis-server treats as an attack: `POST` or `Host:`, in any
/// case.
pub fn http_command(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:")
}

/// An HTTP request line `<METHOD> <target> HTTP/<digit>…` (a method is an
/// upper-case token, as browsers send it), or a `Host:` header line, given a
/// line's whitespace-separated tokens.
pub fn http_line<'a>(tokens: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut t = tokens.into_iter();
    let Some(first) = t.next() else {
        return false;
    };
    if first.eq_ignore_ascii_case(b"host:") || first.eq_ignore_ascii_case(b"post") {
        return true;
    }
    if first.is_empty() || !first.iter().all(u8::is_ascii_uppercase) {
        return false;
    }
    let (Some(_target), Some(version), None) = (t.next(), t.next(), t.next()) else {
        return false;
    };
    version.len() > 5 && version[..5].eq_ignore_ascii_case(b"http/") && version[5].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> bool {
        http_line(s.split_ascii_whitespace().map(str::as_bytes))
    }

    #[test]
    fn http_lines() {
        assert!(line("POST / HTTP/1.1"));
        assert!(line("post /x"));
        assert!(line("GET / HTTP/1.1"));
        assert!(line("PUT /a?b HTTP/2"));
        assert!(line("OPTIONS * HTTP/1.0"));
        assert!(line("Host: 127.0.0.1:22121"));
        assert!(line("HOST: x"));
        assert!(!line("GET / HTTP"));
        assert!(!line("get / HTTP/1.1"));
        assert!(!line("GET key"));
        assert!(!line("SET a HTTP/1.1 x"));
        assert!(!line(""));
        assert!(!line("Hostname: x"));
        assert!(http_command(b"pOsT"));
        assert!(http_command(b"HOST:"));
        assert!(!http_command(b"host"));
    }

    #[test]
    fn binary_starts() {
        assert_eq!(binary_start(0x16), Some(Attack::Tls));
        assert_eq!(binary_start(0x80), Some(Attack::Binary));
        assert_eq!(binary_start(0), Some(Attack::Binary));
        assert_eq!(binary_start(0x7f), Some(Attack::Binary));
        for ok in [b'*', b'G', b'g', b'\r', b'\n', b' ', b'\t', b'~'] {
            assert_eq!(binary_start(ok), None, "{ok}");
        }
    }
}
