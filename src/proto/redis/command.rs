//! The redis command table: every command nutcracker forwards (spec §5.2), with
//! how it is routed, its argument count, and whether it is fragmented — plus the
//! commands the proxy answers itself. One table; lookup is a hash map built once.

use std::collections::HashMap;
use std::sync::LazyLock;

/// Argument count after the command name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    AtLeast(usize),
    Between(usize, usize),
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeast(k) => n >= k,
            Arity::Between(a, b) => (a..=b).contains(&n),
        }
    }
}

/// Which argument routes the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// The first argument.
    First,
    /// No key: routed by the literal key `placeholder`, as nutcracker.
    Placeholder,
    /// EVAL/EVALSHA: `script numkeys key…` — the first key (numkeys ≥ 1).
    Eval,
    /// Answered by the proxy.
    None,
}

/// Multi-key commands split per server and coalesced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    No,
    /// MGET: an array of bulks in key order.
    Mget,
    /// DEL UNLINK TOUCH EXISTS: the sum of integer replies.
    Sum,
    /// MSET: key/value pairs, `+OK` when every part is OK.
    Mset,
}

/// Commands the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Ping,
    Echo,
    Quit,
    Auth,
    Select,
    Client,
    Hello,
}

/// One command of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// Lowercase name (used when composing fragments).
    pub name: &'static str,
    pub arity: Arity,
    pub keys: Keys,
    pub fragment: Fragment,
    pub local: Option<Local>,
    /// Reads data without changing it (the latency class `read`; every other
    /// forwarded command is a `write`).
    pub read: bool,
}

const fn fwd(name: &'static str, arity: Arity) -> Command {
    Command {
        name,
        arity,
        keys: Keys::First,
        fragment: Fragment::No,
        local: None,
        read: false,
    }
}

/// Commands that only read (latency class `read`).
const READS: &[&str] = &[
    "get",
    "strlen",
    "ttl",
    "pttl",
    "type",
    "dump",
    "hgetall",
    "hkeys",
    "hlen",
    "hvals",
    "llen",
    "scard",
    "smembers",
    "zcard",
    "getbit",
    "hexists",
    "hget",
    "hstrlen",
    "lindex",
    "sismember",
    "zrank",
    "zrevrank",
    "zscore",
    "getrange",
    "lrange",
    "zcount",
    "zlexcount",
    "bitcount",
    "bitpos",
    "hmget",
    "hscan",
    "hrandfield",
    "lpos",
    "sdiff",
    "sinter",
    "sunion",
    "srandmember",
    "sscan",
    "smismember",
    "pfcount",
    "zdiff",
    "zinter",
    "zmscore",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zscan",
    "zunion",
    "geodist",
    "geopos",
    "geohash",
    "mget",
    "exists",
    "command",
    "lolwut",
];

use Arity::{AtLeast, Between, Exactly};

/// Single-key commands by argument shape (spec §5.2). Arity counts the key.
const KEY_ONLY: &[&str] = &[
    "get", "getdel", "incr", "decr", "strlen", "ttl", "pttl", "persist", "type", "dump", "hgetall",
    "hkeys", "hlen", "hvals", "llen", "scard", "smembers", "zcard",
];
const KEY_PLUS_1: &[&str] = &[
    "expire",
    "expireat",
    "pexpire",
    "pexpireat",
    "append",
    "decrby",
    "getbit",
    "getset",
    "incrby",
    "incrbyfloat",
    "setnx",
    "hexists",
    "hget",
    "hstrlen",
    "lindex",
    "rpoplpush",
    "sismember",
    "zrank",
    "zrevrank",
    "zscore",
];
const KEY_PLUS_2: &[&str] = &[
    "getrange",
    "psetex",
    "setbit",
    "setex",
    "setrange",
    "hincrby",
    "hincrbyfloat",
    "hsetnx",
    "lrange",
    "lrem",
    "lset",
    "ltrim",
    "smove",
    "zcount",
    "zlexcount",
    "zincrby",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
];
const KEY_PLUS_3: &[&str] = &["linsert", "lmove"];
const KEY_PLUS_ANY: &[&str] = &[
    "sort",
    "copy",
    "bitcount",
    "bitpos",
    "bitfield",
    "getex",
    "set",
    "hdel",
    "hmget",
    "hmset",
    "hscan",
    "hset",
    "hrandfield",
    "lpush",
    "lpushx",
    "rpush",
    "rpushx",
    "lpop",
    "rpop",
    "lpos",
    "sadd",
    "sdiff",
    "sdiffstore",
    "sinter",
    "sinterstore",
    "srem",
    "sunion",
    "sunionstore",
    "srandmember",
    "sscan",
    "spop",
    "smismember",
    "pfadd",
    "pfmerge",
    "pfcount",
    "zadd",
    "zdiff",
    "zdiffstore",
    "zinter",
    "zinterstore",
    "zmscore",
    "zpopmax",
    "zpopmin",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrangestore",
    "zrem",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zscan",
    "zunion",
    "zunionstore",
    "geodist",
    "geopos",
    "geohash",
    "geoadd",
    "georadius",
    "georadiusbymember",
    "geosearch",
    "geosearchstore",
    "restore",
];

