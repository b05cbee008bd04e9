//! YAML documents: yaml-rust2's event parser, with the value built here so that depth, alias
//! expansion, duplicate keys, tags and scalar resolution follow the rules of the module above.
//!
//! The parser is pulled one event at a time and the load stops at the first event past a
//! bound, so the work done on a hostile document is bounded by the bounds, not by its size.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

use super::{weight, DocumentError, MAX_DEPTH};
use crate::text::printable;

/// The prefix of the standard tags (`!!str` is `tag:yaml.org,2002:str`).
const CORE_TAGS: &str = "tag:yaml.org,2002:";

pub(super) fn load(text: &str, alias_budget: usize) -> Result<Value, DocumentError> {
    let mut loader = Loader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        alias_limit: alias_budget,
        alias_budget,
    };
    loader.document()
}

struct Loader<'a> {
    parser: Parser<std::str::Chars<'a>>,
    /// Anchored values by anchor id, with their weight.
    anchors: HashMap<usize, (Value, usize)>,
    /// Bytes aliases may add in all, and may still add.
    alias_limit: usize,
    alias_budget: usize,
}

impl Loader<'_> {
    fn document(&mut self) -> Result<Value, DocumentError> {
        let (event, mark) = self.next()?;
        if event != Event::StreamStart {
            return Err(at(mark, "expected the start of the document"));
        }
        let (event, mark) = self.next()?;
        match event {
            Event::DocumentStart => {}
            Event::StreamEnd => return Err(at(mark, "the document is empty")),
            _ => return Err(at(mark, "expected the start of the document")),
        }
        let (event, mark) = self.next()?;
        let value = self.node(event, mark, 0)?;
        let (event, mark) = self.next()?;
        if event != Event::DocumentEnd {
            return Err(at(mark, "expected the end of the document"));
        }
        let (event, mark) = self.next()?;
        match event {
            Event::StreamEnd => Ok(value),
            Event::DocumentStart => Err(at(mark, "a second document starts here; a file holds one document")),
            _ => Err(at(mark, "expected the end of the file")),
        }
    }

    fn next(&mut self) -> Result<(Event, Marker), DocumentError> {
        self.parser.next_token().map_err(|error| scan_error(&error))
    }

    /// The next event of a collection, or `None` at its `end`.
    fn next_before(&mut self, end: &Event) -> Result<Option<(Event, Marker)>, DocumentError> {
        let (event, mark) = self.next()?;
        Ok((event != *end).then_some((event, mark)))
    }

    /// The node that starts with `event`, `depth` levels down.
    fn node(&mut self, event: Event, mark: Marker, depth: usize) -> Result<Value, DocumentError> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(text, style, tag.as_ref()).map_err(|message| at(mark, message))?;
                Ok(self.anchored(anchor, value))
            }
            Event::SequenceStart(anchor, tag) => {
                let depth = collection(tag.as_ref(), "seq", depth, mark)?;
                let mut items = Vec::new();
                while let Some((event, mark)) = self.next_before(&Event::SequenceEnd)? {
                    items.push(self.node(event, mark, depth)?);
                }
                Ok(self.anchored(anchor, Value::Array(items)))
            }
            Event::MappingStart(anchor, tag) => {
                let depth = collection(tag.as_ref(), "map", depth, mark)?;
                let mut map = Map::new();
                while let Some((event, key_mark)) = self.next_before(&Event::MappingEnd)? {
                    let key = self.key(event, key_mark, depth)?;
                    if map.contains_key(&key) {
                        return Err(at(key_mark, format!("key `{}` is given twice", printable(&key))));
                    }
                    let (event, mark) = self.next()?;
                    let value = self.node(event, mark, depth)?;
                    map.insert(key, value);
                }
                Ok(self.anchored(anchor, Value::Object(map)))
            }
            Event::Alias(anchor) => {
                let Some((value, weight)) = self.anchors.get(&anchor) else {
                    return Err(at(mark, "an alias to an unknown anchor"));
                };
                if *weight > self.alias_budget {
                    return Err(at(
                        mark,
                        format!(
                            "aliases expand the document by more than {} bytes, the limit for \
                             this document (twice its size, at least {} MiB)",
                            self.alias_limit,
                            super::MIN_ALIAS_BUDGET >> 20
                        ),
                    ));
                }
                self.alias_budget -= weight;
                Ok(value.clone())
            }
            _ => Err(at(mark, "expected a value")),
        }
    }

    /// A mapping key: text, or a scalar taken as text.
    fn key(&mut self, event: Event, mark: Marker, depth: usize) -> Result<String, DocumentError> {
        match self.node(event, mark, depth)? {
            Value::String(key) => Ok(key),
            Value::Null => Ok(String::new()),
            Value::Bool(flag) => Ok(flag.to_string()),
            Value::Number(number) => Ok(number.to_string()),
            Value::Array(_) | Value::Object(_) => Err(at(mark, "a key must be text, not a list or a mapping")),
        }
    }

    /// `value`, kept under `anchor` (if it has one) for the aliases that follow.
    fn anchored(&mut self, anchor: usize, value: Value) -> Value {
        if anchor != 0 {
            self.anchors.insert(anchor, (value.clone(), weight(&value)));
        }
        value
    }
}

