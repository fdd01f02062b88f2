//! Pub/sub frames, sans IO: which replies of a subscribed server connection
//! are messages (not answers to a request), and the subscribe/unsubscribe
//! confirmations the proxy writes itself, with the client's own counts.

use super::request::{put_bulk, put_int};

/// The kind of a frame a subscribed connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `message`, `pmessage`, `smessage`: published, answers no request.
    Message,
    /// Anything else: a confirmation, or the reply to a request.
    Reply,
}

/// Classifies a complete reply of a subscribed connection: an array (RESP2)
/// or push (RESP3) whose first element is `message`, `pmessage` or
/// `smessage`.
pub fn frame(reply: &[u8]) -> Frame {
    if !matches!(reply.first(), Some(b'*' | b'>')) {
        return Frame::Reply;
    }
    // `*3\r\n$7\r\nmessage\r\n…`: the header, then the first bulk.
    let Some(nl) = reply.iter().position(|&b| b == b'\n') else {
        return Frame::Reply;
    };
    let rest = &reply[nl + 1..];
    for word in [&b"message"[..], b"pmessage", b"smessage"] {
        let mut head = Vec::with_capacity(16);
        put_bulk(&mut head, word);
        if rest.len() >= head.len() && rest[..head.len()].eq_ignore_ascii_case(&head) {
            return Frame::Message;
        }
    }
    Frame::Reply
}

/// A confirmation: `[kind, channel or nil, count]`, as an array (RESP2) or
/// a push (RESP3), as Redis writes it.
pub fn confirmation(resp3: bool, kind: &[u8], channel: Option<&[u8]>, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + channel.map_or(0, <[u8]>::len));
    out.extend_from_slice(if resp3 { b">3\r\n" } else { b"*3\r\n" });
    put_bulk(&mut out, kind);
    match channel {
        Some(c) => put_bulk(&mut out, c),
        None if resp3 => out.extend_from_slice(b"_\r\n"),
        None => out.extend_from_slice(b"$-1\r\n"),
    }
    put_int(&mut out, count);
    out
}

/// `PING [msg]` while subscribed in RESP2: `["pong", msg or ""]`.
pub fn subscribed_pong(msg: Option<&[u8]>) -> Vec<u8> {
    let mut out = b"*2\r\n$4\r\npong\r\n".to_vec();
    put_bulk(&mut out, msg.unwrap_or(b""));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_replies() {
        assert_eq!(
            frame(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n"),
            Frame::Message
        );
        assert_eq!(
            frame(b"*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$1\r\nx\r\n"),
            Frame::Message
        );
        assert_eq!(
            frame(b">3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$1\r\nx\r\n"),
            Frame::Message
        );
        assert_eq!(
            frame(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"),
            Frame::Reply
        );
        assert_eq!(
            frame(b">3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"),
            Frame::Reply
        );
        assert_eq!(frame(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"), Frame::Reply);
        assert_eq!(frame(b"+PONG\r\n"), Frame::Reply);
        assert_eq!(frame(b"*1\r\n$7\r\nmessage\r\n"), Frame::Message);
        assert_eq!(frame(b"*"), Frame::Reply);
    }

    #[test]
    fn confirmations_as_redis_writes_them() {
        assert_eq!(
            confirmation(false, b"subscribe", Some(b"ch"), 2),
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:2\r\n"
        );
        assert_eq!(
            confirmation(true, b"unsubscribe", None, 0),
            b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"
        );
        assert_eq!(
            confirmation(false, b"punsubscribe", None, 0),
            b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n"
        );
        assert_eq!(subscribed_pong(None), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        assert_eq!(
            subscribed_pong(Some(b"hi")),
            b"*2\r\n$4\r\npong\r\n$2\r\nhi\r\n"
        );
    }
}
