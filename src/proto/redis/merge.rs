//! How the replies of a request sent to several servers become the client's
//! one reply: one function, one rule per [`Fragment`] (split commands merge
//! in key order; fan-outs sum, concatenate, AND, compare, pick, or rewrite a
//! cursor). Pure: replies in, a reply out. A reply the rule cannot read
//! becomes `-ERR Invalid argument`, never a guess.

use super::policy::Fragment;
use super::reply::{array_header, bulk_element, integer, scan_reply};
use crate::msg::ErrKind;
use crate::proto::Scan;
use bytes::Bytes;
use smallvec::SmallVec;
use std::ops::Range;

const OK: &[u8] = b"+OK\r\n";

fn invalid() -> Bytes {
    ErrKind::Invalid.redis_reply()
}

/// Merges the parts' replies of a split or fanned-out request (every part
/// answered). `order` is, for each key in request order, the index of its part.
pub fn merge(kind: Fragment, replies: &[Bytes], order: &[u32]) -> Bytes {
    if kind == Fragment::AnyOk {
        // SCRIPT KILL: the server that ran the script says OK, the others
        // -NOTBUSY.
        return match replies.iter().find(|r| &r[..] == OK) {
            Some(r) => r.clone(),
            None => replies.first().cloned().unwrap_or_else(invalid),
        };
    }
    // A backend error reply (e.g. -NOAUTH, -READONLY) is passed on as is.
    if let Some(e) = replies.iter().find(|r| r.first() == Some(&b'-')) {
        return e.clone();
    }
    match kind {
        Fragment::Sum => {
            let mut sum = 0i64;
            for r in replies {
                match integer(r) {
                    Some(n) => sum = sum.saturating_add(n),
                    None => return invalid(),
                }
            }
            Bytes::from(format!(":{sum}\r\n"))
        }
        Fragment::Mset | Fragment::AllOk | Fragment::AnyOk => {
            if replies.iter().all(|r| &r[..] == OK) {
                Bytes::from_static(OK)
            } else {
                invalid()
            }
        }
        Fragment::Mget | Fragment::No => mget(replies, order),
        Fragment::Same => match replies.split_first() {
            Some((first, rest)) if rest.iter().all(|r| r == first) => first.clone(),
            _ => Bytes::from_static(
                b"-ERR the servers of the pool answered differently (run it again, or check each server)\r\n",
            ),
        },
        Fragment::Concat => concat(replies),
        Fragment::And => and(replies).unwrap_or_else(invalid),
        Fragment::PairSum => pair_sum(replies).unwrap_or_else(invalid),
        Fragment::Random => {
            let keys: SmallVec<[&Bytes; 4]> =
                replies.iter().filter(|r| !is_nil(r)).collect();
            match keys.len() {
                0 => replies.first().cloned().unwrap_or_else(invalid),
                n => keys[fastrand::usize(..n)].clone(),
            }
        }
        Fragment::Info { clients } => info(replies, clients).unwrap_or_else(invalid),
        Fragment::Min => match replies.first().map(|r| r.first()) {
            Some(Some(b':')) => replies
                .iter()
                .map(|r| integer(r))
                .collect::<Option<Vec<i64>>>()
                .and_then(|v| v.into_iter().min())
                .map_or_else(invalid, |n| Bytes::from(format!(":{n}\r\n"))),
            _ => and(replies).unwrap_or_else(invalid),
        },
        Fragment::Scan { server, servers } => match replies {
            [one] => scan_cursor(one, u64::from(server), u64::from(servers)).unwrap_or_else(invalid),
            _ => invalid(),
        },
    }
}

fn is_nil(r: &[u8]) -> bool {
    r == b"$-1\r\n" || r == b"_\r\n" || r == b"*-1\r\n"
}

