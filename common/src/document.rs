//! From YAML or JSON text to a JSON value, within bounds: what every file taskfleet reads
//! from users (workflows, fleets) goes through [`load_document`] before it is validated.
//!
//! The bounds make the cost of a document proportional to its size, whatever it holds:
//! nesting is at most [`MAX_DEPTH`] levels (YAML's flow collections cost the parser time per
//! level for every token, so depth is checked as the parser goes, not afterwards), and YAML
//! aliases may expand a document by at most [`alias_budget`] bytes (a small anchored string
//! aliased thousands of times is otherwise gigabytes once expanded). The loader also refuses
//! what a JSON value cannot say or would say wrongly: a key given twice (a plain JSON or YAML
//! parser keeps the last one silently), `.nan` and `.inf`, custom tags, and a second
//! document. A leading byte-order mark is ignored.
//!
//! YAML plain scalars resolve by the YAML 1.2 core schema: `null`/`~`/empty, `true`/`false`,
//! decimal, octal (`0o`) and hexadecimal (`0x`) integers, and decimal floats; everything
//! else, and every quoted or block scalar, is a string.

mod json;
mod yaml;

use std::fmt;

use serde_json::Value;

/// Most levels of nesting of mappings and lists in a document.
pub const MAX_DEPTH: usize = 64;

/// The fewest bytes aliases may add to any document.
pub const MIN_ALIAS_BUDGET: usize = 16 * 1024 * 1024;

/// How many bytes YAML aliases may add to a document of `text_len` bytes once expanded:
/// twice its own size, and at least [`MIN_ALIAS_BUDGET`]. Each aliased node counts the bytes
/// of its strings and keys plus 8 bytes per node.
pub fn alias_budget(text_len: usize) -> usize {
    text_len.saturating_mul(2).max(MIN_ALIAS_BUDGET)
}

/// Why a text is not a usable document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct DocumentError {
    /// `"YAML"` or `"JSON"`.
    pub format: &'static str,
    /// 1-based line and column of the problem, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}", self.format)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, " at line {line} column {column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Parses `text` as JSON when it starts with `{` or `[`, else as YAML (one document), within
/// the bounds described in the module documentation.
pub fn load_document(text: &str) -> Result<Value, DocumentError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match text.trim_start().as_bytes().first() {
        Some(b'{' | b'[') => json::load(text),
        _ => yaml::load(text, alias_budget(text.len())),
    }
}

/// Bytes a value counts for against the alias budget.
fn weight(value: &Value) -> usize {
    const NODE: usize = 8;
    match value {
        Value::String(text) => NODE + text.len(),
        Value::Array(items) => NODE + items.iter().map(weight).sum::<usize>(),
        Value::Object(map) => NODE + map.iter().map(|(key, value)| key.len() + weight(value)).sum::<usize>(),
        _ => NODE,
    }
}

#[cfg(test)]
mod tests;
