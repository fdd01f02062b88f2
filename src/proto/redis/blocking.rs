//! How long a blocking command may block, read from its arguments: the
//! proxy's `timeout` must not fire before the command's own (a `BLPOP k 2`
//! through a pool with `timeout: 400` waits its 2 seconds), and a command
//! that blocks forever (`0`) must not time out at all.

use std::time::Duration;

/// A blocking command's own limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Block {
    /// `0`: until something arrives.
    Forever,
    /// At most this long.
    For(Duration),
    /// Not a valid timeout: the server answers an error at once.
    Invalid,
}

/// The block time of a blocking command (`name` in lower case, as the
/// command table spells it), or `None` when this request does not block
/// (`XREAD` without `BLOCK`).
pub fn block_time<'a>(name: &str, argc: usize, arg: impl Fn(usize) -> &'a [u8]) -> Option<Block> {
    match name {
        // key [key …] timeout / src dst [wherefrom whereto] timeout: seconds.
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "brpoplpush" | "blmove" => {
            Some(seconds(arg(argc - 1)))
        }
        // timeout numkeys key [key …] …: seconds.
        "blmpop" | "bzmpop" => Some(seconds(arg(1))),
        // WAIT numreplicas timeout, WAITAOF numlocal numreplicas timeout: ms.
        "wait" => Some(millis(arg(2))),
        "waitaof" => Some(millis(arg(3))),
        // [COUNT n] [BLOCK ms] … STREAMS …: ms.
        "xread" | "xreadgroup" => {
            let mut i = 1;
            while i < argc {
                let a = arg(i);
                if a.eq_ignore_ascii_case(b"streams") {
                    return None;
                }
                if a.eq_ignore_ascii_case(b"block") {
                    return Some(if i + 1 < argc {
                        millis(arg(i + 1))
                    } else {
                        Block::Invalid
                    });
                }
                i += 1;
            }
            None
        }
        _ => None,
    }
}

/// Seconds as Redis reads them: a non-negative decimal, fractions allowed.
fn seconds(a: &[u8]) -> Block {
    let Some(v) = std::str::from_utf8(a)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
    else {
        return Block::Invalid;
    };
    if !v.is_finite() || !(0.0..=1e12).contains(&v) {
        Block::Invalid
    } else if v == 0.0 {
        Block::Forever
    } else {
        Block::For(Duration::from_secs_f64(v))
    }
}

/// Milliseconds: a non-negative integer.
fn millis(a: &[u8]) -> Block {
    match std::str::from_utf8(a)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
    {
        Some(0) => Block::Forever,
        Some(ms) if ms > 0 => Block::For(Duration::from_millis(ms as u64)),
        _ => Block::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(req: &str) -> Option<Block> {
        let args: Vec<&[u8]> = req.split(' ').map(str::as_bytes).collect();
        let name = String::from_utf8_lossy(args[0]).to_lowercase();
        block_time(&name, args.len(), |i| args[i])
    }

    #[test]
    fn every_blocking_form() {
        let s = |ms| Some(Block::For(Duration::from_millis(ms)));
        assert_eq!(block("BLPOP a b 2"), s(2000));
        assert_eq!(block("brpop a 0.5"), s(500));
        assert_eq!(block("BLPOP a 0"), Some(Block::Forever));
        assert_eq!(block("BRPOPLPUSH a b 1"), s(1000));
        assert_eq!(block("BLMOVE a b LEFT RIGHT 0.25"), s(250));
        assert_eq!(block("BZPOPMIN z 3"), s(3000));
        assert_eq!(block("BLMPOP 1.5 2 a b LEFT"), s(1500));
        assert_eq!(block("BZMPOP 0 1 z MIN"), Some(Block::Forever));
        assert_eq!(block("WAIT 1 100"), s(100));
        assert_eq!(block("WAIT 1 0"), Some(Block::Forever));
        assert_eq!(block("WAITAOF 1 0 50"), s(50));
        assert_eq!(block("XREAD COUNT 2 BLOCK 700 STREAMS s 0"), s(700));
        assert_eq!(
            block("XREADGROUP GROUP g c BLOCK 0 STREAMS s >"),
            Some(Block::Forever)
        );
        assert_eq!(block("XREAD STREAMS block 0"), None);
        assert_eq!(block("XREAD COUNT 2 STREAMS s 0"), None);
    }

    #[test]
    fn bad_timeouts_are_the_servers_to_answer() {
        assert_eq!(block("BLPOP a -1"), Some(Block::Invalid));
        assert_eq!(block("BLPOP a x"), Some(Block::Invalid));
        assert_eq!(block("BLPOP a inf"), Some(Block::Invalid));
        assert_eq!(block("BLPOP a nan"), Some(Block::Invalid));
        assert_eq!(block("WAIT 1 -5"), Some(Block::Invalid));
        assert_eq!(block("XREAD BLOCK"), Some(Block::Invalid));
    }
}
