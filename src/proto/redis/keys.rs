//! Finding a request's keys from its command's key specs, exactly as
//! redis-server does (`getKeysUsingKeySpecs` in its `db.c`): index and
//! keyword searches, ranges (with `lastkey` from the end and `limit`), and
//! `numkeys` forms. Pure: argument positions in, key positions out.

use super::command::{Begin, Find, Spec};
use smallvec::SmallVec;

/// Argument indexes of keys (the command name is 0). Most requests have few.
pub type KeyPositions = SmallVec<[u32; 8]>;

/// The arguments cannot yield keys (a bad `numkeys`, a key past the end):
/// redis-server would answer the command with a syntax error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidKeys;

/// Appends the positions of the keys of a request with `argc` arguments
/// (`arg(i)` is argument `i`, the command name 0) to `out`, in key-spec order.
/// `not_keys` includes specs flagged `not_key` (shard channels: routed like
/// keys, but not keys to `COMMAND GETKEYS`). Specs that cannot be expressed
/// (`unknown`: SORT's BY/GET/STORE) are skipped; their commands have their
/// own rule.
pub fn find<'a>(
    spec: &Spec,
    argc: usize,
    arg: impl Fn(usize) -> &'a [u8],
    not_keys: bool,
    out: &mut KeyPositions,
) -> Result<(), InvalidKeys> {
    let argc = argc as i64;
    for ks in spec.key_specs {
        if ks.not_key && !not_keys {
            continue;
        }
        let mut first: i64 = match ks.begin {
            Begin::Index(pos) => i64::from(pos),
            Begin::Keyword { keyword, startfrom } => {
                let startfrom = i64::from(startfrom);
                let (start, end) = if startfrom > 0 {
                    (startfrom, argc - 1)
                } else {
                    (argc + startfrom, 1)
                };
                let mut found = 0;
                let mut i = start;
                while i != end {
                    if i >= argc || i < 1 {
                        break;
                    }
                    if arg(i as usize).eq_ignore_ascii_case(keyword.as_bytes()) {
                        found = i + 1;
                        break;
                    }
                    i = if start <= end { i + 1 } else { i - 1 };
                }
                if found == 0 {
                    continue;
                }
                found
            }
            Begin::Unknown => continue,
        };
        let (last, step) = match ks.find {
            Find::Range {
                lastkey,
                step,
                limit,
            } => {
                let (lastkey, limit) = (i64::from(lastkey), i64::from(limit));
                let last = if lastkey >= 0 {
                    first + lastkey
                } else if limit == 0 {
                    argc + lastkey
                } else {
                    first + ((argc - first) / limit + lastkey)
                };
                (last, i64::from(step))
            }
            Find::Keynum {
                keynumidx,
                firstkey,
                step,
            } => {
                let idx = first + i64::from(keynumidx);
                if idx >= argc {
                    return Err(InvalidKeys);
                }
                let numkeys = std::str::from_utf8(arg(idx as usize))
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|&n| n >= 0)
                    .ok_or(InvalidKeys)?;
                if numkeys == 0 {
                    // `EVAL script 0`: no keys (redis-server's own key
                    // procedures say so too).
                    continue;
                }
                first += i64::from(firstkey);
                (first + numkeys - 1, i64::from(step))
            }
            Find::Unknown => continue,
        };
        if last >= argc || last < first || first >= argc {
            return Err(InvalidKeys);
        }
        let step = step.max(1);
        let mut i = first;
        while i <= last {
            out.push(i as u32);
            i += step;
        }
    }
    Ok(())
}

/// SORT / SORT_RO beyond the sorted key (which key specs cannot express):
/// the `STORE` destination, and the `BY`/`GET` patterns that make the server
/// read other keys (those containing `*`; `GET #` is the element itself).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SortKeys {
    pub store: Option<u32>,
    pub patterns: SmallVec<[u32; 4]>,
}

/// The `STORE` key and key patterns of a SORT request (as redis-server's
/// `sortGetKeys` walks it: `LIMIT` takes two arguments, `BY`/`GET`/`STORE`
/// one).
pub fn sort<'a>(argc: usize, arg: impl Fn(usize) -> &'a [u8]) -> SortKeys {
    let mut out = SortKeys::default();
    let mut i = 2;
    while i < argc {
        let a = arg(i);
        let takes = if a.eq_ignore_ascii_case(b"limit") {
            2
        } else if a.eq_ignore_ascii_case(b"by") || a.eq_ignore_ascii_case(b"get") {
            if i + 1 < argc && memchr::memchr(b'*', arg(i + 1)).is_some() {
                out.patterns.push((i + 1) as u32);
            }
            1
        } else if a.eq_ignore_ascii_case(b"store") {
            if i + 1 < argc {
                out.store = Some((i + 1) as u32);
            }
            1
        } else {
            0
        };
        i += 1 + takes;
    }
    out
}

