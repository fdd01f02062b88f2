//! RESP (redis) request and reply scanning, the command table, and the
//! fragment/coalesce helpers for multi-key commands.

pub mod command;
pub mod reply;
pub mod request;

pub use command::{lookup, Command, Fragment, Keys, Local};
pub use request::{scan_request, Limits, RequestError};
