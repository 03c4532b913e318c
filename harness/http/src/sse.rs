//! An incremental parser of server-sent events (`text/event-stream`).

/// Splits a byte stream into the `data` payloads of its events, however the
/// bytes are chunked on the wire. Comments (`:`), `event:`, `id:` and
/// `retry:` lines are skipped; multi-line `data` is joined with `\n`.
///
/// ```
/// use fuselab_http::SseParser;
/// let mut p = SseParser::default();
/// assert!(p.push(b"data: {\"a\"").is_empty());
/// assert_eq!(p.push(b":1}\n\ndata: [DONE]\n\n"), ["{\"a\":1}", "[DONE]"]);
/// ```
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the payloads of the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            if self.line.is_empty() {
                if let Some(d) = self.data.take() {
                    out.push(d);
                }
                continue;
            }
            let line = String::from_utf8_lossy(&self.line);
            if let Some(rest) = line.strip_prefix("data:") {
                let rest = rest.strip_prefix(' ').unwrap_or(rest);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(rest);
                    }
                    None => self.data = Some(rest.to_owned()),
                }
            }
            self.line.clear();
        }
        out
    }

    /// The payload of an event left unterminated at the end of the stream
    /// (a server that closes without the final blank line).
    pub fn finish(&mut self) -> Option<String> {
        if !self.line.is_empty() {
            self.push(b"\n");
        }
        self.data.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_anywhere_gives_the_same_events() {
        let stream =
            b": ping\r\ndata: one\r\n\r\nevent: x\ndata: two\ndata: lines\n\ndata:[DONE]\n\n";
        let whole = SseParser::default().push(stream);
        assert_eq!(whole, ["one", "two\nlines", "[DONE]"]);
        for cut in 0..stream.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&stream[..cut]);
            got.extend(p.push(&stream[cut..]));
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn unterminated_last_event_is_returned_by_finish() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: tail").is_empty());
        assert_eq!(p.finish().as_deref(), Some("tail"));
        assert_eq!(p.finish(), None);
    }
}
