//! A reader for newline-delimited JSON (NDJSON), the format Ollama streams in: the body split into lines,
//! each line capped in size, whatever pieces the network delivers it in.
//!
//! ```
//! use bytes::Bytes;
//! use futures::{FutureExt, StreamExt};
//! use chitty_providers::framing::ndjson;
//!
//! let pieces = ["{\"a\"", ":1}\r\n\n{\"b\":2}"].map(|p| Ok::<_, std::io::Error>(Bytes::from(p)));
//! let lines: Vec<_> = ndjson::lines(futures::stream::iter(pieces)).collect().now_or_never().unwrap_or_default();
//! let lines: Vec<Bytes> = lines.into_iter().collect::<Result<_, _>>()?;
//! assert_eq!(lines, [&b"{\"a\":1}"[..], b"{\"b\":2}"]);
//! # Ok::<(), ndjson::LineError>(())
//! ```

use bytes::Bytes;
use chitty_core::BoxError;
use futures::{Stream, StreamExt};

/// The largest NDJSON line accepted from an upstream.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Why reading NDJSON lines failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// One line grew beyond [`MAX_LINE_BYTES`].
    #[error("an NDJSON line exceeds {MAX_LINE_BYTES} bytes")]
    TooLong,
    /// Reading the underlying byte stream failed.
    #[error("reading the NDJSON stream failed: {0}")]
    Body(#[source] BoxError),
}

/// Splits a byte stream into non-blank lines at `\n`, trimmed (JSON ignores the whitespace), the last
/// one terminated or not.
pub fn lines<S, E>(bytes: S) -> impl Stream<Item = std::result::Result<Bytes, LineError>> + Send
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
    E: Into<BoxError>,
{
    struct State<S> {
        bytes: S,
        buffer: Vec<u8>,
        ended: bool,
    }
    fn take_line(buffer: &mut Vec<u8>) -> Option<Bytes> {
        loop {
            let pos = buffer.iter().position(|b| *b == b'\n')?;
            let line: Vec<u8> = buffer.drain(..=pos).collect();
            let line = line.trim_ascii();
            if !line.is_empty() {
                return Some(Bytes::copy_from_slice(line));
            }
        }
    }
    let state = State { bytes, buffer: Vec::new(), ended: false };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(line) = take_line(&mut st.buffer) {
                return Some((Ok(line), st));
            }
            if st.ended {
                return None;
            }
            if st.buffer.len() > MAX_LINE_BYTES {
                st.ended = true;
                st.buffer.clear();
                return Some((Err(LineError::TooLong), st));
            }
            match st.bytes.next().await {
                Some(Ok(chunk)) => st.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    st.ended = true;
                    st.buffer.clear();
                    return Some((Err(LineError::Body(e.into())), st));
                }
                None => {
                    st.ended = true;
                    let rest = std::mem::take(&mut st.buffer);
                    let rest = rest.trim_ascii();
                    if rest.is_empty() {
                        return None;
                    }
                    return Some((Ok(Bytes::copy_from_slice(rest)), st));
                }
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn bytes(
        parts: &[&'static str],
    ) -> impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Unpin + use<> {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn ndjson_lines_split_anywhere() {
        let lines: Vec<_> = lines(bytes(&["{\"a\"", ":1}\r\n\n{\"b\":2}\n", "{\"c\":", "3}"])).collect().await;
        let lines: Vec<Bytes> = lines.into_iter().map(|l| l.unwrap()).collect();
        assert_eq!(lines, [&b"{\"a\":1}"[..], b"{\"b\":2}", b"{\"c\":3}"]);
    }

    proptest::proptest! {
        #[test]
        fn any_split_of_an_ndjson_body_yields_the_same_lines(
            body in proptest::collection::vec(proptest::sample::select(b"{}ab \r\n\xC3\xA9".to_vec()), 0..120),
            cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..8),
        ) {
            let read = |pieces: Vec<Vec<u8>>| {
                let parts = pieces.into_iter().map(|p| Ok::<_, std::io::Error>(Bytes::from(p))).collect::<Vec<_>>();
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                runtime.block_on(lines(futures::stream::iter(parts)).map(|l| l.unwrap()).collect::<Vec<_>>())
            };
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for c in cuts {
                pieces.push(body[start..c].to_vec());
                start = c;
            }
            pieces.push(body[start..].to_vec());
            let whole = read(vec![body.clone()]);
            proptest::prop_assert_eq!(read(pieces), whole.clone());
            for line in &whole {
                proptest::prop_assert!(!line.contains(&b'\n') && line.trim_ascii().len() == line.len());
            }
        }
    }
}
