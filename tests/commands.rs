//! The Redis 7 command table against real redis-servers: the table agrees
//! with what the server says of itself (`COMMAND`), every command class
//! behaves through a 3-server pool as on one redis-server (or is refused with
//! no server's data changed), and SCAN/KEYS/DBSIZE/SCRIPT fan out correctly.
//! Transactions, blocking commands and WAIT: tests/sessions.rs.

mod support;
use shardproxy::proto::redis::command::{Begin, Command, Find};
use shardproxy::proto::redis::keys::{find, KeyPositions};
use shardproxy::proto::redis::lookup;
use std::collections::{BTreeMap, BTreeSet};
use support::{named_pool, redis, shardproxy, Conn, Proc, Value};

/// Servers carry names, so where a key lands depends on the key alone, not on
/// the free ports the test happened to get.
fn pool(backends: &[&Proc], extra: &str) -> impl Fn(u16) -> String {
    named_pool(backends, &format!("  timeout: 5000\n{extra}"))
}

/// Our table's entry for a server's command name (`xgroup|create`).
fn ours(name: &str) -> Option<&'static Command> {
    let mut parts = name.split('|');
    let top = lookup(parts.next()?.as_bytes())?;
    match parts.next() {
        Some(sub) => top.sub(sub.as_bytes()),
        None => Some(top),
    }
}

/// A key spec as `COMMAND` describes it, in our terms.
fn server_spec(v: &Value) -> (Begin, Find, bool, bool) {
    let flags: BTreeSet<String> = v
        .field("flags")
        .map(|f| f.items().iter().map(|x| x.text().to_lowercase()).collect())
        .unwrap_or_default();
    let num = |v: &Value, k: &str| v.field(k).map_or(0, |x| x.int() as i32);
    let bs = v.field("begin_search").unwrap_or(&Value::Nil);
    let bspec = bs.field("spec").cloned().unwrap_or(Value::Nil);
    let begin = match bs.field("type").map(|t| t.text()).as_deref() {
        Some("index") => Begin::Index(num(&bspec, "index")),
        Some("keyword") => Begin::Keyword {
            keyword: Box::leak(
                bspec
                    .field("keyword")
                    .map(|k| k.text().to_lowercase())
                    .unwrap_or_default()
                    .into_boxed_str(),
            ),
            startfrom: num(&bspec, "startfrom"),
        },
        _ => Begin::Unknown,
    };
    let fk = v.field("find_keys").unwrap_or(&Value::Nil);
    let fspec = fk.field("spec").cloned().unwrap_or(Value::Nil);
    let find = match fk.field("type").map(|t| t.text()).as_deref() {
        Some("range") => Find::Range {
            lastkey: num(&fspec, "lastkey"),
            step: num(&fspec, "keystep"),
            limit: num(&fspec, "limit"),
        },
        Some("keynum") => Find::Keynum {
            keynumidx: num(&fspec, "keynumidx"),
            firstkey: num(&fspec, "firstkey"),
            step: num(&fspec, "keystep"),
        },
        _ => Find::Unknown,
    };
    (
        begin,
        find,
        flags.contains("not_key"),
        flags.contains("incomplete"),
    )
}

#[test]
fn table_agrees_with_command_info() {
    let r = redis();
    let mut k = Conn::new(r.port);
    let all = k.value(&[b"COMMAND"]);
    let mut entries: Vec<Value> = Vec::new();
    for c in all.items() {
        entries.push(c.clone());
        if let Some(Value::Array(subs)) = c.items().get(9) {
            entries.extend(subs.iter().cloned());
        }
    }
    assert!(entries.len() > 300, "{} commands", entries.len());
    let mut checked = 0;
    let mut differ = Vec::new();
    for e in &entries {
        let it = e.items();
        let name = it[0].text().to_lowercase();
        let Some(c) = ours(&name) else {
            panic!("the server knows '{name}', the table does not")
        };
        if c.spec.arity as i64 != it[1].int() {
            differ.push(format!(
                "arity of {name}: table {} server {}",
                c.spec.arity,
                it[1].int()
            ));
        }
        let theirs: Vec<_> = it
            .get(8)
            .map_or(vec![], |s| s.items().iter().map(server_spec).collect());
        let mine: Vec<_> = c
            .spec
            .key_specs
            .iter()
            .map(|s| (s.begin, s.find, s.not_key, s.incomplete))
            .collect();
        if mine != theirs {
            differ.push(format!(
                "key specs of {name}: table {mine:?} server {theirs:?}"
            ));
        }
        checked += 1;
    }
    // The table is Redis 7.4's; Debian 12's server is 7.0. What changed in
    // between (ZRANK/ZREVRANK WITHSCORE and COMMAND GETKEYS of keyless
    // commands, both 7.2) is the only difference allowed.
    let newer = [
        "arity of zrank: table -3 server 3",
        "arity of zrevrank: table -3 server 3",
        "arity of command|getkeys: table -3 server -4",
        "arity of command|getkeysandflags: table -3 server -4",
    ];
    differ.retain(|d| !newer.contains(&d.as_str()));
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    println!("{checked} commands and subcommands agree with redis-server's COMMAND");
}

