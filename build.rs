//! Turns Redis's own command metadata (`src/proto/redis/commands.json`, made
//! from redis's `src/commands/*.json` by `scripts/redis-commands`) into a
//! static Rust table: arity, flags and key specs of every command and
//! subcommand. What the proxy does with each command is decided in
//! `src/proto/redis/policy.rs`; nothing here is typed by hand.

use serde_json::Value;
use std::fmt::Write as _;

const DATA: &str = "src/proto/redis/commands.json";

fn main() {
    println!("cargo:rerun-if-changed={DATA}");
    println!("cargo:rerun-if-changed=build.rs");
    let text = std::fs::read_to_string(DATA).unwrap_or_else(|e| panic!("{DATA}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DATA}: {e}"));
    let cmds = doc["commands"]
        .as_array()
        .unwrap_or_else(|| panic!("{DATA}: no commands"));
    let mut out = String::new();
    let source = doc["source"].as_str().unwrap_or("");
    writeln!(
        out,
        "/// Where the data came from.\npub const SOURCE: &str = {source:?};"
    )
    .ok();
    writeln!(
        out,
        "/// Every command and subcommand, containers before their subcommands."
    )
    .ok();
    writeln!(out, "pub static SPECS: [Spec; {}] = [", cmds.len()).ok();
    for c in cmds {
        let s = |k: &str| {
            c[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {c}"))
                .to_string()
        };
        let flags: Vec<String> = c["flags"]
            .as_array()
            .unwrap_or_else(|| panic!("flags in {c}"))
            .iter()
            .map(|f| flag_const(f.as_str().unwrap_or("")))
            .collect();
        let flags = if flags.is_empty() {
            "0".to_string()
        } else {
            flags.join(" | ")
        };
        let mut keys = String::new();
        for ks in c["key_specs"]
            .as_array()
            .unwrap_or_else(|| panic!("key_specs in {c}"))
        {
            keys.push_str(&key_spec(ks));
            keys.push_str(", ");
        }
        writeln!(
            out,
            "    Spec {{ name: {:?}, container: {:?}, since: {:?}, group: {:?}, arity: {}, flags: {flags}, key_specs: &[{keys}] }},",
            s("name"),
            s("container"),
            s("since"),
            s("group"),
            c["arity"].as_i64().unwrap_or_else(|| panic!("arity in {c}")),
        )
        .ok();
    }
    out.push_str("];\n");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|e| panic!("{e}")))
        .join("commands.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}

fn flag_const(f: &str) -> String {
    format!("flag::{}", f.to_ascii_uppercase())
}

fn key_spec(ks: &Value) -> String {
    let flags = ks["flags"]
        .as_array()
        .unwrap_or_else(|| panic!("flags in {ks}"));
    let has = |f: &str| flags.iter().any(|x| x.as_str() == Some(f));
    let begin = match &ks["begin"] {
        Value::Object(m) if m.contains_key("index") => {
            format!("Begin::Index({})", m["index"])
        }
        Value::Object(m) if m.contains_key("keyword") => format!(
            "Begin::Keyword {{ keyword: {}, startfrom: {} }}",
            m["keyword"], m["startfrom"]
        ),
        _ => "Begin::Unknown".to_string(),
    };
    let find = match &ks["find"] {
        Value::Object(m) if m.contains_key("range") => {
            let r = &m["range"];
            format!(
                "Find::Range {{ lastkey: {}, step: {}, limit: {} }}",
                r[0], r[1], r[2]
            )
        }
        Value::Object(m) if m.contains_key("keynum") => {
            let k = &m["keynum"];
            format!(
                "Find::Keynum {{ keynumidx: {}, firstkey: {}, step: {} }}",
                k[0], k[1], k[2]
            )
        }
        _ => "Find::Unknown".to_string(),
    };
    format!(
        "KeySpec {{ begin: {begin}, find: {find}, not_key: {}, incomplete: {}, write: {} }}",
        has("not_key"),
        has("incomplete"),
        has("rw") || has("ow") || has("rm"),
    )
}
