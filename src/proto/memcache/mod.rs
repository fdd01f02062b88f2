//! memcache ASCII request and reply scanning.

pub mod binary;
pub mod reply;
pub mod request;

pub use reply::{scan_reply, value_at, values, BadReply, Value};
pub use request::{scan_request, Command, Limits, Malformed, Request, Skip};