/// Sample invocations: our key finder against the server's `COMMAND GETKEYS`.
#[test]
fn keys_agree_with_command_getkeys() {
    let r = redis();
    let mut k = Conn::new(r.port);
    let samples: &[&[&str]] = &[
        &["GET", "a"],
        &["SET", "a", "1", "EX", "10", "NX"],
        &["MSET", "a", "1", "b", "2", "c", "3"],
        &["LMOVE", "a", "b", "LEFT", "RIGHT"],
        &["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"],
        &["RPOPLPUSH", "a", "b"],
        &["SMOVE", "a", "b", "m"],
        &["RENAME", "a", "b"],
        &["COPY", "a", "b", "REPLACE"],
        &["BITOP", "AND", "d", "a", "b", "c"],
        &["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"],
        &["ZINTERCARD", "2", "a", "b", "LIMIT", "3"],
        &["ZRANGESTORE", "d", "a", "0", "-1"],
        &["SINTERCARD", "3", "a", "b", "c"],
        &["LMPOP", "2", "a", "b", "LEFT", "COUNT", "2"],
        &["ZMPOP", "1", "a", "MIN"],
        &["BLMPOP", "0", "2", "a", "b", "LEFT"],
        &["BZMPOP", "0", "2", "a", "b", "MAX"],
        &["EVAL", "return 1", "2", "a", "b", "x"],
        &["EVALSHA_RO", "abc", "1", "a"],
        &["FCALL", "f", "2", "a", "b", "x"],
        &["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"],
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", ">"],
        &["GEORADIUS", "a", "0", "0", "1", "km", "STORE", "b"],
        &["GEORADIUSBYMEMBER", "a", "m", "1", "km", "STOREDIST", "b"],
        &[
            "GEOSEARCHSTORE",
            "d",
            "a",
            "FROMMEMBER",
            "m",
            "BYRADIUS",
            "1",
            "km",
        ],
        &["PFMERGE", "d", "a", "b"],
        &["PFCOUNT", "a", "b"],
        &["SDIFFSTORE", "d", "a", "b"],
        &["LCS", "a", "b"],
        &["XGROUP", "CREATE", "a", "g", "$"],
        &["OBJECT", "ENCODING", "a"],
        &["MEMORY", "USAGE", "a"],
        &["XINFO", "STREAM", "a"],
        &["DEL", "a", "b", "c"],
        &["EXPIRE", "a", "10", "NX"],
        &["BITFIELD_RO", "a", "GET", "u8", "0"],
        &["SORT_RO", "a"],
        &["WATCH", "a", "b"],
        &["BLPOP", "a", "b", "0"],
    ];
    for args in samples {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let mut cmd: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
        cmd.extend(&bytes);
        let want: Vec<String> = k.value(&cmd).items().iter().map(Value::text).collect();
        let c = ours(&args[0].to_lowercase())
            .map(|c| match c.sub(args[1].as_bytes()) {
                Some(sub) => sub,
                None => c,
            })
            .unwrap_or_else(|| panic!("{args:?}"));
        let mut pos = KeyPositions::new();
        find(c.spec, args.len(), |i| bytes[i], false, &mut pos)
            .unwrap_or_else(|e| panic!("{args:?}: {e:?}"));
        let got: Vec<String> = pos.iter().map(|&i| args[i as usize].to_string()).collect();
        assert_eq!(got, want, "{args:?}");
    }
}

/// Every key's type and serialized value on every backend: what a command
/// that must not run would change.
fn data(backends: &[&Proc]) -> BTreeMap<(u16, Vec<u8>), Vec<u8>> {
    let mut out = BTreeMap::new();
    for b in backends {
        let mut c = Conn::new(b.port);
        for key in c.value(&[b"KEYS", b"*"]).items() {
            let Value::Bulk(key) = key else { continue };
            let dump = c.cmd(&[b"DUMP", key]);
            out.insert((b.port, key.clone()), dump);
        }
    }
    out
}

/// What the broad test expects of a corpus line.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The same reply as one redis-server (or, when the keys span servers,
    /// `-CROSSSLOT` with no server's data changed).
    Same,
    /// The same reply type (time, randomness, idle times…).
    Kind,
    /// The same elements in any order.
    Sorted,
    /// Refused by the proxy (an error naming it), no server's data changed.
    Refused,
    /// With hash tags, [`Expect::Same`]; without, may be refused (SORT's
    /// BY/GET patterns need a hash tag).
    SameIfTagged,
}

