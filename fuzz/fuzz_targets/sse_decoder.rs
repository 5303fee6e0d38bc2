//! The SSE decoder the load generator and the gateway read streamed responses with
//! (`infermon_http::sse::SseDecoder`), fed the same bytes whole, one byte at a time, and cut
//! at points chosen by the input. Must never panic, and the events (and whether the stream
//! stopped inside one) must not depend on how the network cut the bytes.
#![no_main]

use infermon_http::sse::SseDecoder;
use libfuzzer_sys::fuzz_target;

/// Decodes `chunks` in order: the events' data and whether an event was left unfinished.
fn decode<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Vec<u8>>, bool) {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk, &mut |data| events.push(data.to_vec()));
    }
    (events, decoder.has_pending())
}

fuzz_target!(|data: &[u8]| {
    // The first bytes (up to 8) are the cut pattern: chunk i is `pattern[i % len] % 32` bytes
    // long, where 0 is an empty read (a body stream may deliver one) followed by one byte;
    // the rest is the stream.
    let split = data.len().min(8);
    let (pattern, stream) = data.split_at(split);
    let whole = decode(std::iter::once(stream));
    let bytewise = decode(stream.chunks(1));
    assert_eq!(whole, bytewise, "byte-at-a-time reads");
    if pattern.is_empty() {
        return;
    }
    let mut chunks = Vec::new();
    let mut rest = stream;
    for &cut in pattern.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let len = usize::from(cut) % 32;
        if len == 0 {
            chunks.push(&[][..]);
        }
        // At least one byte per step, or a pattern of zeros would never get through the stream.
        let (chunk, tail) = rest.split_at(len.clamp(1, rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    assert_eq!(
        whole,
        decode(chunks.into_iter()),
        "reads cut by {pattern:?}"
    );
});
