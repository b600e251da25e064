//! An incremental decoder for server-sent events (the `text/event-stream` format upstream APIs stream in).
//!
//! [`SseDecoder`] takes bytes in whatever pieces the network delivers them and yields complete
//! [`SseEvent`]s, following the WHATWG parsing rules: `LF`, `CRLF` and `CR` line endings (a `CRLF`
//! split across two reads counts once), comment lines starting with `:`, `event:`/`data:`/`id:` fields,
//! several `data:` lines joined with `\n`, a leading byte-order mark, and UTF-8 characters split across
//! reads. Unlike a browser it also delivers a final event that the server did not terminate with a
//! blank line, since upstreams that close the connection right after their last event do exist. Each
//! event is capped in size ([`SseError::EventTooLarge`]), so a misbehaving upstream cannot make the
//! gateway buffer without bound.
//!
//! `data: [DONE]` is an ordinary event here ([`SseEvent::is_done`]); ending the stream on it is the
//! OpenAI provider's business.
//!
//! ```
//! use chitty_providers::framing::sse::SseDecoder;
//!
//! let mut decoder = SseDecoder::new();
//! decoder.feed(b": keep-alive\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nevent: ping\ndata: caf\xC3")?;
//! decoder.feed(b"\xA9\n\ndata: [DONE]")?;
//! let first = decoder.next_event().unwrap();
//! assert_eq!(first.data, "{\"a\":\n1}");
//! let second = decoder.next_event().unwrap();
//! assert_eq!((second.event.as_deref(), second.data.as_str()), (Some("ping"), "café"));
//! assert!(decoder.next_event().is_none());
//! let last = decoder.finish()?.unwrap();
//! assert!(last.is_done());
//! # Ok::<(), chitty_providers::framing::sse::SseError>(())
//! ```

use std::collections::VecDeque;

use bytes::Bytes;
use chitty_core::BoxError;
use futures::{Stream, StreamExt};

/// The default cap on one event's size: 16 MiB, far above any real chunk, far below a memory problem.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One dispatched server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, when the server set one.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen on the stream, when any.
    pub id: Option<String>,
}

impl SseEvent {
    /// Whether this is OpenAI's end-of-stream sentinel, `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

/// Why decoding a stream of server-sent events failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// One event (or one unterminated line) grew beyond the configured cap.
    #[error("server-sent event exceeds {limit} bytes")]
    EventTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// Reading the underlying byte stream failed.
    #[error("reading the event stream failed: {0}")]
    Body(#[source] BoxError),
}

/// Incremental server-sent-events parser: feed bytes, take events.
#[derive(Debug)]
pub struct SseDecoder {
    max_event_bytes: usize,
    line: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    after_cr: bool,
    at_start: bool,
    ready: VecDeque<SseEvent>,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new()
    }
}

impl SseDecoder {
    /// A decoder with the [`DEFAULT_MAX_EVENT_BYTES`] cap.
    pub fn new() -> SseDecoder {
        SseDecoder::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder that fails on events larger than `max_event_bytes`.
    pub fn with_max_event_bytes(max_event_bytes: usize) -> SseDecoder {
        SseDecoder {
            max_event_bytes,
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            event: None,
            last_id: None,
            after_cr: false,
            at_start: true,
            ready: VecDeque::new(),
        }
    }

    /// Parses `bytes`; complete events become available through [`SseDecoder::next_event`].
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), SseError> {
        if self.after_cr {
            // The LF of a CRLF that arrived in two pieces.
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
                self.after_cr = false;
            } else if !bytes.is_empty() {
                self.after_cr = false;
            }
        }
        while let Some(pos) = bytes.iter().position(|b| *b == b'\n' || *b == b'\r') {
            if self.line.is_empty() {
                // The common case: the whole line is in this read, so parse it in place without copying.
                self.check_size(pos)?;
                self.parse_line(&bytes[..pos])?;
            } else {
                self.push_line_bytes(&bytes[..pos])?;
                self.end_buffered_line()?;
            }
            let is_cr = bytes[pos] == b'\r';
            bytes = &bytes[pos + 1..];
            if is_cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_line_bytes(bytes)
    }

