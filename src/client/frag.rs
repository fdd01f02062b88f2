//! Multi-key requests split across servers, for both protocols: group the keys
//! per server (linear in the number of keys), send one part per server, and
//! when every part has answered, merge the replies in the original key order.
//! The protocol modules build the parts' wire format and do the merging.

use super::{Pending, Session};
use crate::dist::NoServer;
use crate::msg::{ErrKind, Protocol, Slot};
use crate::route::Router;
use crate::stats::metrics::{Class, PoolField};
use bytes::Bytes;
use smallvec::SmallVec;
use std::ops::Range;
use std::rc::Rc;

/// Parts per request kept inline (no allocation): most requests touch a few
/// servers.
const PARTS: usize = 4;
/// Keys per request kept inline.
const KEYS: usize = 16;

/// The keys of a request grouped per server.
#[derive(Debug, Default)]
pub struct Plan {
    /// Per part: the server, and where the part's keys are in `members`.
    pub parts: SmallVec<[(usize, Range<u32>); PARTS]>,
    /// Key indices grouped by part, each group in request order.
    pub members: SmallVec<[u32; KEYS]>,
    /// For each key (in request order), the index of its part.
    pub order: SmallVec<[u32; KEYS]>,
}

/// Routes every key (against one snapshot of the distribution); `Err` names
/// the first key that has no server. Linear in the number of keys.
pub fn plan<'k>(
    router: &Router,
    nservers: usize,
    keys: impl ExactSizeIterator<Item = &'k [u8]>,
) -> Result<Plan, (&'k [u8], NoServer)> {
    // Which part each server's keys go to: on the stack for usual pools.
    let mut small = [u32::MAX; 64];
    let mut large = Vec::new();
    let part_of: &mut [u32] = if nservers <= small.len() {
        &mut small[..nservers]
    } else {
        large.resize(nservers, u32::MAX);
        &mut large
    };
    let n = keys.len();
    let mut plan = Plan {
        parts: SmallVec::new(),
        members: SmallVec::with_capacity(n),
        order: SmallVec::with_capacity(n),
    };
    // Parts in order of first appearance; `Range::end` counts keys for now.
    let routing = router.routing();
    // `redis_cluster`: a part per slot (a node refuses keys of two slots in
    // one command); several parts may go to the same node.
    let mut by_slot: Option<std::collections::HashMap<u16, u32>> = None;
    let slotted = routing.has_slots();
    for key in keys {
        let (idx, slot) = if slotted {
            routing.dispatch_slot(key)
        } else {
            routing.dispatch(key).map(|i| (i, None))
        }
        .map_err(|e| (key, e))?;
        let at = match slot {
            None => &mut part_of[idx],
            Some(s) => by_slot
                .get_or_insert_with(Default::default)
                .entry(s)
                .or_insert(u32::MAX),
        };
        if *at == u32::MAX {
            *at = plan.parts.len() as u32;
            plan.parts.push((idx, 0..0));
        }
        let p = *at;
        plan.parts[p as usize].1.end += 1;
        plan.order.push(p);
    }
    // Counts become ranges; then each key goes to the next place of its part.
    let mut start = 0;
    let mut next: SmallVec<[u32; PARTS]> = SmallVec::with_capacity(plan.parts.len());
    for (_, r) in plan.parts.iter_mut() {
        *r = start..start + r.end;
        next.push(start);
        start = r.end;
    }
    plan.members.resize(n, 0);
    for (i, &p) in plan.order.iter().enumerate() {
        let at = &mut next[p as usize];
        plan.members[*at as usize] = i as u32;
        *at += 1;
    }
    Ok(plan)
}

/// Sends one part per server (its wire format built by `wire` from the part's
/// key indices, in request order) and queues the request's merged reply on
/// the client.
pub fn send_parts(
    s: &mut Session,
    plan: Plan,
    merge: Merge,
    mut wire: impl FnMut(&[u32]) -> Bytes,
) {
    let mut parts = SmallVec::with_capacity(plan.parts.len());
    let countdown = Rc::new(std::cell::Cell::new(plan.parts.len() as u32));
    for (idx, r) in &plan.parts {
        let slot = Slot::part(s.waker.clone(), countdown.clone());
        let members = &plan.members[r.start as usize..r.end as usize];
        s.send(*idx, wire(members), slot.clone());
        parts.push(slot);
    }
    s.pool
        .stats
        .get(PoolField::Fragments)
        .add(parts.len() as i64);
    s.owe(
        Pending::Frags(Box::new(Frags {
            parts,
            order: plan.order,
            merge,
        })),
        Class::Multi,
    );
}

/// How the parts' replies become the client's reply.
#[derive(Debug)]
pub enum Merge {
    /// A redis multi-key command.
    Redis(crate::proto::redis::Fragment),
    /// A memcache retrieval: the request and its keys, to match `VALUE` blocks.
    Memcache { req: Bytes, keys: Vec<Range<usize>> },
}

/// A request split across servers, waiting for its parts.
#[derive(Debug)]
pub struct Frags {
    pub parts: SmallVec<[Rc<Slot>; PARTS]>,
    pub order: SmallVec<[u32; KEYS]>,
    pub merge: Merge,
}

impl Frags {
    pub fn is_done(&self) -> bool {
        self.parts.iter().all(|p| p.is_done())
    }

    /// The client's reply, built from every part's reply, and whether it is
    /// the proxy's error because a part could not be forwarded. A part that
    /// failed fails the whole request (one error reply; the connection stays
    /// open).
    pub fn coalesce(&mut self) -> (Bytes, bool) {
        let proto = match self.merge {
            Merge::Redis(_) => Protocol::Redis,
            Merge::Memcache { .. } => Protocol::Memcache,
        };
        let mut replies: SmallVec<[Bytes; PARTS]> = SmallVec::with_capacity(self.parts.len());
        for p in &self.parts {
            match p.take() {
                Some(Ok(r)) => replies.push(r),
                Some(Err(e)) => return (proto.error_reply(e), true),
                None => return (proto.error_reply(ErrKind::Io), true),
            }
        }
        let merged = match &self.merge {
            Merge::Redis(kind) => super::redis::merge(*kind, &replies, &self.order),
            Merge::Memcache { req, keys } => {
                super::memcache::merge(req, keys, &replies, &self.order)
            }
        };
        (merged, false)
    }
}
