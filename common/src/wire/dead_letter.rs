//! What the dead-letter queue holds: the message that could not be used and why, as one JSON
//! header line followed by the message's bytes. A message too large to go there whole goes
//! truncated, its header saying how large it was and its SHA-256, so it can still be found in
//! the producer's logs; a dead letter never fails for its size.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// How much of a message a truncated dead letter keeps.
pub const TRUNCATED_KEEP_BYTES: usize = 64 * 1024;

/// Longest reason kept, in bytes; a longer one is cut at a character boundary.
pub const MAX_REASON_BYTES: usize = 64 * 1024;

/// A message in the dead-letter queue, with why it is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub source_queue: String,
    pub reason: String,
    /// The message, or its first bytes when `truncated` is set.
    pub payload: Bytes,
    /// Set when only the first bytes of the message are kept: its whole size and SHA-256.
    pub truncated: Option<Truncated>,
}

/// What is known of a message that was kept only in part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncated {
    pub size: usize,
    /// Lowercase hex.
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    source_queue: String,
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

impl DeadLetter {
    /// A dead letter holding the whole message.
    pub fn new(source_queue: impl Into<String>, reason: impl Into<String>, payload: Bytes) -> DeadLetter {
        DeadLetter {
            source_queue: source_queue.into(),
            reason: reason.into(),
            payload,
            truncated: None,
        }
    }

    /// Encodes the dead letter as stored in the dead-letter queue, whole.
    pub fn encode(&self) -> Bytes {
        self.encode_within(usize::MAX)
    }

    /// Encodes the dead letter in at most `max_bytes` (given room for its header): whole if it
    /// fits, else with the first [`TRUNCATED_KEEP_BYTES`] of the message (or fewer, to fit)
    /// and a header giving its size and SHA-256.
    pub fn encode_within(&self, max_bytes: usize) -> Bytes {
        let mut header = Header {
            source_queue: self.source_queue.clone(),
            reason: cut(&self.reason, MAX_REASON_BYTES).to_string(),
            size: self.truncated.as_ref().map(|truncated| truncated.size),
            sha256: self.truncated.as_ref().map(|truncated| truncated.sha256.clone()),
        };
        let line = header_line(&header);
        if line.len().saturating_add(self.payload.len()) <= max_bytes {
            return join(line, &self.payload);
        }
        header.size = Some(
            self.truncated
                .as_ref()
                .map_or(self.payload.len(), |truncated| truncated.size),
        );
        header.sha256 = Some(
            self.truncated
                .as_ref()
                .map_or_else(|| hex_sha256(&self.payload), |truncated| truncated.sha256.clone()),
        );
        let line = header_line(&header);
        let keep = TRUNCATED_KEEP_BYTES
            .min(self.payload.len())
            .min(max_bytes.saturating_sub(line.len()));
        join(line, &self.payload[..keep])
    }

    /// Decodes what [`DeadLetter::encode_within`] wrote.
    pub fn decode(bytes: &[u8]) -> Option<DeadLetter> {
        let newline = bytes.iter().position(|&b| b == b'\n')?;
        let header: Header = serde_json::from_slice(&bytes[..newline]).ok()?;
        let truncated = match (header.size, header.sha256) {
            (Some(size), Some(sha256)) => Some(Truncated { size, sha256 }),
            _ => None,
        };
        Some(DeadLetter {
            source_queue: header.source_queue,
            reason: header.reason,
            payload: Bytes::copy_from_slice(&bytes[newline + 1..]),
            truncated,
        })
    }
}

/// The header as one line, newline included.
fn header_line(header: &Header) -> Vec<u8> {
    let mut line = serde_json::to_vec(header).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

fn join(mut line: Vec<u8>, payload: &[u8]) -> Bytes {
    line.extend_from_slice(payload);
    line.into()
}

/// The SHA-256 of `bytes` in lowercase hex.
pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_round_trip() {
        let letter = DeadLetter::new(
            "tf.tasks.default.high",
            "unparsable message: expected value at \"line 1\"\n\\",
            Bytes::from_static(b"\x00garbage\nwith newline"),
        );
        assert_eq!(DeadLetter::decode(&letter.encode()), Some(letter));
    }

    #[test]
    fn a_letter_too_large_is_truncated_with_its_size_and_digest() {
        let payload = Bytes::from(vec![b'x'; 1 << 20]);
        let letter = DeadLetter::new("q", "too large", payload.clone());
        let encoded = letter.encode_within(200_000);
        assert!(encoded.len() <= 200_000);
        let decoded = DeadLetter::decode(&encoded).unwrap();
        assert_eq!(decoded.payload.len(), TRUNCATED_KEEP_BYTES);
        assert_eq!(
            decoded.truncated,
            Some(Truncated {
                size: 1 << 20,
                sha256: hex_sha256(&payload)
            })
        );
        // Even a limit smaller than the kept part is met.
        let encoded = letter.encode_within(1_000);
        assert!(encoded.len() <= 1_000, "{}", encoded.len());
        assert_eq!(DeadLetter::decode(&encoded).unwrap().truncated.unwrap().size, 1 << 20);
        // A letter that fits is kept whole.
        assert_eq!(
            DeadLetter::decode(&letter.encode_within(2 << 20)).unwrap().truncated,
            None
        );
        // An overlong reason is cut at a character boundary.
        let wordy = DeadLetter::new("q", "é".repeat(MAX_REASON_BYTES), Bytes::new());
        let decoded = DeadLetter::decode(&wordy.encode()).unwrap();
        assert!(decoded.reason.len() <= MAX_REASON_BYTES && decoded.reason.starts_with('é'));
    }
}