/// MGET: walk each part's reply with a cursor, taking its next element for
/// each key in request order: no per-part element lists.
fn mget(replies: &[Bytes], order: &[u32]) -> Bytes {
    let mut cursor: SmallVec<[(usize, usize); 4]> = SmallVec::new();
    let mut count = itoa::Buffer::new();
    let count = count.format(order.len()).as_bytes();
    // Exact when every part is well formed: each element is copied once.
    let mut size = 1 + count.len() + 2;
    for r in replies {
        match array_header(r) {
            Ok((n, start)) => {
                cursor.push((start, n));
                size += r.len() - start;
            }
            Err(_) => return invalid(),
        }
    }
    let mut out = Vec::with_capacity(size);
    out.push(b'*');
    out.extend_from_slice(count);
    out.extend_from_slice(b"\r\n");
    for &p in order {
        let p = p as usize;
        let Some(&(pos, left)) = cursor.get(p) else {
            return invalid();
        };
        if left == 0 {
            return invalid();
        }
        match bulk_element(&replies[p], pos) {
            Ok(end) => {
                out.extend_from_slice(&replies[p][pos..end]);
                cursor[p] = (end, left - 1);
            }
            Err(_) => return invalid(),
        }
    }
    // Every part answered exactly as many keys as it was sent.
    if cursor.iter().any(|&(_, left)| left != 0) {
        return invalid();
    }
    out.into()
}

/// The elements of an aggregate reply (`*` array, `~` set, `%` map as
/// 2n elements), each element's whole encoding; `None` if it is not one.
fn items(reply: &[u8]) -> Option<(u8, Vec<Range<usize>>)> {
    let kind = *reply.first()?;
    if !matches!(kind, b'*' | b'~' | b'%') {
        return None;
    }
    let (n, end) = super::header_number(reply, 1, true).ok()??;
    let n = if kind == b'%' { n.max(0) * 2 } else { n.max(0) } as usize;
    let mut pos = end + 2;
    let mut out = Vec::with_capacity(n.min(reply.len() / 3 + 1));
    for _ in 0..n {
        match scan_reply(reply.get(pos..)?) {
            Ok(Scan::Complete(len)) => {
                out.push(pos..pos + len);
                pos += len;
            }
            _ => return None,
        }
    }
    (pos == reply.len()).then_some((kind, out))
}

fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// KEYS, PUBSUB CHANNELS: every server's elements, in server order.
fn concat(replies: &[Bytes]) -> Bytes {
    let mut total = 0;
    let mut bodies: SmallVec<[&[u8]; 4]> = SmallVec::new();
    for r in replies {
        match array_header(r) {
            Ok((n, start)) if r.first() == Some(&b'*') => {
                total += n;
                bodies.push(&r[start..]);
            }
            _ => return invalid(),
        }
    }
    let mut out = Vec::with_capacity(16 + bodies.iter().map(|b| b.len()).sum::<usize>());
    header(&mut out, b'*', total);
    for b in bodies {
        out.extend_from_slice(b);
    }
    out.into()
}

/// SCRIPT EXISTS: 1 only where every server has the script.
fn and(replies: &[Bytes]) -> Option<Bytes> {
    let mut acc: Option<Vec<i64>> = None;
    for r in replies {
        let (_, elems) = items(r)?;
        let v: Option<Vec<i64>> = elems.iter().map(|e| integer(&r[e.clone()])).collect();
        let v = v?;
        acc = Some(match acc {
            None => v,
            Some(a) if a.len() == v.len() => a.iter().zip(&v).map(|(x, y)| *x.min(y)).collect(),
            Some(_) => return None,
        });
    }
    let acc = acc?;
    let mut out = Vec::with_capacity(8 + acc.len() * 4);
    header(&mut out, b'*', acc.len());
    for x in acc {
        out.extend_from_slice(format!(":{x}\r\n").as_bytes());
    }
    Some(out.into())
}

/// PUBSUB NUMSUB: (channel, count) pairs in the request's order on every
/// server; the counts summed (an array in RESP2, a map in RESP3).
fn pair_sum(replies: &[Bytes]) -> Option<Bytes> {
    let first = replies.first()?;
    let (kind, names) = items(first)?;
    let mut counts = vec![0i64; names.len() / 2];
    for r in replies {
        let (k, elems) = items(r)?;
        if k != kind || elems.len() != names.len() {
            return None;
        }
        for (i, c) in counts.iter_mut().enumerate() {
            if r[elems[2 * i].clone()] != first[names[2 * i].clone()] {
                return None;
            }
            *c += integer(&r[elems[2 * i + 1].clone()])?;
        }
    }
    let mut out = Vec::with_capacity(first.len() + 8);
    header(
        &mut out,
        kind,
        if kind == b'%' {
            counts.len()
        } else {
            names.len()
        },
    );
    for (i, c) in counts.iter().enumerate() {
        out.extend_from_slice(&first[names[2 * i].clone()]);
        out.extend_from_slice(format!(":{c}\r\n").as_bytes());
    }
    Some(out.into())
}

