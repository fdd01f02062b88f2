//! Reads from replicas (`read_from: prefer_replica | replica`).
//!
//! A read-only command (by the command table's flags) that is forwarded
//! outside any session state — no transaction, no pinned connection to the
//! server — goes to a replica of its key's server, round-robin over the
//! replicas Sentinel names and the proxy found healthy (see
//! [`crate::sentinel`]). If the read fails there (the replica is down,
//! resets, times out), it is not answered with the error: the replica is
//! skipped for `server_retry_timeout` and the read is sent again, to
//! another replica, or to the master with `prefer_replica`. Reads are
//! idempotent, so a retried read is safe; a replica that dies mid-load
//! costs latency, not failed reads. With `replica`, a read with no replica
//! left gets an error reply and never reaches the master.

use super::Session;
use crate::conf::ReadFrom;
use crate::msg::Slot;
use crate::server::Dialect;
use crate::worker::{PoolCell, PoolLocal};
use bytes::Bytes;
use std::rc::Rc;

impl Session {
    /// Sends a read for server `idx` to one of its replicas (or where
    /// `read_from` says when there is none).
    pub fn send_read(&self, idx: usize, data: Bytes, slot: Rc<Slot>) {
        route(
            &self.pool,
            &self.cell,
            idx,
            data,
            slot,
            self.dialect,
            self.now,
        );
    }
}

fn route(
    pool: &Rc<PoolLocal>,
    cell: &Rc<PoolCell>,
    idx: usize,
    data: Bytes,
    slot: Rc<Slot>,
    dialect: Dialect,
    read: std::time::Instant,
) {
    let stats = pool.stats.servers.load().get(idx).cloned();
    let Some(r) = pool.pick_replica(idx) else {
        return no_replica(pool, idx, data, slot, dialect, read);
    };
    if let Some(st) = &stats {
        st.replica_reads.incr();
    }
    let (replica, weak_slot, cell2, data2) = (
        Rc::downgrade(r),
        Rc::downgrade(&slot),
        cell.clone(),
        data.clone(),
    );
    let name = pool.shared.conf.servers[idx].name.clone();
    slot.on_error(Box::new(move |_| {
        let Some(slot) = weak_slot.upgrade() else {
            return false;
        };
        // The pool as it is now (Sentinel may have moved the master), if
        // the server is still where it was in it.
        let pool = cell2.current();
        if pool.shared.conf.servers.get(idx).map(|s| &s.name) != Some(&name) {
            return false;
        }
        if let Some(r) = replica.upgrade() {
            r.failed(pool.shared.conf.server_retry_timeout);
        }
        if let Some(st) = &stats {
            st.replica_retries.incr();
        }
        route(
            &pool,
            &cell2,
            idx,
            data2,
            slot,
            dialect,
            std::time::Instant::now(),
        );
        true
    }));
    r.slot.send_in(dialect, data, slot, read);
}

/// No replica of server `idx` to read from.
fn no_replica(
    pool: &PoolLocal,
    idx: usize,
    data: Bytes,
    slot: Rc<Slot>,
    dialect: Dialect,
    read: std::time::Instant,
) {
    match pool.shared.conf.read_from {
        ReadFrom::Replica => slot.fill(Ok(Bytes::from(format!(
            "-ERR no replica of server '{}' is available for reading (read_from: replica)\r\n",
            pool.shared.conf.servers[idx].name
        )))),
        _ => pool.servers[idx].send_in(dialect, data, slot, read),
    }
}
