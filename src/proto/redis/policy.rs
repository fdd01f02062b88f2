//! What the proxy does with each redis command: the one hand-written part of
//! the command table. Redis's metadata says where a command's keys are; this
//! says whether the proxy forwards it by its keys, splits it, fans it out to
//! every server and merges the replies, answers it itself, or refuses it.
//!
//! The rules, in order:
//! 1. the commands named below, by name;
//! 2. blocking commands need a session (a pinned connection) and are refused
//!    until sessions exist;
//! 3. a command with keys is forwarded by them ([`Route::Keys`]): one key,
//!    or several that route to the same server (else `-CROSSSLOT`);
//! 4. any other keyless command is refused, with the reason: it acts on one
//!    server's state, or on the connection the proxy owns.

use super::command::{flag, Spec};

/// How the replies of a request sent to several servers become one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// Not split.
    No,
    /// MGET: an array of bulks in key order.
    Mget,
    /// DEL UNLINK TOUCH EXISTS DBSIZE PUBSUB NUMPAT: the sum of integers.
    Sum,
    /// MSET: key/value pairs, `+OK` when every part is OK.
    Mset,
    /// FLUSHALL, SCRIPT FLUSH, FUNCTION DELETE…: `+OK` when every server
    /// said so, else the first error.
    AllOk,
    /// SCRIPT KILL, FUNCTION KILL: `+OK` if any server killed a script,
    /// else the first error (`-NOTBUSY`).
    AnyOk,
    /// SCRIPT LOAD, FUNCTION LOAD: every server's reply is the same (a sha,
    /// a library name); that reply.
    Same,
    /// KEYS, PUBSUB CHANNELS: the arrays concatenated.
    Concat,
    /// SCRIPT EXISTS: element-wise AND of arrays of 0/1.
    And,
    /// PUBSUB NUMSUB: pairs (name, count) with the counts summed per name.
    PairSum,
    /// RANDOMKEY: a random server's non-nil key.
    Random,
    /// INFO: numbers summed over servers, the proxy's own clients
    /// (`clients`, filled in when the request is made) and name.
    Info { clients: u32 },
    /// SCAN on one server: its cursor encoded with the server's index.
    Scan { server: u32, servers: u32 },
    /// WAIT: the smallest integer; WAITAOF: element-wise minimum of arrays.
    Min,
}

/// Commands the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Ping,
    Echo,
    Quit,
    Auth,
    Select,
    /// CLIENT SETNAME / SETINFO / GETNAME: the client's own connection.
    Client,
    Hello,
    Reset,
    /// CLUSTER SLOTS / SHARDS / NODES / INFO / MYID / MYSHARDID / KEYSLOT,
    /// READONLY, READWRITE, ASKING: the pool shown to cluster-aware clients
    /// as one node holding every slot ([`super::topology`]).
    Cluster,
}

/// Why a command needs a session (a connection of its own) — refused until
/// sessions exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// MULTI EXEC DISCARD WATCH UNWATCH.
    Transaction,
    /// SUBSCRIBE and the other subscriber commands.
    PubSub,
    /// Blocking commands with keys: run on a connection of their own to
    /// their keys' server.
    Blocking,
    /// WAIT, WAITAOF: on every server, the smallest count.
    Wait,
}

impl SessionKind {
    pub fn what(self) -> &'static str {
        match self {
            SessionKind::Transaction => "transactions (MULTI/EXEC/WATCH)",
            SessionKind::PubSub => "pub/sub subscriptions",
            SessionKind::Blocking => "blocking commands",
            SessionKind::Wait => "WAIT",
        }
    }
}

/// What the proxy does with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Forwarded by its keys (from the key specs): one key, or several that
    /// all route to one server; otherwise `-CROSSSLOT`.
    Keys,
    /// XREAD / XREADGROUP: [`Route::Keys`], but a session command with `BLOCK`.
    StreamRead,
    /// SORT / SORT_RO: the sorted key, `STORE`'s key and `BY`/`GET`
    /// patterns must all route to one server.
    Sort,
    /// Split per server and merged (MGET MSET DEL UNLINK EXISTS TOUCH).
    Split(Fragment),
    /// Keyless: sent to every server, replies merged.
    All(Fragment),
    /// Keyless: answered by any one server (the one the key `placeholder`
    /// routes to, as nutcracker routes keyless commands).
    One,
    /// Routed by a non-key argument (PUBLISH's channel) like a key.
    Arg(usize),
    /// SCAN: one server at a time, the server encoded in the cursor.
    Scan,
    Local(Local),
    Session(SessionKind),
    /// Refused with this reason.
    Refuse(&'static str),
    /// A container (XGROUP, SCRIPT…): its subcommand decides. (COMMAND is
    /// a container too, but also a command alone: it routes [`Route::One`].)
    Container,
}