/// Starts a collection of `kind` (`seq`, `map`): checks its tag, and that it is not too deep;
/// returns the depth of its items.
fn collection(tag: Option<&Tag>, kind: &str, depth: usize, mark: Marker) -> Result<usize, DocumentError> {
    check_collection_tag(tag, kind).map_err(|message| at(mark, message))?;
    deeper(depth, mark)
}

fn deeper(depth: usize, mark: Marker) -> Result<usize, DocumentError> {
    if depth >= MAX_DEPTH {
        return Err(at(mark, format!("nested more than {MAX_DEPTH} levels deep")));
    }
    Ok(depth + 1)
}

fn at(mark: Marker, message: impl Into<String>) -> DocumentError {
    DocumentError {
        format: "YAML",
        line: Some(mark.line()),
        column: Some(mark.col() + 1),
        message: message.into(),
    }
}

fn scan_error(error: &ScanError) -> DocumentError {
    // The scanner's own bound on flow collections (255 levels) is past ours.
    match error.info() {
        "recursion limit exceeded" => at(*error.marker(), format!("nested more than {MAX_DEPTH} levels deep")),
        info => at(*error.marker(), info),
    }
}

/// Only the standard tag of the collection's own kind (or none) is accepted on a collection.
fn check_collection_tag(tag: Option<&Tag>, kind: &str) -> Result<(), String> {
    match tag {
        None => Ok(()),
        Some(tag) if tag.handle == CORE_TAGS && tag.suffix == kind => Ok(()),
        Some(tag) => Err(format!("tag `{}` is not supported here", tag_name(tag))),
    }
}

fn tag_name(tag: &Tag) -> String {
    let handle = if tag.handle == CORE_TAGS { "!!" } else { &tag.handle };
    printable(&format!("{handle}{}", tag.suffix)).into_owned()
}

/// The value of a scalar: plain scalars resolve by the core schema, others are strings;
/// standard tags force a type.
fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    let plain = style == TScalarStyle::Plain;
    let Some(tag) = tag else {
        return if plain {
            resolve_plain(text)
        } else {
            Ok(Value::String(text))
        };
    };
    if tag.handle.is_empty() && tag.suffix == "!" {
        // The non-specific tag `!`: a string, whatever it looks like.
        return Ok(Value::String(text));
    }
    if tag.handle != CORE_TAGS {
        return Err(format!("tag `{}` is not supported", tag_name(tag)));
    }
    let resolved = match tag.suffix.as_str() {
        "str" => return Ok(Value::String(text)),
        "null" | "bool" | "int" | "float" => resolve_plain(text.clone())?,
        _ => return Err(format!("tag `{}` is not supported on a scalar", tag_name(tag))),
    };
    let fits = match tag.suffix.as_str() {
        "null" => resolved.is_null(),
        "bool" => resolved.is_boolean(),
        "int" => resolved.is_i64() || resolved.is_u64(),
        _ => resolved.is_number(),
    };
    if !fits {
        return Err(format!("`{}` is not a valid `{}`", printable(&text), tag_name(tag)));
    }
    Ok(resolved)
}

/// A plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: String) -> Result<Value, String> {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf"
        | "-.INF" => {
            return Err(format!(
                "`{text}` is not a finite number, which JSON (and so a task) cannot hold"
            ))
        }
        _ => {}
    }
    if let Some(number) = integer(&text) {
        return Ok(Value::Number(number));
    }
    if is_float(&text) {
        if let Some(number) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Ok(Value::Number(number));
        }
    }
    Ok(Value::String(text))
}

/// `[-+]?[0-9]+`, `0o[0-7]+` or `0x[0-9a-fA-F]+`; integers too large for 64 bits become floats.
fn integer(text: &str) -> Option<Number> {
    let radix = |prefix: &str, radix: u32| {
        let digits = text.strip_prefix(prefix)?;
        if digits.is_empty() {
            return None;
        }
        u64::from_str_radix(digits, radix).ok().map(Number::from)
    };
    if let Some(number) = radix("0o", 8).or_else(|| radix("0x", 16)) {
        return Some(number);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Ok(number) = text.parse::<i64>() {
        return Some(number.into());
    }
    if let Ok(number) = text.trim_start_matches('+').parse::<u64>() {
        return Some(number.into());
    }
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(text: &str) -> bool {
    let bytes = text.strip_prefix(['-', '+']).unwrap_or(text).as_bytes();
    let mut at = 0;
    let digits = |at: &mut usize| {
        let start = *at;
        while *at < bytes.len() && bytes[*at].is_ascii_digit() {
            *at += 1;
        }
        *at - start
    };
    let whole = digits(&mut at);
    let mut fraction = 0;
    if at < bytes.len() && bytes[at] == b'.' {
        at += 1;
        fraction = digits(&mut at);
    }
    if whole == 0 && fraction == 0 {
        return false;
    }
    if at < bytes.len() && (bytes[at] == b'e' || bytes[at] == b'E') {
        at += 1;
        if at < bytes.len() && (bytes[at] == b'-' || bytes[at] == b'+') {
            at += 1;
        }
        if digits(&mut at) == 0 {
            return false;
        }
    }
    at == bytes.len()
}
