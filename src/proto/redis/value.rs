//! Whole replies as values, for the control plane (sentinels, cluster
//! nodes): small, already complete, parsed with a bounded depth. The request
//! path never builds these.

/// A reply, as the control plane reads it (RESP2).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Int(i64),
    Arr(Vec<Val>),
    Nil,
    Err(String),
}

impl Val {
    /// Parses one whole reply (already known complete by
    /// [`crate::proto::redis::reply::scan_reply`]).
    pub fn parse(b: &[u8]) -> Option<Val> {
        Val::at(b, 0).map(|(v, _)| v)
    }

    fn at(b: &[u8], depth: u32) -> Option<(Val, usize)> {
        if depth > 8 {
            return None;
        }
        let nl = b.iter().position(|&c| c == b'\n')?;
        let line = std::str::from_utf8(b.get(1..nl.checked_sub(1)?)?).ok()?;
        let rest = nl + 1;
        match b.first()? {
            b'+' => Some((Val::Str(line.into()), rest)),
            b'-' => Some((Val::Err(line.into()), rest)),
            b':' => Some((Val::Int(line.parse().ok()?), rest)),
            b'$' => {
                let n: i64 = line.parse().ok()?;
                if n < 0 {
                    return Some((Val::Nil, rest));
                }
                let end = rest.checked_add(usize::try_from(n).ok()?)?;
                let s = String::from_utf8_lossy(b.get(rest..end)?).into_owned();
                Some((Val::Str(s), end + 2))
            }
            b'*' => {
                let n: i64 = line.parse().ok()?;
                if n < 0 {
                    return Some((Val::Nil, rest));
                }
                let mut v = Vec::new();
                let mut pos = rest;
                for _ in 0..n {
                    let (e, used) = Val::at(b.get(pos..)?, depth + 1)?;
                    v.push(e);
                    pos += used;
                }
                Some((Val::Arr(v), pos))
            }
            _ => None,
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A flat `[key, value, …]` array's value for `key`, whatever its type.
    pub fn get(&self, key: &str) -> Option<&Val> {
        let Val::Arr(v) = self else { return None };
        v.chunks(2)
            .find(|kv| kv[0].str() == Some(key))
            .and_then(|kv| kv.get(1))
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::Str(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Val] {
        match self {
            Val::Arr(v) => v,
            _ => &[],
        }
    }

    /// A flat `[key, value, …]` array's value for `key`.
    pub fn field(&self, key: &str) -> Option<&str> {
        let Val::Arr(v) = self else { return None };
        v.chunks(2)
            .find(|kv| kv[0].str() == Some(key))
            .and_then(|kv| kv.get(1))
            .and_then(Val::str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_nest_and_bound_their_depth() {
        assert_eq!(
            Val::parse(
                b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:1\r\n"
            ),
            Some(Val::Arr(vec![
                Val::Str("slave".into()),
                Val::Str("127.0.0.1".into()),
                Val::Int(6379),
                Val::Str("connected".into()),
                Val::Int(1),
            ]))
        );
        assert_eq!(Val::parse(b"$-1\r\n"), Some(Val::Nil));
        assert_eq!(Val::parse(b"$5\r\nab\r\n"), None);
        let deep = "*1\r\n".repeat(20) + ":1\r\n";
        assert_eq!(Val::parse(deep.as_bytes()), None);
    }
}
