//! The last bytes of a child's standard output or error.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The last bytes of a stream.
pub(super) struct Tail {
    buf: Vec<u8>,
    limit: usize,
}

impl Tail {
    pub(super) fn new(limit: usize) -> Tail {
        Tail { buf: Vec::new(), limit }
    }

    /// Reads `stream` to its end, keeping its last bytes.
    pub(super) async fn fill(&mut self, stream: Option<impl AsyncRead + Unpin>) {
        let Some(mut stream) = stream else { return };
        let mut chunk = vec![0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return,
                Ok(n) => self.push(&chunk[..n]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        if self.limit == 0 {
            return;
        }
        let bytes = &bytes[bytes.len().saturating_sub(self.limit)..];
        self.buf.extend_from_slice(bytes);
        // Trim rarely: only once twice the limit is buffered, so pushing stays linear.
        if self.buf.len() > 2 * self.limit {
            let excess = self.buf.len() - self.limit;
            self.buf.drain(..excess);
        }
    }

    /// The kept bytes as text, at most `limit` bytes long.
    pub(super) fn into_string(self) -> String {
        let mut bytes = &self.buf[self.buf.len().saturating_sub(self.limit)..];
        // Skip a character cut in half at the start rather than show a replacement for it.
        let cut = bytes.iter().take(3).take_while(|&&b| b & 0xC0 == 0x80).count();
        bytes = &bytes[cut..];
        let text = String::from_utf8_lossy(bytes);
        if text.len() <= self.limit {
            return text.into_owned();
        }
        // Replacement characters are longer than the bytes they replace: cut again.
        let mut start = text.len() - self.limit;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_string()
    }
}
