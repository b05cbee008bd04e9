//! Text from users, made safe to show: names, ids and messages that reach a terminal or a log.

use std::borrow::Cow;

/// `text` with every control character (escape, NUL, newline, DEL, C1) written as an escape
/// (`\u{1b}`, `\n`), so that printing it cannot move the cursor, change colours or hide what
/// comes before it.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Like [`printable`], but keeps line breaks: for messages of several lines.
pub fn printable_lines(text: &str) -> String {
    text.split('\n').map(printable).collect::<Vec<_>>().join("\n")
}

/// Whether `text` holds a control character (see [`printable`]).
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// `text` as one URL path segment (or query value): every byte outside the unreserved set
/// percent-encoded.
pub fn url_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("plain ünïcode"), "plain ünïcode");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\u{1b}[2Jb\0c\nd\u{7f}\u{9b}"),
            "a\\u{1b}[2Jb\\u{0}c\\nd\\u{7f}\\u{9b}"
        );
        assert_eq!(printable_lines("one\u{1b}\ntwo"), "one\\u{1b}\ntwo");
        assert!(has_control("x\u{7}"));
        assert!(!has_control("x y"));
    }
}