fn table() -> Vec<Command> {
    let mut t = Vec::new();
    t.extend(KEY_ONLY.iter().map(|n| fwd(n, Exactly(1))));
    t.extend(KEY_PLUS_1.iter().map(|n| fwd(n, Exactly(2))));
    t.extend(KEY_PLUS_2.iter().map(|n| fwd(n, Exactly(3))));
    t.extend(KEY_PLUS_3.iter().map(|n| fwd(n, Exactly(4))));
    t.extend(KEY_PLUS_ANY.iter().map(|n| fwd(n, AtLeast(1))));
    for (name, fragment) in [
        ("mget", Fragment::Mget),
        ("del", Fragment::Sum),
        ("unlink", Fragment::Sum),
        ("touch", Fragment::Sum),
        ("exists", Fragment::Sum),
        ("mset", Fragment::Mset),
    ] {
        t.push(Command {
            fragment,
            ..fwd(name, AtLeast(1))
        });
    }
    for name in ["eval", "evalsha"] {
        t.push(Command {
            keys: Keys::Eval,
            ..fwd(name, AtLeast(2))
        });
    }
    t.push(Command {
        keys: Keys::Placeholder,
        ..fwd("command", Exactly(0))
    });
    t.push(Command {
        keys: Keys::Placeholder,
        ..fwd("lolwut", AtLeast(0))
    });
    for (name, local, arity) in [
        ("ping", Local::Ping, Between(0, 1)),
        ("echo", Local::Echo, Exactly(1)),
        ("quit", Local::Quit, AtLeast(0)),
        ("auth", Local::Auth, Between(1, 2)),
        ("select", Local::Select, Exactly(1)),
        ("client", Local::Client, AtLeast(1)),
        ("hello", Local::Hello, AtLeast(0)),
    ] {
        t.push(Command {
            name,
            arity,
            keys: Keys::None,
            fragment: Fragment::No,
            local: Some(local),
            read: false,
        });
    }
    for c in &mut t {
        c.read = READS.contains(&c.name);
    }
    t
}

/// FNV-1a for the command table: names are short and not attacker-chosen
/// keys of a growing map (the table is fixed), so SipHash's DoS resistance
/// buys nothing here and cost ~4% of the proxy's instructions per request.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Table = HashMap<&'static [u8], Command, std::hash::BuildHasherDefault<Fnv>>;

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    table()
        .into_iter()
        .map(|c| (c.name.as_bytes(), c))
        .collect()
});

/// Looks a command up by name, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<&'static Command> {
    let mut low = [0u8; 32];
    if name.len() > low.len() {
        return None;
    }
    let n = name;
    low[..n.len()].copy_from_slice(n);
    low[..n.len()].make_ascii_lowercase();
    TABLE.get(&low[..n.len()])
}

/// Every command in the table (for tests and docs).
pub fn all() -> Vec<&'static Command> {
    let mut v: Vec<_> = TABLE.values().collect();
    v.sort_by_key(|c| c.name);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(lookup(b"GeT").map(|c| c.name), Some("get"));
        assert_eq!(lookup(b"MGET").map(|c| c.fragment), Some(Fragment::Mget));
        assert!(lookup(b"keys").is_none());
        assert!(lookup(&[b'a'; 100]).is_none());
    }

    #[test]
    fn shapes() {
        let get = lookup(b"get").copied();
        assert_eq!(
            get.map(|c| (c.arity.accepts(1), c.arity.accepts(2))),
            Some((true, false))
        );
        assert_eq!(lookup(b"setex").map(|c| c.arity), Some(Exactly(3)));
        assert_eq!(lookup(b"eval").map(|c| c.keys), Some(Keys::Eval));
        assert_eq!(lookup(b"exists").map(|c| c.fragment), Some(Fragment::Sum));
        assert_eq!(lookup(b"hget").map(|c| c.read), Some(true));
        assert_eq!(lookup(b"set").map(|c| c.read), Some(false));
        for r in READS {
            assert!(lookup(r.as_bytes()).is_some(), "{r} is not in the table");
        }
        assert_eq!(
            all().len(),
            KEY_ONLY.len()
                + KEY_PLUS_1.len()
                + KEY_PLUS_2.len()
                + KEY_PLUS_3.len()
                + KEY_PLUS_ANY.len()
                + 6
                + 2
                + 2
                + 7
        );
    }
}