const ONE_SERVER: &str = "it acts on one server of the pool, not on the pool";
const CONNECTION: &str = "it acts on the proxy's connection to a server, not on yours";
const CLUSTER: &str =
    "the proxy shows its pool to cluster clients as one node holding every slot (CLUSTER SLOTS, SHARDS, NODES)";
const OTHER_DB: &str = "a pool uses one database (redis_db)";

/// The route of a command (`name` is lower case, `container sub` for a
/// subcommand).
pub fn route(name: &str, spec: &Spec) -> Route {
    use Fragment::*;
    use Route::*;
    let keyed = !spec.key_specs.is_empty();
    match name {
        "mget" => Split(Mget),
        "mset" => Split(Mset),
        "del" | "unlink" | "exists" | "touch" => Split(Sum),
        "ping" => Local(self::Local::Ping),
        "echo" => Local(self::Local::Echo),
        "quit" => Local(self::Local::Quit),
        "auth" => Local(self::Local::Auth),
        "select" => Local(self::Local::Select),
        "hello" => Local(self::Local::Hello),
        "reset" => Local(self::Local::Reset),
        "client setname" | "client setinfo" | "client getname" => Local(self::Local::Client),
        "cluster slots" | "cluster shards" | "cluster nodes" | "cluster info" | "cluster myid"
        | "cluster myshardid" | "cluster keyslot" | "readonly" | "readwrite" | "asking" => {
            Local(self::Local::Cluster)
        }
        "multi" | "exec" | "discard" | "watch" | "unwatch" => Session(SessionKind::Transaction),
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "ssubscribe"
        | "sunsubscribe" => Session(SessionKind::PubSub),
        "wait" | "waitaof" => Session(SessionKind::Wait),
        "xread" | "xreadgroup" => StreamRead,
        "sort" | "sort_ro" => Sort,
        "publish" => Arg(1),
        "scan" => Scan,
        "dbsize" | "pubsub numpat" => All(Sum),
        "keys" | "pubsub channels" | "pubsub shardchannels" => All(Concat),
        "pubsub numsub" | "pubsub shardnumsub" => All(PairSum),
        "flushdb" | "flushall" | "script flush" | "function delete" | "function flush"
        | "function restore" => All(AllOk),
        "script load" | "function load" => All(Same),
        "script exists" => All(And),
        "script kill" | "function kill" => All(AnyOk),
        "randomkey" => All(Random),
        "info" => All(Info { clients: 0 }),
        "command" => One,
        "time"
        | "lastsave"
        | "lolwut"
        | "command count"
        | "command docs"
        | "command info"
        | "command list"
        | "command getkeys"
        | "command getkeysandflags"
        | "function list"
        | "function dump"
        | "function stats"
        | "config get"
        | "acl cat"
        | "acl genpass" => One,
        _ if name.ends_with(" help") => One,
        "move" | "swapdb" => Refuse(OTHER_DB),
        "migrate" | "restore-asking" => Refuse(ONE_SERVER),
        "script debug" | "monitor" => Refuse(CONNECTION),
        "sflush" => Refuse(CLUSTER),
        _ if spec.container.is_empty() && has_subcommands(name) => Container,
        _ if spec.container == "client" => Refuse(CONNECTION),
        _ if spec.group == "cluster" => Refuse(CLUSTER),
        _ if spec.flags & flag::BLOCKING != 0 => Session(SessionKind::Blocking),
        _ if spec.flags & flag::ADMIN != 0 => Refuse(ONE_SERVER),
        _ if keyed => Keys,
        _ => Refuse(ONE_SERVER),
    }
}

fn has_subcommands(name: &str) -> bool {
    super::command::SPECS.iter().any(|s| s.container == name)
}

#[cfg(test)]
mod tests {
    use super::super::command::{all, lookup};
    use super::*;

    fn route_of(name: &str) -> Route {
        let mut words = name.split(' ');
        let top = lookup(words.next().unwrap_or("").as_bytes());
        let c = match words.next() {
            Some(sub) => top.and_then(|c| c.sub(sub.as_bytes())),
            None => top,
        };
        c.map(|c| c.route).unwrap_or_else(|| panic!("{name}"))
    }

