//! Server-sent events, decoded the way OpenAI's client libraries do: an event is the `data:`
//! lines before a blank line (several `data:` lines are joined with `\n`); `event:`, `id:`,
//! `retry:` and `:` comment lines are ignored; `\r\n` and `\n` line endings both work; an
//! event may be split across network reads at any byte.
//!
//! Decoding is incremental and allocation-free in the common case where a read holds whole
//! events: only a line cut by a read boundary is copied into the carry-over buffer.

/// Incremental SSE decoder.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// An incomplete line carried over from the previous read.
    partial: Vec<u8>,
    /// The data of the event being assembled, when it has more than one `data:` line or
    /// spans reads.
    data: Vec<u8>,
    /// Whether the current event has any `data:` line yet (an event with an empty `data:`
    /// line still dispatches, one with none does not).
    has_data: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one read of the response body; `on_event` receives the data of every event that
    /// completes within it, in order.
    pub fn feed(&mut self, mut bytes: &[u8], on_event: &mut impl FnMut(&[u8])) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(newline);
            bytes = &rest[1..];
            if self.partial.is_empty() {
                self.line(line, on_event);
            } else {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(line);
                self.line(&joined, on_event);
                joined.clear();
                self.partial = joined; // keep the allocation
            }
        }
        self.partial.extend_from_slice(bytes);
    }

    /// Whether the stream stopped in the middle of an event (a truncated response).
    pub fn has_pending(&self) -> bool {
        !self.partial.is_empty() || self.has_data
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8])) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                on_event(&self.data);
                self.data.clear();
                self.has_data = false;
            }
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // comment
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(stream: &[u8], piece: usize) -> (Vec<String>, bool) {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        for chunk in stream.chunks(piece) {
            decoder.feed(chunk, &mut |data| {
                events.push(String::from_utf8(data.to_vec()).unwrap())
            });
        }
        (events, decoder.has_pending())
    }

    const STREAM: &[u8] = b": keep-alive\n\
        data: {\"a\":1}\n\n\
        event: message\r\nid: 7\r\ndata: {\"b\":\r\ndata: 2}\r\n\r\n\
        retry: 100\n\n\
        data:no-space\n\n\
        data: [DONE]\n\n";

    #[test]
    fn decodes_events_exactly_as_openai_clients_do() {
        let (events, pending) = decode_in_pieces(STREAM, STREAM.len());
        assert_eq!(
            events,
            ["{\"a\":1}", "{\"b\":\n2}", "no-space", "[DONE]"],
            "comments, event/id/retry fields ignored; multi-line data joined with \\n"
        );
        assert!(!pending);
    }

    #[test]
    fn any_split_of_the_byte_stream_gives_the_same_events() {
        let (whole, _) = decode_in_pieces(STREAM, STREAM.len());
        for piece in 1..STREAM.len() {
            assert_eq!(
                decode_in_pieces(STREAM, piece).0,
                whole,
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn a_truncated_stream_is_reported_as_pending() {
        let (events, pending) = decode_in_pieces(b"data: {\"a\":1}\n\ndata: {\"tru", 4);
        assert_eq!(events, ["{\"a\":1}"]);
        assert!(pending);
        let (_, pending) = decode_in_pieces(b"data: x\n", 100);
        assert!(pending, "data line without the closing blank line");
    }
}
