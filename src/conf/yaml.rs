//! The YAML layer of the configuration: events from `saphyr-parser` (a maintained
//! pure-Rust YAML 1.2 parser) walked into nutcracker's fixed shape —
//! `pool name → key → scalar | sequence of scalars` — with line numbers.
//!
//! We walk events rather than deserialize with serde because nutcracker's rules
//! are about the *text*: it rejects anchors, aliases, tags, flow collections and
//! explicit document markers, duplicate keys, and any nesting deeper than two
//! mappings; a serde model would silently accept most of those. Spans let every
//! error name its line.

use saphyr_parser::{Event, Parser, Span};

/// A scalar with the line it was written on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    pub text: String,
    pub line: usize,
}

/// The value of a pool key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Scalar(Scalar),
    /// A block sequence of scalars (normally `servers:`).
    Seq(Vec<Scalar>),
}

/// One `key: value` of a pool, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Scalar,
    pub value: Value,
}

/// One pool as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPool {
    pub name: Scalar,
    pub entries: Vec<Entry>,
}

/// A structural error, with the line where it was found when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    pub line: Option<usize>,
    pub msg: String,
}

fn err<T>(span: Option<Span>, msg: impl Into<String>) -> Result<T, ShapeError> {
    Err(ShapeError {
        line: span.map(|s| s.start.line()),
        msg: msg.into(),
    })
}

struct Walker<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// The source as characters: saphyr's markers count characters, not bytes.
    chars: Vec<char>,
    last: Option<Span>,
}

impl<'a> Walker<'a> {
    fn char_at(&self, span: Span) -> Option<char> {
        self.chars.get(span.start.index()).copied()
    }