    #[test]
    fn decisions() {
        assert_eq!(route_of("get"), Route::Keys);
        assert_eq!(route_of("lmove"), Route::Keys);
        assert_eq!(route_of("mget"), Route::Split(Fragment::Mget));
        assert_eq!(route_of("blpop"), Route::Session(SessionKind::Blocking));
        assert_eq!(route_of("bzmpop"), Route::Session(SessionKind::Blocking));
        assert_eq!(route_of("multi"), Route::Session(SessionKind::Transaction));
        assert_eq!(route_of("xgroup"), Route::Container);
        assert_eq!(route_of("xgroup create"), Route::Keys);
        assert_eq!(route_of("script load"), Route::All(Fragment::Same));
        assert_eq!(route_of("config set"), Route::Refuse(ONE_SERVER));
        assert_eq!(route_of("config get"), Route::One);
        assert_eq!(route_of("cluster info"), Route::Local(Local::Cluster));
        assert_eq!(route_of("cluster slots"), Route::Local(Local::Cluster));
        assert_eq!(route_of("readonly"), Route::Local(Local::Cluster));
        assert_eq!(route_of("cluster addslots"), Route::Refuse(CLUSTER));
        assert_eq!(route_of("client reply"), Route::Refuse(CONNECTION));
        assert_eq!(route_of("client setname"), Route::Local(Local::Client));
        assert_eq!(route_of("shutdown"), Route::Refuse(ONE_SERVER));
        assert_eq!(route_of("debug"), Route::Refuse(ONE_SERVER));
        assert_eq!(route_of("replicaof"), Route::Refuse(ONE_SERVER));
        assert_eq!(route_of("select"), Route::Local(Local::Select));
        assert_eq!(route_of("swapdb"), Route::Refuse(OTHER_DB));
        assert_eq!(route_of("move"), Route::Refuse(OTHER_DB));
        assert_eq!(route_of("object encoding"), Route::Keys);
        assert_eq!(route_of("xinfo help"), Route::One);
        assert_eq!(route_of("publish"), Route::Arg(1));
        assert_eq!(route_of("spublish"), Route::Keys);
    }

    /// Every container routes through its subcommands, and every keyless
    /// top-level command was decided on purpose: a new Redis command shows up
    /// here until it is.
    #[test]
    fn every_command_is_decided() {
        for c in all() {
            if c.route == Route::Container {
                assert!(!c.subcommands.is_empty(), "{}", c.name);
            }
            // COMMAND alone lists every command.
            if !c.subcommands.is_empty() && c.name != "command" {
                assert_eq!(c.route, Route::Container, "{}", c.name);
            }
        }
        let refused: Vec<&str> = all()
            .iter()
            .flat_map(|c| std::iter::once(*c).chain(c.subcommands.iter()))
            .filter(|c| matches!(c.route, Route::Refuse(_)))
            .map(|c| c.name.as_str())
            .collect();
        let expected = [
            "acl deluser",
            "acl dryrun",
            "acl getuser",
            "acl list",
            "acl load",
            "acl log",
            "acl save",
            "acl setuser",
            "acl users",
            "acl whoami",
            "bgrewriteaof",
            "bgsave",
            "client caching",
            "client getredir",
            "client id",
            "client info",
            "client kill",
            "client list",
            "client no-evict",
            "client no-touch",
            "client pause",
            "client reply",
            "client tracking",
            "client trackinginfo",
            "client unblock",
            "client unpause",
            "cluster addslots",
            "cluster addslotsrange",
            "cluster bumpepoch",
            "cluster count-failure-reports",
            "cluster countkeysinslot",
            "cluster delslots",
            "cluster delslotsrange",
            "cluster failover",
            "cluster flushslots",
            "cluster forget",
            "cluster getkeysinslot",
            "cluster links",
            "cluster meet",
            "cluster replicas",
            "cluster replicate",
            "cluster reset",
            "cluster saveconfig",
            "cluster set-config-epoch",
            "cluster setslot",
            "cluster slaves",
            "config resetstat",
            "config rewrite",
            "config set",
            "debug",
            "failover",
            "latency doctor",
            "latency graph",
            "latency histogram",
            "latency history",
            "latency latest",
            "latency reset",
            "memory doctor",
            "memory malloc-stats",
            "memory purge",
            "memory stats",
            "migrate",
            "module list",
            "module load",
            "module loadex",
            "module unload",
            "monitor",
            "move",
            "pfdebug",
            "pfselftest",
            "psync",
            "replconf",
            "replicaof",
            "restore-asking",
            "role",
            "save",
            "script debug",
            "sentinel ckquorum",
            "sentinel config",
            "sentinel debug",
            "sentinel failover",
            "sentinel flushconfig",
            "sentinel get-master-addr-by-name",
            "sentinel info-cache",
            "sentinel is-master-down-by-addr",
            "sentinel master",
            "sentinel masters",
            "sentinel monitor",
            "sentinel myid",
            "sentinel pending-scripts",
            "sentinel remove",
            "sentinel replicas",
            "sentinel reset",
            "sentinel sentinels",
            "sentinel set",
            "sentinel simulate-failure",
            "sentinel slaves",
            "sflush",
            "shutdown",
            "slaveof",
            "slowlog get",
            "slowlog len",
            "slowlog reset",
            "swapdb",
            "sync",
        ];
        let mut refused = refused;
        refused.sort_unstable();
        assert_eq!(refused, expected);
    }
}