/// SCAN on server `server` of `servers`: the reply's cursor becomes the
/// client's (`cursor × servers + server`, or the next server's start when
/// this one is done, or 0 after the last).
fn scan_cursor(reply: &[u8], server: u64, servers: u64) -> Option<Bytes> {
    let (_, elems) = items(reply)?;
    let [cursor, keys] = elems.as_slice() else {
        return None;
    };
    let c = &reply[cursor.clone()];
    let end = bulk_element(reply, cursor.start).ok()?;
    let text = c.get(c.iter().position(|&b| b == b'\n')? + 1..c.len() - 2)?;
    let inner: u64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    debug_assert_eq!(end, cursor.end);
    let next = if inner == 0 {
        if server + 1 < servers {
            server + 1
        } else {
            0
        }
    } else {
        match inner
            .checked_mul(servers)
            .and_then(|x| x.checked_add(server))
        {
            Some(n) => n,
            None => {
                return Some(Bytes::from_static(
                    b"-ERR SCAN cursor too large for the proxy to encode\r\n",
                ))
            }
        }
    };
    let mut out = Vec::with_capacity(reply.len() + 8);
    out.extend_from_slice(b"*2\r\n");
    let next = itoa::Buffer::new().format(next).as_bytes().to_vec();
    header(&mut out, b'$', next.len());
    out.extend_from_slice(&next);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&reply[keys.clone()]);
    Some(out.into())
}

/// The text of a bulk (`$`) or verbatim (`=`, after its `txt:`) reply.
fn text(reply: &[u8]) -> Option<&[u8]> {
    let kind = *reply.first()?;
    if !matches!(kind, b'$' | b'=') {
        return None;
    }
    let (n, end) = super::header_number(reply, 1, false).ok()??;
    let body = reply.get(end + 2..end + 2 + n as usize)?;
    if kind == b'=' {
        body.get(4..)
    } else {
        Some(body)
    }
}

/// One INFO section: its title and `field:value` lines, in order.
type Section<'a> = (&'a [u8], Vec<(&'a [u8], &'a [u8])>);

fn sections(text: &[u8]) -> Vec<Section<'_>> {
    let mut out: Vec<Section> = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(title) = line.strip_prefix(b"# ") {
            out.push((title, Vec::new()));
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            if let Some(last) = out.last_mut() {
                last.1.push((&line[..colon], &line[colon + 1..]));
            }
        }
    }
    out
}

/// A version `a.b.c` as a comparable triple.
fn version(v: &[u8]) -> Option<(u64, u64, u64)> {
    let mut it = std::str::from_utf8(v)
        .ok()?
        .split('.')
        .map(|x| x.parse().ok());
    Some((
        it.next()??,
        it.next()?.unwrap_or(0),
        it.next()?.unwrap_or(0),
    ))
}