    /// The next event, after rejecting every construct nutcracker disallows.
    fn next(&mut self) -> Result<(Event<'a>, Span), ShapeError> {
        let (ev, span) = match self.parser.next_event() {
            Some(Ok(x)) => x,
            Some(Err(e)) => {
                return Err(ShapeError {
                    line: Some(e.marker().line()),
                    msg: format!(
                        "invalid YAML: {} (column {})",
                        e.info(),
                        e.marker().col() + 1
                    ),
                })
            }
            None => return err(self.last, "unexpected end of the YAML stream"),
        };
        self.last = Some(span);
        let s = Some(span);
        match &ev {
            Event::DocumentStart(true) => {
                return err(s, "an explicit document start \"---\" is not allowed")
            }
            Event::DocumentEnd if self.char_at(span) == Some('.') => {
                return err(s, "an explicit document end \"...\" is not allowed")
            }
            Event::Alias(_) => return err(s, "YAML aliases (\"*name\") are not allowed"),
            Event::Scalar(_, _, anchor, tag)
            | Event::SequenceStart(anchor, tag)
            | Event::MappingStart(anchor, tag) => {
                if *anchor != 0 {
                    return err(s, "YAML anchors (\"&name\") are not allowed");
                }
                if tag.is_some() {
                    return err(s, "YAML tags (\"!!type\") are not allowed");
                }
                match (&ev, self.char_at(span)) {
                    (Event::SequenceStart(..), Some('[')) => {
                        return err(s, "flow sequences (\"[a, b]\") are not allowed: write one \"- item\" per line")
                    }
                    (Event::MappingStart(..), Some('{')) => {
                        return err(s, "flow mappings (\"{a: b}\") are not allowed: write one \"key: value\" per line")
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok((ev, span))
    }
}

/// Reads a configuration text into its pools (in file order).
pub fn read(src: &str) -> Result<Vec<RawPool>, ShapeError> {
    if src.contains('\t') {
        // libyaml refuses tabs in indentation; YAML 1.2 parsers are laxer about
        // tabs elsewhere. Refusing every tab keeps us strictly within nutcracker.
        let line = src[..src.find('\t').unwrap_or(0)].matches('\n').count() + 1;
        return err(
            None,
            "tab characters are not allowed in the configuration: indent with spaces",
        )
        .map_err(|e: ShapeError| ShapeError {
            line: Some(line),
            ..e
        });
    }
    let mut w = Walker {
        parser: Parser::new_from_str(src),
        chars: src.chars().collect(),
        last: None,
    };
    let mut pools = None;
    let mut docs = 0usize;
    loop {
        let (ev, span) = w.next()?;
        match ev {
            Event::StreamStart | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return err(
                        Some(span),
                        "the file must contain exactly one YAML document; found a second one",
                    );
                }
                pools = Some(read_root(&mut w)?);
            }
            Event::DocumentEnd => {}
            _ => return err(Some(span), "unexpected YAML content outside the document"),
        }
    }
    pools.ok_or(ShapeError {
        line: None,
        msg: "the file contains no YAML document: expected a mapping of pool names to pools".into(),
    })
}

fn scalar(text: std::borrow::Cow<'_, str>, span: Span) -> Scalar {
    Scalar {
        text: text.into_owned(),
        line: span.start.line(),
    }
}

fn read_root(w: &mut Walker<'_>) -> Result<Vec<RawPool>, ShapeError> {
    let (ev, span) = w.next()?;
    match ev {
        Event::MappingStart(..) => {}
        Event::Scalar(..) => {
            return err(
                Some(span),
                "the top level must be a mapping of pool names to pools, not a scalar",
            )
        }
        Event::SequenceStart(..) => {
            return err(
                Some(span),
                "the top level must be a mapping of pool names to pools, not a sequence",
            )
        }
        _ => {
            return err(
                Some(span),
                "the top level must be a mapping of pool names to pools",
            )
        }
    }
    let mut pools = Vec::new();
    loop {
        let (ev, span) = w.next()?;
        let name = match ev {
            Event::MappingEnd => break,
            Event::Scalar(text, ..) => scalar(text, span),
            _ => return err(Some(span), "a pool name must be a plain scalar"),
        };
        if name.text.is_empty() {
            return err(Some(span), "a pool name must not be empty");
        }
        let entries = read_pool(w, &name)?;
        pools.push(RawPool { name, entries });
    }
    Ok(pools)
}

fn read_pool(w: &mut Walker<'_>, pool: &Scalar) -> Result<Vec<Entry>, ShapeError> {
    let (ev, span) = w.next()?;
    match ev {
        Event::MappingStart(..) => {}
        Event::Scalar(..) => {
            return err(
                Some(span),
                format!("pool \"{}\": expected a mapping of pool keys (listen, servers, ...), found a scalar", pool.text),
            )
        }
        _ => {
            return err(
                Some(span),
                format!("pool \"{}\": expected a mapping of pool keys (listen, servers, ...)", pool.text),
            )
        }
    }
    let mut entries = Vec::new();
    loop {
        let (ev, span) = w.next()?;
        let key = match ev {
            Event::MappingEnd => break,
            Event::Scalar(text, ..) => scalar(text, span),
            _ => {
                return err(
                    Some(span),
                    format!("pool \"{}\": a key must be a plain scalar", pool.text),
                )
            }
        };
        let (ev, span) = w.next()?;
        let value = match ev {
            Event::Scalar(text, ..) => Value::Scalar(scalar(text, span)),
            Event::SequenceStart(..) => Value::Seq(read_seq(w, pool, &key)?),
            Event::MappingStart(..) => {
                return err(
                    Some(span),
                    format!(
                        "pool \"{}\": {}: a nested mapping is not allowed (the configuration is two levels deep: pool, then keys)",
                        pool.text, key.text
                    ),
                )
            }
            _ => return err(Some(span), format!("pool \"{}\": {}: unexpected value", pool.text, key.text)),
        };
        entries.push(Entry { key, value });
    }
    Ok(entries)
}

fn read_seq(w: &mut Walker<'_>, pool: &Scalar, key: &Scalar) -> Result<Vec<Scalar>, ShapeError> {
    let mut items = Vec::new();
    loop {
        let (ev, span) = w.next()?;
        match ev {
            Event::SequenceEnd => return Ok(items),
            Event::Scalar(text, ..) => items.push(scalar(text, span)),
            _ => {
                return err(
                    Some(span),
                    format!(
                    "pool \"{}\": {}: list items must be scalars (\"- host:port:weight [name]\")",
                    pool.text, key.text
                ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(src: &str) -> String {
        match read(src) {
            Ok(p) => panic!("accepted: {p:?}"),
            Err(e) => e.msg,
        }
    }

    #[test]
    fn reads_the_shape_with_lines() {
        let pools = read(
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1 a\n   - b:1:1\n",
        )
        .unwrap_or_default();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].name.text, "alpha");
        assert_eq!(pools[0].entries[0].key.text, "listen");
        assert_eq!(pools[0].entries[0].key.line, 2);
        match &pools[0].entries[1].value {
            Value::Seq(items) => {
                assert_eq!(items.len(), 2);
                assert_eq!(items[0].text, "127.0.0.1:6379:1 a");
                assert_eq!(items[1].line, 5);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn quoted_scalars_are_fine() {
        let pools = read("a:\n  hash_tag: \"{}\"\n  redis: 'true'\n  servers:\n  - x:1:1\n")
            .unwrap_or_default();
        assert_eq!(pools[0].entries.len(), 3);
    }

    #[test]
    fn rejects_what_nutcracker_rejects() {
        assert!(msg("---\na:\n  b: c\n").contains("---"));
        assert!(msg("a:\n  b: c\n...\n").contains("..."));
        assert!(msg("a:\n  s: [x, y]\n").contains("flow sequences"));
        assert!(msg("a: {b: c}\n").contains("flow mappings"));
        assert!(msg("a:\n  b: &x c\n  d: *x\n").contains("anchors"));
        assert!(msg("a:\n  b: !!str c\n").contains("tags"));
        assert!(msg("a:\n  b:\n    c: d\n").contains("nested mapping"));
        assert!(msg("a: foo\n").contains("found a scalar"));
        assert!(msg("- a\n- b\n").contains("not a sequence"));
        assert!(msg("foo\n").contains("not a scalar"));
        assert!(msg("").contains("no YAML document"));
        assert!(msg("# just a comment\n").contains("no YAML document"));
        assert!(msg("a:\n\tb: c\n").contains("tab"));
        assert!(msg("a:\n  b: c\n d: e\n").contains("invalid YAML"));
    }
}