/// The part of a SORT pattern that names a key (before `->field`, when the
/// `->` comes after the `*`), up to its `*`: every key the pattern makes
/// starts with it.
pub fn pattern_prefix(pattern: &[u8]) -> &[u8] {
    match memchr::memchr(b'*', pattern) {
        Some(star) => &pattern[..star],
        None => pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::super::command::lookup;
    use super::*;

    fn keys(cmd: &str) -> Result<Vec<String>, InvalidKeys> {
        let args: Vec<&str> = cmd.split(' ').collect();
        let mut c = lookup(args[0].as_bytes()).unwrap_or_else(|| panic!("{cmd}"));
        if !c.subcommands.is_empty() {
            c = c.sub(args[1].as_bytes()).unwrap_or_else(|| panic!("{cmd}"));
        }
        let mut out = KeyPositions::new();
        find(c.spec, args.len(), |i| args[i].as_bytes(), true, &mut out)?;
        Ok(out.iter().map(|&i| args[i as usize].to_string()).collect())
    }

    #[test]
    fn every_kind_of_key_spec() {
        let k = |c: &str| keys(c).unwrap_or_else(|e| panic!("{c}: {e:?}"));
        assert_eq!(k("GET a"), ["a"]);
        assert_eq!(k("LMOVE a b LEFT RIGHT"), ["a", "b"]);
        assert_eq!(k("MSET a 1 b 2"), ["a", "b"]);
        assert_eq!(k("BITOP AND d s1 s2 s3"), ["d", "s1", "s2", "s3"]);
        assert_eq!(k("XREAD COUNT 2 STREAMS s1 s2 0 0"), ["s1", "s2"]);
        assert_eq!(k("XREADGROUP GROUP g c STREAMS s1 s2 > >"), ["s1", "s2"]);
        assert_eq!(k("GEORADIUS g 0 0 1 km STORE d"), ["g", "d"]);
        assert_eq!(k("GEORADIUS g 0 0 1 km"), ["g"]);
        assert_eq!(k("LMPOP 2 a b LEFT"), ["a", "b"]);
        assert_eq!(k("ZUNIONSTORE d 2 a b WEIGHTS 1 2"), ["d", "a", "b"]);
        assert_eq!(k("EVAL s 2 k1 k2 a1"), ["k1", "k2"]);
        assert_eq!(k("EVAL s 0"), Vec::<String>::new());
        assert_eq!(k("FCALL f 1 k"), ["k"]);
        assert_eq!(k("SINTERCARD 2 a b LIMIT 1"), ["a", "b"]);
        assert_eq!(k("BLMPOP 0 2 a b LEFT"), ["a", "b"]);
        assert_eq!(k("XGROUP CREATE s g $"), ["s"]);
        assert_eq!(k("OBJECT ENCODING k"), ["k"]);
        assert_eq!(k("SPUBLISH ch m"), ["ch"]);
        // MIGRATE's single-key position holds "" when KEYS is used.
        assert_eq!(k("MIGRATE h 1 \"\" 0 5 KEYS a b"), ["\"\"", "a", "b"]);
        assert_eq!(k("SORT s BY w_* STORE d"), ["s"]);
        assert_eq!(keys("ZUNIONSTORE d 3 a b"), Err(InvalidKeys));
        assert_eq!(keys("LMPOP x a LEFT"), Err(InvalidKeys));
        assert_eq!(keys("LMPOP -1 a LEFT"), Err(InvalidKeys));
        assert_eq!(keys("LMPOP 0 LEFT"), Ok(vec![]));
    }

    #[test]
    fn sort_keys_and_patterns() {
        let args = [
            "SORT",
            "s",
            "LIMIT",
            "0",
            "5",
            "BY",
            "w_*",
            "GET",
            "#",
            "GET",
            "{t}o_*->f",
            "STORE",
            "d",
        ];
        let s = sort(args.len(), |i| args[i].as_bytes());
        assert_eq!(s.store, Some(12));
        assert_eq!(s.patterns.as_slice(), [6, 10]);
        assert_eq!(pattern_prefix(b"{t}o_*->f"), b"{t}o_");
        let args = ["SORT", "s", "BY", "nosort", "STORE"];
        assert_eq!(
            sort(args.len(), |i| args[i].as_bytes()),
            SortKeys::default()
        );
    }
}