/// Command corpus: every class of the table (marks: `=` same, `~` same
/// type, `s` same elements, `!` refused, `?` same with hash tags). `A`..`D` are keys, `P…` keys of
/// a SORT pattern, `SHA` the sha1 of the script `return KEYS[1]`. Tokens are
/// separated by spaces, or by ` | ` in lines that contain it.
const CORPUS: &str = r#"
= SET A v
= GET A
= SET A v2 EX 100 NX
= SET B 10
= INCRBY B 5
= INCRBYFLOAT B 1.5
= APPEND A xx
= STRLEN A
= GETRANGE A 0 1
= SUBSTR A 0 1
= SETRANGE A 1 zz
= GETDEL C
= GETEX A PERSIST
= GETSET A v3
= MSET A 1 B 2 C 3
= MGET A B C D
= MSETNX A 1 D 2
= LCS A B
= EXPIRE A 100 NX
= EXPIRE A 100 NX
~ TTL A
= PERSIST A
= EXPIREAT A 4102444800
= EXPIRETIME A
= PEXPIRETIME A
= COPY A C REPLACE
= RENAME C D
= RENAMENX D C
= EXISTS A B C D
= TOUCH A B
= TYPE A
= OBJECT ENCODING A
= DUMP A
= DEL A B C D
= RPUSH A x y z
= LPUSH A w
= LRANGE A 0 -1
= LPOS A y
= LINDEX A 1
= LINSERT A BEFORE y q
= LSET A 0 W
= LREM A 1 q
= LTRIM A 0 10
= LMOVE A B LEFT RIGHT
= RPOPLPUSH A B
= LMPOP 2 A B LEFT COUNT 2
= LPOP A
= RPOP B 5
= LLEN A
= SADD A 1 2 3 4
= SADD B 3 4 5
s SINTER A B
s SUNION A B
s SDIFF A B
= SINTERCARD 2 A B
= SINTERSTORE C A B
= SUNIONSTORE C A B
= SDIFFSTORE C A B
= SMOVE A B 1
= SISMEMBER A 2
= SMISMEMBER A 2 9
s SMEMBERS C
= SCARD A
= SREM A 2
= SADD D solo
= SPOP D
~ SRANDMEMBER B
= SSCAN B 0
= DEL A B C D
= ZADD A 1 a 2 b 3 c
= ZADD B 2 b 3 c 4 d
= ZRANGE A 0 -1 WITHSCORES
= ZRANGE A (1 3 BYSCORE
= ZRANGESTORE C A 0 1
= ZUNIONSTORE C 2 A B WEIGHTS 1 2
= ZINTERSTORE C 2 A B
= ZDIFFSTORE C 2 A B
s ZUNION 2 A B WITHSCORES
s ZINTER 2 A B
= ZDIFF 2 A B
= ZINTERCARD 2 A B
= ZRANK A b
= ZREVRANK A b
= ZSCORE A b
= ZMSCORE A a zz
= ZINCRBY A 5 a
= ZCOUNT A 0 10
= ZLEXCOUNT A - +
= ZRANGEBYSCORE A 0 10
= ZREVRANGE A 0 -1
= ZPOPMIN A
= ZPOPMAX B
= ZMPOP 2 A B MIN COUNT 2
= ZREMRANGEBYRANK C 0 0
= ZCARD C
~ ZRANDMEMBER B
= ZSCAN B 0
= HSET D f 1 g 2
= HGET D f
= HMGET D f g h
= HGETALL D
= HINCRBY D f 5
= HINCRBYFLOAT D f 1.5
= HSETNX D h 3
= HKEYS D
= HVALS D
= HLEN D
= HSTRLEN D g
= HEXISTS D f
= HDEL D h
~ HRANDFIELD D
= HSCAN D 0
= DEL A B C D
= SETBIT A 7 1
= GETBIT A 7
= BITCOUNT A
= BITPOS A 1
= SET B abc
= BITOP AND C A B
= BITFIELD A INCRBY u8 0 1
= BITFIELD_RO A GET u8 0
= DEL A B C
= PFADD A a b c
= PFADD B c d
= PFCOUNT A B
= PFMERGE C A B
= PFCOUNT C
= DEL A B C
= GEOADD A 13.361389 38.115556 Palermo 15.087269 37.502669 Catania
= GEODIST A Palermo Catania km
= GEOPOS A Palermo
= GEOHASH A Palermo
= GEOSEARCH A FROMLONLAT 15 37 BYRADIUS 200 km ASC
= GEOSEARCHSTORE B A FROMLONLAT 15 37 BYRADIUS 200 km
= GEORADIUS A 15 37 200 km STORE C
= GEORADIUS_RO A 15 37 200 km
= GEORADIUSBYMEMBER A Palermo 200 km ASC
= DEL A B C
= XADD A 1-1 f v
= XADD A 2-1 f w
= XADD B 1-1 f x
= XLEN A
= XRANGE A - +
= XREVRANGE A + - COUNT 1
= XGROUP CREATE A g 0
= XGROUP CREATECONSUMER A g c2
= XREADGROUP GROUP g c COUNT 1 STREAMS A >
= XREAD COUNT 5 STREAMS A B 0 0
~ XPENDING A g
= XACK A g 1-1
~ XAUTOCLAIM A g c3 0 0-0
= XTRIM A MAXLEN 1
= XDEL A 2-1
= XSETID A 5-0
~ XINFO STREAM A
~ XINFO GROUPS A
= XGROUP SETID A g 0
= XGROUP DELCONSUMER A g c2
= XGROUP DESTROY A g
= DEL A B
= EVAL | return redis.call('SET', KEYS[1], ARGV[1]) | 1 | A | x
= EVAL | return redis.call('GET', KEYS[1]) | 1 | A
= EVAL_RO | return redis.call('GET', KEYS[1]) | 1 | A
= EVAL | return {KEYS[1], KEYS[2]} | 2 | A | B
= SCRIPT LOAD | return KEYS[1]
= EVALSHA SHA 1 A
= EVALSHA_RO SHA 1 B
= SCRIPT EXISTS SHA 0000000000000000000000000000000000000000
= FUNCTION LOAD | #!lua name=corpus
redis.register_function('first', function(keys, args) return keys[1] end)
= FCALL first 1 A
~ FUNCTION LIST
= FCALL_RO first 1 A
~ FUNCTION DUMP
~ FUNCTION STATS
= FUNCTION HELP
= FUNCTION KILL
= FUNCTION RESTORE notapayload
= FUNCTION DELETE corpus
= FUNCTION FLUSH
= SCRIPT FLUSH
= SCRIPT EXISTS SHA
= DBSIZE
s KEYS *
~ RANDOMKEY
~ TIME
~ LASTSAVE
= ECHO hi
= PING
~ INFO keyspace
= COMMAND COUNT
= COMMAND INFO get
= COMMAND GETKEYS MSET a b c d
= CONFIG GET maxmemory-policy
= PUBLISH ch msg
= PUBSUB CHANNELS
= PUBSUB NUMSUB ch
= PUBSUB NUMPAT
= DEL A B
= RPUSH A 3 1 2
= SORT A
= SORT A STORE B
= SORT_RO A DESC
= MSET P1 30 P2 10 P3 20
? SORT A BY P*
? SORT A BY nosort GET P*
= SELECT 0
! SELECT 1
! CONFIG SET maxmemory 1
! SHUTDOWN
! DEBUG SLEEP 0
! REPLICAOF NO ONE
! SWAPDB 0 1
! MOVE A 1
! MIGRATE 127.0.0.1 1 A 0 100
! MONITOR
! CLIENT KILL ID 1
! CLIENT REPLY OFF
= DEL A B
= RPUSH A x y
= BLPOP A 0.01
= BRPOP A 0.01
= BLPOP A 0.01
? BLMOVE A B LEFT LEFT 0.01
= XADD A 1-1 f v
= XREAD BLOCK 10 STREAMS A 0
= XREAD BLOCK 10 STREAMS A $
= WAIT 0 0
= SUBSCRIBE ch
= UNSUBSCRIBE ch
= WATCH A
= GET A
= UNWATCH
= MULTI
= INCR B
= GET B
= EXEC
= ACL
= ACL CAT
~ ACL GENPASS
= ACL HELP
~ AUTH x
= DEL A B C D
= SET A 5
= DECR A
= DECRBY A 2
= SETEX A 100 v
= PSETEX A 100000 v
= SETNX A w
= SETNX C w
~ PTTL A
= PEXPIRE A 100000
= PEXPIREAT A 4102444800000
= RESTORE D 0 notadump
= UNLINK C D
= RPUSHX A x
= DEL A
= RPUSHX A x
= LPUSHX A x
= RPUSH A 1 2
= BLMPOP 0.01 2 A B LEFT
= BRPOPLPUSH A B 0.01
= DEL A B
= ZADD A 1 a 2 b 3 c
= BZPOPMIN A 0.01
= BZPOPMAX A 0.01
= BZMPOP 0.01 1 A MIN
= ZADD A 1 a 2 b 3 c
= ZRANGEBYLEX A - +
= ZREVRANGEBYLEX A + -
= ZREVRANGEBYSCORE A +inf -inf
= ZREMRANGEBYSCORE A 3 3
= ZREMRANGEBYLEX A [a [a
= ZREM A b
= OBJECT FREQ A
~ OBJECT IDLETIME A
= OBJECT REFCOUNT A
= OBJECT HELP
~ MEMORY USAGE A
= MEMORY
= MEMORY HELP
= DEL A
= HMSET A f v g w
= HEXPIRE A 100 FIELDS 1 f
= HPEXPIRE A 100000 FIELDS 1 f
= HEXPIREAT A 4102444800 FIELDS 1 f
= HPEXPIREAT A 4102444800000 FIELDS 1 f
= HEXPIRETIME A FIELDS 1 f
= HPEXPIRETIME A FIELDS 1 f
= HTTL A FIELDS 1 f
= HPTTL A FIELDS 1 f
= HPERSIST A FIELDS 1 f
= DEL A
= XADD A 1-1 f v
= XGROUP CREATE A g 0
= XREADGROUP GROUP g c STREAMS A >
= XCLAIM A g c2 0 1-1 JUSTID
~ XINFO CONSUMERS A g
= XGROUP HELP
= XINFO HELP
= DEL A C
= GEOADD C 13.361389 38.115556 Palermo 15.087269 37.502669 Catania
= GEORADIUSBYMEMBER_RO C Palermo 200 km
= SPUBLISH ch m
= PUBSUB SHARDCHANNELS
= PUBSUB SHARDNUMSUB ch
= PUBSUB HELP
= CLIENT GETNAME
= CLIENT SETNAME n
= CLIENT GETNAME
= CLIENT HELP
= CLUSTER HELP
= COMMAND DOCS GET
= COMMAND GETKEYSANDFLAGS SET A v
= COMMAND HELP
s COMMAND LIST
= CONFIG HELP
= LATENCY
= LATENCY HELP
~ LOLWUT
= MODULE
= MODULE HELP
= SCRIPT HELP
= SCRIPT KILL
~ SENTINEL
= SENTINEL HELP
= SLOWLOG
= SLOWLOG HELP
= DISCARD
~ HELLO 2
= RESET
= PSUBSCRIBE p*
= PUNSUBSCRIBE
= SSUBSCRIBE ch
= SUNSUBSCRIBE
= UNSUBSCRIBE
= PUNSUBSCRIBE
= SUNSUBSCRIBE
= WAITAOF 0 0 0
! ACL DELUSER x
! ACL DRYRUN x x
! ACL GETUSER x
! ACL LIST
! ACL LOAD
! ACL LOG
! ACL SAVE
! ACL SETUSER x
! ACL USERS
! ACL WHOAMI
! BGREWRITEAOF
! BGSAVE
! CLIENT CACHING x
! CLIENT GETREDIR
! CLIENT ID
! CLIENT INFO
! CLIENT LIST
! CLIENT NO-EVICT x
! CLIENT NO-TOUCH x
! CLIENT PAUSE x
! CLIENT TRACKING x
! CLIENT TRACKINGINFO
! CLIENT UNBLOCK x
! CLIENT UNPAUSE
! CLUSTER ADDSLOTS x
! CLUSTER ADDSLOTSRANGE x x
! CLUSTER BUMPEPOCH
! CLUSTER COUNT-FAILURE-REPORTS x
! CLUSTER COUNTKEYSINSLOT x
! CLUSTER DELSLOTS x
! CLUSTER DELSLOTSRANGE x x
! CLUSTER FAILOVER
! CLUSTER FLUSHSLOTS
! CLUSTER FORGET x
! CLUSTER GETKEYSINSLOT x x
! CLUSTER LINKS
! CLUSTER MEET x x
! CLUSTER REPLICAS x
! CLUSTER REPLICATE x
! CLUSTER RESET
! CLUSTER SAVECONFIG
! CLUSTER SET-CONFIG-EPOCH x
! CLUSTER SETSLOT x x
! CLUSTER SLAVES x
! CONFIG RESETSTAT
! CONFIG REWRITE
! FAILOVER
! LATENCY DOCTOR
! LATENCY GRAPH x
! LATENCY HISTOGRAM
! LATENCY HISTORY x
! LATENCY LATEST
! LATENCY RESET
! MEMORY DOCTOR
! MEMORY MALLOC-STATS
! MEMORY PURGE
! MEMORY STATS
! MODULE LIST
! MODULE LOAD x
! MODULE LOADEX x
! MODULE UNLOAD x
! PFDEBUG x x
! PFSELFTEST
! PSYNC x x
! REPLCONF
! RESTORE-ASKING x x x
! ROLE
! SAVE
! SCRIPT DEBUG x
! SENTINEL CKQUORUM x
! SENTINEL CONFIG x x
! SENTINEL DEBUG
! SENTINEL FAILOVER x
! SENTINEL FLUSHCONFIG
! SENTINEL GET-MASTER-ADDR-BY-NAME x
! SENTINEL INFO-CACHE x
! SENTINEL IS-MASTER-DOWN-BY-ADDR x x x x
! SENTINEL MASTER x
! SENTINEL MASTERS
! SENTINEL MONITOR x x x x
! SENTINEL MYID
! SENTINEL PENDING-SCRIPTS
! SENTINEL REMOVE x
! SENTINEL REPLICAS x
! SENTINEL RESET x
! SENTINEL SENTINELS x
! SENTINEL SET x x x
! SENTINEL SIMULATE-FAILURE x
! SENTINEL SLAVES x
! SFLUSH x x
! SLAVEOF x x
! SLOWLOG GET
! SLOWLOG LEN
! SLOWLOG RESET
! SYNC
= FLUSHALL
= FLUSHDB
= DBSIZE
"#;

/// Commands the corpus cannot drive, with the test that does: QUIT closes
/// the connection; the test suite's redis-server (7.0) has no `CLIENT
/// SETINFO` (7.2), which the proxy answers itself; SCAN's cursors differ by
/// design.
const ELSEWHERE: &[(&str, &str)] = &[
    (
        "quit",
        "redis.rs local_commands_and_errors_keep_the_connection",
    ),
    (
        "client setinfo",
        "redis.rs local_commands_and_errors_keep_the_connection",
    ),
    ("scan", "scan_keys_dbsize_and_scripts_span_every_server"),
];

/// Answered by the proxy as one cluster node, which one redis-server (not
/// in cluster mode) refuses: tests/cluster_view.rs drives them.
const CLUSTER_VIEW: &[&str] = &[
    "asking",
    "readonly",
    "readwrite",
    "cluster info",
    "cluster keyslot",
    "cluster myid",
    "cluster myshardid",
    "cluster nodes",
    "cluster shards",
    "cluster slots",
];

/// Every command and subcommand of the table is driven by the corpus (or
/// by the test [`ELSEWHERE`] names): the broad test covers the whole table,
/// and a command added to the table without a corpus line fails here.
#[test]
fn the_corpus_drives_every_command_of_the_table() {
    let mut driven = BTreeSet::new();
    for (_, args, _) in corpus(["a", "b", "c", "d"], "p_", "sha") {
        let name = args[0].to_lowercase();
        if let Some(sub) = args.get(1) {
            driven.insert(format!("{name} {}", sub.to_lowercase()));
        }
        driven.insert(name);
    }
    let mut missing = Vec::new();
    let mut total = 0;
    for c in shardproxy::proto::redis::command::all() {
        for name in std::iter::once(&c.name).chain(c.subcommands.iter().map(|s| &s.name)) {
            total += 1;
            if !driven.contains(name.as_str())
                && !ELSEWHERE.iter().any(|(n, _)| n == name)
                && !CLUSTER_VIEW.contains(&name.as_str())
            {
                missing.push(name.clone());
            }
        }
    }
    assert!(missing.is_empty(), "no corpus line drives {missing:?}");
    println!(
        "the corpus drives {} of {total} commands; {} are tested elsewhere",
        total - ELSEWHERE.len() - CLUSTER_VIEW.len(),
        ELSEWHERE.len() + CLUSTER_VIEW.len()
    );
}

/// The corpus's lines: what is expected, and the arguments with `A`..`D`,
/// `P…` and `SHA` replaced.
fn corpus(keys: [&str; 4], pattern: &str, sha: &str) -> Vec<(Expect, Vec<String>, String)> {
    let mut out = Vec::new();
    let mut lines = CORPUS.lines().filter(|l| !l.is_empty()).peekable();
    while let Some(line) = lines.next() {
        let mut line = line.to_string();
        // A line that does not start with an expectation continues the last.
        while let Some(next) = lines.peek() {
            if next.len() > 2
                && [b'=', b'~', b's', b'!', b'?'].contains(&next.as_bytes()[0])
                && next.as_bytes()[1] == b' '
            {
                break;
            }
            line.push('\n');
            line.push_str(next);
            lines.next();
        }
        let (mark, rest) = line.split_at(2);
        let expect = match mark.trim() {
            "=" => Expect::Same,
            "~" => Expect::Kind,
            "s" => Expect::Sorted,
            "!" => Expect::Refused,
            "?" => Expect::SameIfTagged,
            other => panic!("corpus mark {other:?}"),
        };
        let tokens: Vec<&str> = if rest.contains(" | ") {
            rest.split(" | ").collect()
        } else {
            rest.split(' ').collect()
        };
        let args = tokens
            .iter()
            .map(|t| match *t {
                "A" => keys[0].to_string(),
                "B" => keys[1].to_string(),
                "C" => keys[2].to_string(),
                "D" => keys[3].to_string(),
                "SHA" => sha.to_string(),
                t if t.starts_with('P') && t.len() == 2 => format!("{pattern}{}", &t[1..]),
                t => t.to_string(),
            })
            .collect();
        out.push((expect, args, rest.to_string()));
    }
    out
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Array(mut items) => {
            items.sort_by_key(|i| format!("{i:?}"));
            Value::Array(items)
        }
        other => other,
    }
}

fn kind(v: &Value) -> std::mem::Discriminant<Value> {
    std::mem::discriminant(v)
}

/// Runs the corpus through a 3-server pool and against one redis-server;
/// returns how many lines were answered `-CROSSSLOT`.
/// Four key names of which no two neighbours (A B, B C, C D) share a server,
/// found by setting candidates through the proxy and asking the servers.
fn spread_keys(k: &mut Conn, backends: &[&Proc]) -> Vec<String> {
    let mut picked: Vec<(String, usize)> = Vec::new();
    for i in 0..200 {
        let key = format!("k{i}");
        assert_eq!(k.cmd(&[b"SET", key.as_bytes(), b"x"]), b"+OK\r\n");
        let Some(at) = backends
            .iter()
            .position(|b| Conn::new(b.port).value(&[b"EXISTS", key.as_bytes()]).int() == 1)
        else {
            panic!("{key} is on no server")
        };
        assert_eq!(k.cmd(&[b"DEL", key.as_bytes()]), b":1\r\n");
        if picked.last().is_none_or(|&(_, last)| last != at) {
            picked.push((key, at));
            if picked.len() == 4 {
                return picked.into_iter().map(|(k, _)| k).collect();
            }
        }
    }
    panic!("200 keys and no four that spread over the servers");
}

fn run_corpus(tagged: bool) -> usize {
    let (a, b, c) = (redis(), redis(), redis());
    let direct = redis();
    let extra = if tagged { "  hash_tag: \"{}\"\n" } else { "" };
    let p = shardproxy(&pool(&[&a, &b, &c], extra), &[]);
    let backends = [&a, &b, &c];
    let mut k = Conn::new(p.port);
    let spread;
    let keys = if tagged {
        ["{t}ka", "{t}kb", "{t}kc", "{t}kd"]
    } else {
        spread = spread_keys(&mut k, &backends);
        [&*spread[0], &*spread[1], &*spread[2], &*spread[3]]
    };
    let pattern = if tagged { "{t}w_" } else { "w_" };
    let mut d = Conn::new(direct.port);
    let sha = d.value(&[b"SCRIPT", b"LOAD", b"return KEYS[1]"]).text();
    assert_eq!(d.cmd(&[b"SCRIPT", b"FLUSH"]), b"+OK\r\n");
    let mut crossslot = 0;
    for (expect, args, line) in corpus(keys, pattern, &sha) {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let before = data(&backends);
        let got = Value::parse(&k.cmd(&bytes));
        let refused = match &got {
            Value::Error(e) => e.starts_with("CROSSSLOT") || e.contains("proxy"),
            _ => false,
        };
        if expect == Expect::Refused || refused {
            assert!(refused, "{line}: expected a refusal, got {got:?}");
            assert_eq!(data(&backends), before, "{line}: refused, yet data changed");
            if matches!(&got, Value::Error(e) if e.starts_with("CROSSSLOT")) {
                assert!(!tagged, "{line}: CROSSSLOT with every key on one server");
                crossslot += 1;
            } else if expect != Expect::SameIfTagged || tagged {
                assert_eq!(expect, Expect::Refused, "{line}: refused: {got:?}");
            }
            continue;
        }
        let want = d.value(&bytes);
        match expect {
            Expect::Same | Expect::SameIfTagged => assert_eq!(got, want, "{line}"),
            Expect::Sorted => assert_eq!(sorted(got), sorted(want), "{line}"),
            Expect::Kind => assert_eq!(kind(&got), kind(&want), "{line}: {got:?} vs {want:?}"),
            Expect::Refused => unreachable!(),
        }
    }
    // What the pool holds is what the one server holds, key by key, each on
    // the server the proxy routes it to.
    assert_eq!(k.value(&[b"DBSIZE"]), d.value(&[b"DBSIZE"]));
    crossslot
}

#[test]
fn every_command_class_as_on_one_server_with_hash_tags() {
    assert_eq!(run_corpus(true), 0);
}

#[test]
fn cross_server_commands_are_refused_and_change_nothing() {
    let n = run_corpus(false);
    println!("{n} corpus lines answered -CROSSSLOT");
    assert!(n >= 10, "only {n} CROSSSLOT: the keys do not spread");
}

#[test]
fn scan_keys_dbsize_and_scripts_span_every_server() {
    let (a, b, c) = (redis(), redis(), redis());
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends, ""), &[]);
    let mut k = Conn::new(p.port);
    // 10,000 keys, pipelined in MSETs of 100.
    let names: Vec<String> = (0..10_000).map(|i| format!("scan:{i}")).collect();
    for chunk in names.chunks(100) {
        let mut cmd: Vec<&[u8]> = vec![b"MSET"];
        for n in chunk {
            cmd.push(n.as_bytes());
            cmd.push(b"1");
        }
        assert_eq!(k.cmd(&cmd), b"+OK\r\n");
    }
    let per_server: Vec<i64> = backends
        .iter()
        .map(|b| Conn::new(b.port).value(&[b"DBSIZE"]).int())
        .collect();
    assert!(per_server.iter().all(|&n| n > 2000), "{per_server:?}");
    assert_eq!(k.value(&[b"DBSIZE"]).int(), 10_000);
    // SCAN COUNT 10: every key exactly once, and the iteration ends.
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut cursor = b"0".to_vec();
    let mut calls = 0;
    loop {
        let r = k.value(&[b"SCAN", &cursor, b"MATCH", b"scan:*", b"COUNT", b"10"]);
        let [next, keys] = r.items() else {
            panic!("{r:?}")
        };
        for key in keys.items() {
            let Value::Bulk(key) = key else {
                panic!("{key:?}")
            };
            *seen.entry(key.clone()).or_default() += 1;
        }
        cursor = next.text().into_bytes();
        calls += 1;
        assert!(calls < 20_000, "SCAN does not end");
        if cursor == b"0" {
            break;
        }
    }
    assert_eq!(seen.len(), 10_000, "keys seen");
    assert!(seen.values().all(|&n| n == 1), "a key was returned twice");
    println!("SCAN COUNT 10 over 10,000 keys on 3 servers: {calls} calls, each key once");
    // TYPE is passed on; a bad cursor is an error.
    let r = k.value(&[b"SCAN", b"0", b"TYPE", b"list"]);
    assert_eq!(r.items()[1].items().len(), 0);
    assert!(matches!(k.value(&[b"SCAN", b"x"]), Value::Error(e) if e.contains("invalid cursor")));
    // KEYS agrees with the servers.
    let keys = k.value(&[b"KEYS", b"scan:1*"]);
    let mut want = 0;
    for b in &backends {
        want += Conn::new(b.port)
            .value(&[b"KEYS", b"scan:1*"])
            .items()
            .len();
    }
    assert_eq!(keys.items().len(), want);
    assert_eq!(want, 1 + 10 + 100 + 1000);
    // SCRIPT LOAD reaches every server: EVALSHA works for keys on each.
    let sha = k
        .value(&[b"SCRIPT", b"LOAD", b"return redis.call('GET', KEYS[1])"])
        .text();
    assert_eq!(sha.len(), 40);
    for b in &backends {
        let mut d = Conn::new(b.port);
        let exists = d.value(&[b"SCRIPT", b"EXISTS", sha.as_bytes()]);
        assert_eq!(exists.items()[0].int(), 1, "server {}", b.port);
    }
    for n in names.iter().take(200) {
        let r = k.value(&[b"EVALSHA", sha.as_bytes(), b"1", n.as_bytes()]);
        assert_eq!(r, Value::Bulk(b"1".to_vec()), "{n}");
    }
    let exists = k.value(&[b"SCRIPT", b"EXISTS", sha.as_bytes(), b"ffff"]);
    assert_eq!(exists, Value::Array(vec![Value::Int(1), Value::Int(0)]));
    // FLUSHALL: +OK only once every server did it.
    assert_eq!(k.cmd(&[b"FLUSHALL", b"SYNC"]), b"+OK\r\n");
    for b in &backends {
        assert_eq!(Conn::new(b.port).value(&[b"DBSIZE"]).int(), 0);
    }
    // INFO names the proxy, the lowest server version, and sums keyspaces.
    assert_eq!(k.cmd(&[b"SET", b"x", b"1"]), b"+OK\r\n");
    let info = k.value(&[b"INFO"]).text();
    assert!(info.contains("proxy:shardproxy-"), "{info}");
    assert!(info.contains("redis_version:7."), "{info}");
    assert!(info.contains("db0:keys=1,"), "{info}");
    let server_only = k.value(&[b"INFO", b"server"]).text();
    assert!(server_only.starts_with("# Server\r\n") && !server_only.contains("# Keyspace"));
}