/// Sums `k=v,k=v` lists field by field (a Keyspace line); `avg_ttl` is
/// averaged weighted by `expires`.
fn sum_pairs(values: &[&[u8]]) -> Option<Vec<u8>> {
    let parse = |v: &[u8]| -> Option<Vec<(Vec<u8>, i64)>> {
        v.split(|&b| b == b',')
            .map(|kv| {
                let eq = kv.iter().position(|&b| b == b'=')?;
                let n = std::str::from_utf8(&kv[eq + 1..]).ok()?.parse().ok()?;
                Some((kv[..eq].to_vec(), n))
            })
            .collect()
    };
    let all: Vec<Vec<(Vec<u8>, i64)>> = values.iter().map(|v| parse(v)).collect::<Option<_>>()?;
    let first = all.first()?;
    let mut out = Vec::new();
    for (i, (k, _)) in first.iter().enumerate() {
        let v = if k == b"avg_ttl" {
            let (mut weighted, mut weight) = (0i128, 0i128);
            for a in &all {
                let e = a.iter().find(|(k, _)| k == b"expires").map_or(0, |x| x.1);
                weighted += i128::from(a.get(i)?.1) * i128::from(e);
                weight += i128::from(e);
            }
            if weight == 0 {
                0
            } else {
                (weighted / weight) as i64
            }
        } else {
            all.iter()
                .map(|a| a.get(i).map(|x| x.1))
                .sum::<Option<i64>>()?
        };
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    Some(out)
}

/// INFO: the sections of the first server's reply, in its order, with
/// integer fields summed over the servers (memory, keys, commands…),
/// `redis_version` the lowest of the servers' (what clients check features
/// against), `# Keyspace` lines summed per db, `connected_clients` the
/// proxy's own clients of the pool, and the proxy named in `# Server`.
fn info(replies: &[Bytes], clients: u32) -> Option<Bytes> {
    let texts: Vec<&[u8]> = replies.iter().map(|r| text(r)).collect::<Option<_>>()?;
    let parsed: Vec<Vec<Section>> = texts.iter().map(|t| sections(t)).collect();
    let first = parsed.first()?;
    let mut out = Vec::with_capacity(texts.first()?.len() + 256);
    for (si, (title, fields)) in first.iter().enumerate() {
        if si > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"# ");
        out.extend_from_slice(title);
        out.extend_from_slice(b"\r\n");
        let same: Vec<&Section> = parsed
            .iter()
            .filter_map(|p| p.iter().find(|(t, _)| t == title))
            .collect();
        let is_keyspace = title.eq_ignore_ascii_case(b"keyspace");
        // Keyspace: every db any server has.
        let mut names: Vec<&[u8]> = fields.iter().map(|(k, _)| *k).collect();
        if is_keyspace {
            for s in &same {
                for (k, _) in &s.1 {
                    if !names.contains(k) {
                        names.push(k);
                    }
                }
            }
            names.sort_unstable();
        }
        for name in names {
            let values: Vec<&[u8]> = same
                .iter()
                .filter_map(|s| s.1.iter().find(|(k, _)| *k == name).map(|x| x.1))
                .collect();
            let first_value = values.first().copied().unwrap_or_default();
            let merged: Vec<u8> = match name {
                b"redis_version" => values
                    .iter()
                    .min_by_key(|v| version(v))
                    .copied()
                    .unwrap_or(first_value)
                    .to_vec(),
                b"connected_clients" => clients.to_string().into_bytes(),
                b"process_id" => std::process::id().to_string().into_bytes(),
                _ if is_keyspace => sum_pairs(&values)?,
                _ => {
                    let ints: Option<Vec<i64>> = values
                        .iter()
                        .map(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                        .collect();
                    match ints {
                        Some(v) if values.len() == replies.len() && !name.ends_with(b"port") => v
                            .iter()
                            .fold(0i64, |a, b| a.saturating_add(*b))
                            .to_string()
                            .into_bytes(),
                        _ => first_value.to_vec(),
                    }
                }
            };
            out.extend_from_slice(name);
            out.push(b':');
            out.extend_from_slice(&merged);
            out.extend_from_slice(b"\r\n");
            if name == b"redis_version" {
                out.extend_from_slice(
                    concat!("proxy:shardproxy-", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes(),
                );
                out.extend_from_slice(format!("proxy_servers:{}\r\n", replies.len()).as_bytes());
            }
        }
    }
    let verbatim = replies.first()?.first() == Some(&b'=');
    let mut reply = Vec::with_capacity(out.len() + 20);
    header(
        &mut reply,
        if verbatim { b'=' } else { b'$' },
        out.len() + if verbatim { 4 } else { 0 },
    );
    if verbatim {
        reply.extend_from_slice(b"txt:");
    }
    reply.extend_from_slice(&out);
    reply.extend_from_slice(b"\r\n");
    Some(reply.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: Fragment, replies: &[&[u8]]) -> Vec<u8> {
        let r: Vec<Bytes> = replies.iter().map(|r| Bytes::copy_from_slice(r)).collect();
        merge(kind, &r, &[]).to_vec()
    }

    #[test]
    fn fan_out_rules() {
        assert_eq!(m(Fragment::Sum, &[b":2\r\n", b":3\r\n"]), b":5\r\n");
        assert_eq!(
            m(Fragment::Min, &[b":2\r\n", b":1\r\n", b":3\r\n"]),
            b":1\r\n"
        );
        assert_eq!(
            m(
                Fragment::Min,
                &[b"*2\r\n:1\r\n:2\r\n", b"*2\r\n:0\r\n:3\r\n"]
            ),
            b"*2\r\n:0\r\n:2\r\n"
        );
        assert!(m(Fragment::Min, &[b":2\r\n", b"$1\r\nx\r\n"]).starts_with(b"-ERR"));
        assert_eq!(m(Fragment::AllOk, &[OK, OK]), OK);
        assert_eq!(m(Fragment::AllOk, &[OK, b"-ERR x\r\n"]), b"-ERR x\r\n");
        assert_eq!(m(Fragment::AnyOk, &[b"-NOTBUSY n\r\n", OK]), OK);
        assert_eq!(
            m(Fragment::AnyOk, &[b"-NOTBUSY n\r\n", b"-NOTBUSY n\r\n"]),
            b"-NOTBUSY n\r\n"
        );
        assert_eq!(
            m(Fragment::Same, &[b"$1\r\na\r\n", b"$1\r\na\r\n"]),
            b"$1\r\na\r\n"
        );
        assert!(m(Fragment::Same, &[b"$1\r\na\r\n", b"$1\r\nb\r\n"]).starts_with(b"-ERR"));
        assert_eq!(
            m(
                Fragment::Concat,
                &[
                    b"*1\r\n$1\r\na\r\n",
                    b"*0\r\n",
                    b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"
                ]
            ),
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        assert_eq!(
            m(
                Fragment::And,
                &[b"*2\r\n:1\r\n:1\r\n", b"*2\r\n:1\r\n:0\r\n"]
            ),
            b"*2\r\n:1\r\n:0\r\n"
        );
        assert_eq!(
            m(
                Fragment::PairSum,
                &[b"*2\r\n$1\r\nc\r\n:1\r\n", b"*2\r\n$1\r\nc\r\n:2\r\n"]
            ),
            b"*2\r\n$1\r\nc\r\n:3\r\n"
        );
        assert_eq!(
            m(
                Fragment::PairSum,
                &[b"%1\r\n$1\r\nc\r\n:1\r\n", b"%1\r\n$1\r\nc\r\n:2\r\n"]
            ),
            b"%1\r\n$1\r\nc\r\n:3\r\n"
        );
        assert_eq!(
            m(Fragment::Random, &[b"$-1\r\n", b"$1\r\nk\r\n"]),
            b"$1\r\nk\r\n"
        );
        assert_eq!(m(Fragment::Random, &[b"$-1\r\n", b"_\r\n"]), b"$-1\r\n");
    }

    #[test]
    fn scan_cursors() {
        let scan = |reply: &[u8], server, servers| m(Fragment::Scan { server, servers }, &[reply]);
        let keys = b"*1\r\n$1\r\nk\r\n";
        let reply = |c: &str| [format!("*2\r\n${}\r\n{c}\r\n", c.len()).as_bytes(), keys].concat();
        // Mid-server: cursor × servers + server.
        assert_eq!(scan(&reply("17"), 1, 3), reply("52"));
        // This server is done: the next server's start.
        assert_eq!(scan(&reply("0"), 1, 3), reply("2"));
        // The last server is done: the iteration is.
        assert_eq!(scan(&reply("0"), 2, 3), reply("0"));
        assert!(scan(&reply(&u64::MAX.to_string()), 2, 3).starts_with(b"-ERR SCAN cursor"));
    }

    #[test]
    fn info_sums_and_names_the_proxy() {
        let a = "# Server\r\nredis_version:7.2.4\r\ntcp_port:1\r\n\r\n# Stats\r\ntotal_commands_processed:5\r\nratio:0.5\r\n\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=100\r\n";
        let b = "# Server\r\nredis_version:7.0.15\r\ntcp_port:2\r\n\r\n# Stats\r\ntotal_commands_processed:7\r\nratio:0.7\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=300\r\ndb1:keys=1,expires=0,avg_ttl=0\r\n";
        let bulk = |t: &str| format!("${}\r\n{t}\r\n", t.len()).into_bytes();
        let out = m(Fragment::Info { clients: 4 }, &[&bulk(a), &bulk(b)]);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("redis_version:7.0.15\r\nproxy:shardproxy-"),
            "{text}"
        );
        assert!(text.contains("tcp_port:1\r\n"), "{text}");
        assert!(text.contains("total_commands_processed:12\r\n"), "{text}");
        assert!(text.contains("ratio:0.5\r\n"), "{text}");
        assert!(
            text.contains("db0:keys=5,expires=2,avg_ttl=200\r\ndb1:keys=1,expires=0,avg_ttl=0\r\n"),
            "{text}"
        );
        assert!(matches!(scan_reply(&out), Ok(Scan::Complete(n)) if n == out.len()));
    }
}