/// The generated part of `docs/commands.md`: every command and subcommand
/// of the table by what the proxy does with it.
pub fn listing() -> String {
    use super::command::all;
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |class: String, name: String| match groups.iter_mut().find(|g| g.0 == class) {
        Some(g) => g.1.push(name),
        None => groups.push((class, vec![name])),
    };
    for top in all() {
        let cmds = std::iter::once(top).chain(top.subcommands.iter());
        for c in cmds {
            let class = match c.route {
                Route::Container => continue,
                Route::Keys if c.keys == super::command::KeyShape::Single(1) => {
                    "forwarded by its key (the first argument)".to_string()
                }
                Route::Keys => {
                    "forwarded by its keys (key specs); several keys must share a server"
                        .to_string()
                }
                Route::StreamRead => {
                    "forwarded by its keys; with `BLOCK`, on a pinned connection".to_string()
                }
                Route::Sort => {
                    "SORT: the sorted key, `STORE` and `BY`/`GET` patterns must share a server"
                        .to_string()
                }
                Route::Split(f) => format!("split per server and merged ({f:?})"),
                Route::All(Fragment::Info { .. }) => {
                    "sent to every server, merged (Info)".to_string()
                }
                Route::All(f) => format!("sent to every server, merged ({f:?})"),
                Route::One => "answered by one server".to_string(),
                Route::Arg(i) => format!("forwarded by argument {i} as if it were a key"),
                Route::Scan => "SCAN: one server at a time, the server in the cursor".to_string(),
                Route::Local(_) => "answered by the proxy".to_string(),
                Route::Session(SessionKind::Transaction) => "a transaction, on the server of its keys (MULTI is queued by the proxy; WATCH pins a connection)".to_string(),
                Route::Session(SessionKind::Blocking) => "blocking: on a connection pinned to its keys' server, for its own block time".to_string(),
                Route::Session(SessionKind::Wait) => "on a pinned connection to every server; the smallest count".to_string(),
                Route::Session(SessionKind::PubSub) => "pub/sub: on subscribed connections pinned for the client (a channel routed like a key, a pattern on every server)".to_string(),
                Route::Refuse(why) => format!("refused: {why}"),
            };
            add(class, format!("`{}`", c.name.to_ascii_uppercase()));
        }
    }
    groups.sort();
    let mut out = String::new();
    for (class, names) in groups {
        out.push_str(&format!(
            "* **{class}** ({}): {}\n",
            names.len(),
            names.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod doc_tests {
    /// docs/commands.md lists the table as it is (regenerate with
    /// `SHARDPROXY_WRITE_DOCS=1 cargo test --lib listing`).
    #[test]
    fn listing_in_docs_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/commands.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        const START: &str = "<!-- generated by src/proto/redis/policy.rs listing() -->\n";
        const END: &str = "<!-- end of generated listing -->";
        let (Some(a), Some(b)) = (doc.find(START), doc.find(END)) else {
            panic!("docs/commands.md has no generated listing markers")
        };
        let want = super::listing();
        let have = &doc[a + START.len()..b];
        if have != want {
            if std::env::var_os("SHARDPROXY_WRITE_DOCS").is_some() {
                let new = format!("{}{START}{want}{}", &doc[..a], &doc[b..]);
                std::fs::write(path, new).unwrap_or_else(|e| panic!("{e}"));
            } else {
                panic!("docs/commands.md is out of date; regenerate with SHARDPROXY_WRITE_DOCS=1 cargo test --lib listing");
            }
        }
    }
}