/// A key's type and value in a form that does not depend on the server's
/// encoding (what the proxy's pool holds against what one server holds).
fn canonical(c: &mut Conn, key: &[u8]) -> String {
    let t = c.value(&[b"TYPE", key]).text();
    let v = match t.as_str() {
        "string" => c.value(&[b"GET", key]),
        "list" => c.value(&[b"LRANGE", key, b"0", b"-1"]),
        "set" => sorted(c.value(&[b"SMEMBERS", key])),
        "zset" => c.value(&[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]),
        _ => Value::Nil,
    };
    format!("{t} {v:?}")
}

/// Random multi-key commands over random keys through a 3-server pool:
/// each one either runs exactly as on one server or is refused with
/// `-CROSSSLOT` and changes nothing; afterwards every key reads the same
/// through the proxy as on the one server, and the pool holds no other key.
#[test]
fn random_multi_key_commands_never_split_silently() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let (a, b, c) = (redis(), redis(), redis());
    let backends = [&a, &b, &c];
    let mirror = redis();
    let p = shardproxy(&pool(&backends, ""), &[]);
    let names: Vec<String> = (0..12).map(|i| format!("pk{i}")).collect();
    const INCR_ALL: &str = "for _, k in ipairs(KEYS) do redis.call('INCR', k) end return #KEYS";
    // (template, number of keys)
    let templates: &[(&str, usize)] = &[
        ("MSETNX K v K w", 2),
        ("MSET K v K w K x", 3),
        ("DEL K K K", 3),
        ("RENAME K K", 2),
        ("SMOVE K K m", 2),
        ("LMOVE K K LEFT RIGHT", 2),
        ("SUNIONSTORE K K K", 3),
        ("ZUNIONSTORE K 2 K K", 3),
        ("PFMERGE K K K", 3),
        ("COPY K K REPLACE", 2),
        ("BITOP OR K K K", 3),
        ("EVAL|INCR_ALL|2|K|K", 2),
        ("SADD K m n", 1),
        ("RPUSH K x y", 1),
        ("ZADD K 1 m", 1),
        ("PFADD K a b", 1),
        ("SET K 5", 1),
    ];
    let strategy = proptest::collection::vec(
        (
            0..templates.len(),
            proptest::collection::vec(0..names.len(), 3),
        ),
        5..25,
    );
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let refused = std::cell::Cell::new(0usize);
    let ran = std::cell::Cell::new(0usize);
    let result = runner.run(&strategy, |steps| {
        let mut k = Conn::new(p.port);
        let mut m = Conn::new(mirror.port);
        prop_assert_eq!(k.cmd(&[b"FLUSHALL"]), b"+OK\r\n".to_vec());
        prop_assert_eq!(m.cmd(&[b"FLUSHALL"]), b"+OK\r\n".to_vec());
        for (t, picks) in &steps {
            let (template, _) = templates[*t];
            let sep = if template.contains('|') { '|' } else { ' ' };
            let mut next = picks.iter();
            let args: Vec<String> = template
                .split(sep)
                .map(|tok| match tok {
                    "K" => names[*next.next().unwrap_or(&0)].clone(),
                    "INCR_ALL" => INCR_ALL.to_string(),
                    t => t.to_string(),
                })
                .collect();
            let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let before = data(&backends);
            let got = k.cmd(&bytes);
            if got.starts_with(b"-CROSSSLOT") {
                prop_assert_eq!(data(&backends), before, "{:?} changed data", args);
                refused.set(refused.get() + 1);
                continue;
            }
            ran.set(ran.get() + 1);
            let want = m.cmd(&bytes);
            prop_assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{:?}",
                args
            );
        }
        for n in &names {
            prop_assert_eq!(
                canonical(&mut k, n.as_bytes()),
                canonical(&mut m, n.as_bytes()),
                "{} differs",
                n
            );
        }
        prop_assert_eq!(k.value(&[b"DBSIZE"]), m.value(&[b"DBSIZE"]));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (ran, refused) = (ran.get(), refused.get());
    println!("{ran} commands ran as on one server, {refused} refused with -CROSSSLOT");
    assert!(refused > 20 && ran > 100, "{ran} ran, {refused} refused");
}
