//! Protocol scanners and composers. Pure code: bytes in, positions out; nothing
//! here touches a socket. A scan either finds one complete message (and says how
//! many bytes it spans), or says it needs more bytes, or reports an error; a
//! failed or partial scan consumes nothing.

pub mod guard;
pub mod memcache;
pub mod redis;

/// The outcome of scanning a buffer for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A complete message of this many bytes is at the start of the buffer.
    Complete(usize),
    /// More bytes are needed; `hint` is a lower bound of the message size when
    /// known (lets the reader reserve once for a large value).
    Incomplete { hint: usize },
}