    /// The next complete event, if one is ready.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// Ends the stream: an unterminated last line and an event without its closing blank line are
    /// delivered rather than dropped. Returns the last event still pending, if any.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        if !self.line.is_empty() {
            self.end_buffered_line()?;
        }
        self.dispatch();
        Ok(self.ready.pop_front())
    }

    fn check_size(&self, more: usize) -> Result<(), SseError> {
        if self.line.len() + self.data.len() + more > self.max_event_bytes {
            return Err(SseError::EventTooLarge { limit: self.max_event_bytes });
        }
        Ok(())
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        self.check_size(bytes.len())?;
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_buffered_line(&mut self) -> Result<(), SseError> {
        let buffered = std::mem::take(&mut self.line);
        let parsed = self.parse_line(&buffered);
        // Keep the buffer's capacity for the next split line.
        self.line = buffered;
        self.line.clear();
        parsed
    }

    fn parse_line(&mut self, mut line: &[u8]) -> Result<(), SseError> {
        if self.at_start {
            self.at_start = false;
            line = line.strip_prefix("\u{FEFF}".as_bytes()).unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        // Lines are UTF-8; invalid bytes become U+FFFD as the standard says, never an error.
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    return Err(SseError::EventTooLarge { limit: self.max_event_bytes });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.into_owned()),
            b"id" if !value.contains('\0') => self.last_id = Some(value.into_owned()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) {
        let event = self.event.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        self.ready.push_back(SseEvent { event, data: std::mem::take(&mut self.data), id: self.last_id.clone() });
    }
}

/// Decodes a byte stream (e.g. an HTTP response body) into events, ending after the
/// first error.
pub fn decode<S, E>(bytes: S, max_event_bytes: usize) -> impl Stream<Item = Result<SseEvent, SseError>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Into<BoxError>,
{
    struct State<S> {
        bytes: S,
        decoder: SseDecoder,
        ended: bool,
    }
    let state = State { bytes, decoder: SseDecoder::with_max_event_bytes(max_event_bytes), ended: false };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.decoder.next_event() {
                return Some((Ok(event), st));
            }
            if st.ended {
                return None;
            }
            match st.bytes.next().await {
                Some(Ok(chunk)) => {
                    if let Err(e) = st.decoder.feed(&chunk) {
                        st.ended = true;
                        st.decoder.ready.clear();
                        return Some((Err(e), st));
                    }
                }
                Some(Err(e)) => {
                    st.ended = true;
                    st.decoder.ready.clear();
                    return Some((Err(SseError::Body(e.into())), st));
                }
                None => {
                    st.ended = true;
                    match st.decoder.finish() {
                        Ok(Some(event)) => return Some((Ok(event), st)),
                        Ok(None) => return None,
                        Err(e) => return Some((Err(e), st)),
                    }
                }
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, String> {
        let mut d = SseDecoder::with_max_event_bytes(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c).map_err(|e| e.to_string())?;
            while let Some(e) = d.next_event() {
                out.push(e);
            }
        }
        if let Some(e) = d.finish().map_err(|e| e.to_string())? {
            out.push(e);
        }
        while let Some(e) = d.next_event() {
            out.push(e);
        }
        Ok(out)
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn line_endings_comments_and_fields() {
        let events =
            decode_all(&[b"\xEF\xBB\xBFdata: a\r\rdata:b\r\n\r\n: comment\n\nevent: x\nid: 7\ndata\n\n"]).unwrap();
        assert_eq!(data(&events), ["a", "b", ""]);
        assert_eq!(events[2].event.as_deref(), Some("x"));
        assert_eq!(events[2].id.as_deref(), Some("7"));
        assert_eq!(events[0].event, None);
    }

    #[test]
    fn multi_line_data_and_event_without_data() {
        let events = decode_all(&[b"event: lonely\n\ndata: one\ndata:  two\n\n"]).unwrap();
        assert_eq!(data(&events), ["one\n two"]);
        assert_eq!(events[0].event, None, "the event type resets on the blank line");
    }

    #[test]
    fn crlf_split_across_reads_is_one_line_ending() {
        let events = decode_all(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\n\n"]).unwrap();
        assert_eq!(data(&events), ["a", "b"]);
    }

    #[test]
    fn utf8_split_across_reads() {
        let text = "data: 日本語 é 🎉\n\n".as_bytes();
        for i in 0..text.len() {
            let events = decode_all(&[&text[..i], &text[i..]]).unwrap();
            assert_eq!(data(&events), ["日本語 é 🎉"]);
        }
    }

    #[test]
    fn final_event_without_blank_line_and_done() {
        let events = decode_all(&[b"data: {}\n\ndata: [DONE]"]).unwrap();
        assert_eq!(data(&events), ["{}", "[DONE]"]);
        assert!(events[1].is_done());
    }

    #[test]
    fn oversized_event_is_a_typed_error() {
        let mut d = SseDecoder::with_max_event_bytes(16);
        assert!(d.feed(b"data: 0123456789\n").is_ok());
        assert!(matches!(d.feed(b"data: 0123456789\n"), Err(SseError::EventTooLarge { limit: 16 })));
        let mut d = SseDecoder::with_max_event_bytes(16);
        assert!(matches!(d.feed(&[b'x'; 17]), Err(SseError::EventTooLarge { .. })), "an endless line is capped too");
    }

    #[tokio::test]
    async fn stream_adapter_ends_after_body_error() {
        let parts: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"data: 1\n\nda")),
            Ok(Bytes::from_static(b"ta: 2\n\n")),
            Err(std::io::Error::other("connection reset")),
            Ok(Bytes::from_static(b"data: 3\n\n")),
        ];
        let out: Vec<_> = decode(futures::stream::iter(parts), 1024).collect().await;
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap().data, "1");
        assert_eq!(out[1].as_ref().unwrap().data, "2");
        assert!(matches!(out[2], Err(SseError::Body(_))));
    }

    fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut start = 0;
        for c in cuts {
            out.push(bytes[start..c].to_vec());
            start = c;
        }
        out.push(bytes[start..].to_vec());
        out
    }

    fn encode(events: &[(Option<String>, Vec<String>)], endings: &[usize]) -> Vec<u8> {
        const ENDINGS: [&str; 3] = ["\n", "\r\n", "\r"];
        let mut out = String::new();
        let mut n = 0;
        let mut previous = "";
        let mut eol = || {
            n += 1;
            let mut ending = ENDINGS[endings[n % endings.len()] % 3];
            // CR then LF is one CRLF, not two line endings: the encoding would be ambiguous.
            if previous == "\r" && ending == "\n" {
                ending = "\r\n";
            }
            previous = ending;
            ending
        };
        for (event, lines) in events {
            out.push_str(": keep-alive");
            out.push_str(eol());
            if let Some(name) = event {
                out.push_str("event: ");
                out.push_str(name);
                out.push_str(eol());
            }
            for line in lines {
                out.push_str("data: ");
                out.push_str(line);
                out.push_str(eol());
            }
            out.push_str(eol());
        }
        out.into_bytes()
    }

    proptest! {
        #[test]
        fn any_split_of_a_valid_stream_yields_the_same_events(
            events in prop::collection::vec(
                (prop::option::of("[a-z_]{1,8}"), prop::collection::vec("[^\r\n]{0,12}", 1..4)),
                0..8,
            ),
            endings in prop::collection::vec(0usize..3, 1..8),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let bytes = encode(&events, &endings);
            let pieces = split(&bytes, &cuts);
            let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            let decoded = decode_all(&refs).unwrap();
            let expected: Vec<SseEvent> = events
                .iter()
                .map(|(event, lines)| SseEvent { event: event.clone(), data: lines.join("\n"), id: None })
                .collect();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_splitting_never_changes_the_result(
            bytes in prop::collection::vec(prop::sample::select(b"data: \r\n:x\xC3\xA9\xFFevent id".to_vec()), 0..200),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = decode_all(&[&bytes]);
            let pieces = split(&bytes, &cuts);
            let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(decode_all(&refs), whole);
        }
    }
}
