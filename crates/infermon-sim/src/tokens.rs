//! Token accounting without a tokenizer, and the deterministic filler the "model" outputs.
//!
//! The approximation: **one token per 4 bytes of UTF-8 text, rounded up** (OpenAI's rule of
//! thumb for English). Chat prompts are first rendered to one string with a short role marker
//! per message (`<|role|>\n…\n`), standing in for a chat template, and counted the same way.
//! Token `i` of a prompt is bytes `4i..4i+4` of that rendering, so the KV blocks of two prompts
//! hold the same "tokens" exactly when those byte ranges are equal — which is what the prefix
//! cache hashes.
//!
//! The output text is the sentence [`FILLER`] repeated; every output token is 4 bytes of it, so
//! counting a completion's text with the same rule gives back its `completion_tokens`.

use std::hash::{DefaultHasher, Hash, Hasher};

/// Bytes of text per token.
pub const BYTES_PER_TOKEN: usize = 4;

/// The completion text, cycled. 52 bytes = 13 tokens.
pub const FILLER: &str = "This text is simulated by infermon, not by a model. ";

/// Tokens of `text` under the approximation (at least one for non-empty text).
pub fn count(text: &str) -> u32 {
    count_bytes(text.len())
}

/// Tokens of a prompt of `len` bytes.
pub fn count_bytes(len: usize) -> u32 {
    u32::try_from(len.div_ceil(BYTES_PER_TOKEN)).unwrap_or(u32::MAX)
}

/// The byte form of a prompt given as token ids (the completions API accepts those): 4 bytes
/// per id, so it counts and hashes like text does.
pub fn token_ids_to_bytes(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// Renders chat messages the way the prompt is counted and hashed.
pub fn render_chat<'a>(messages: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut rendered = String::new();
    for (role, content) in messages {
        rendered.push_str("<|");
        rendered.push_str(role);
        rendered.push_str("|>\n");
        rendered.push_str(content);
        rendered.push('\n');
    }
    rendered
}

/// The prefix-cache key of every full block of the prompt: block `k`'s hash covers the bytes
/// of blocks `0..=k` (it chains its parent's hash, as vLLM's block hashes do), so equal hashes
/// mean equal prefixes.
pub fn block_hashes(prompt: &[u8], block_size: u32) -> Vec<u64> {
    let block_bytes = block_size as usize * BYTES_PER_TOKEN;
    if block_bytes == 0 {
        return Vec::new();
    }
    let mut parent = 0u64;
    prompt
        .chunks_exact(block_bytes)
        .map(|chunk| {
            let mut hasher = DefaultHasher::new();
            parent.hash(&mut hasher);
            chunk.hash(&mut hasher);
            parent = hasher.finish();
            parent
        })
        .collect()
}

/// The text of output token `index` (0-based): 4 bytes of the cycled [`FILLER`].
pub fn filler_token(index: u32) -> &'static str {
    const TOKENS: usize = FILLER.len() / BYTES_PER_TOKEN;
    let start = (index as usize % TOKENS) * BYTES_PER_TOKEN;
    &FILLER[start..start + BYTES_PER_TOKEN]
}

/// The text of the first `tokens` output tokens.
pub fn filler_text(tokens: u32) -> String {
    let mut text = String::with_capacity(tokens as usize * BYTES_PER_TOKEN);
    for i in 0..tokens {
        text.push_str(filler_token(i));
    }
    text
}

/// The token id of a piece of up to 4 bytes of text: its bytes, little-endian, zero-padded —
/// the inverse of [`token_ids_to_bytes`], so `/tokenize`, `/detokenize`, token-id prompts
/// and `stop_token_ids` all agree.
pub fn token_id(piece: &[u8]) -> u32 {
    let mut bytes = [0u8; BYTES_PER_TOKEN];
    let n = piece.len().min(BYTES_PER_TOKEN);
    bytes[..n].copy_from_slice(&piece[..n]);
    u32::from_le_bytes(bytes)
}

/// The ids of `text`'s tokens (4-byte pieces).
pub fn text_to_ids(text: &str) -> Vec<u32> {
    text.as_bytes()
        .chunks(BYTES_PER_TOKEN)
        .map(token_id)
        .collect()
}

/// The text of token ids: their bytes without the zero padding, invalid UTF-8 replaced.
pub fn ids_to_text(ids: &[u32]) -> String {
    let bytes: Vec<u8> = token_ids_to_bytes(ids)
        .into_iter()
        .filter(|b| *b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A stable hash of a prompt, used to pick its natural output length deterministically.
pub fn prompt_fingerprint(prompt: &[u8], seed: u64) -> u64 {
    let mut hasher = DefaultHasher::new();
    seed.hash(&mut hasher);
    prompt.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_is_whole_tokens_and_recounts_to_itself() {
        assert_eq!(FILLER.len() % BYTES_PER_TOKEN, 0);
        assert!(FILLER.is_ascii());
        for n in [1, 12, 13, 14, 100] {
            assert_eq!(count(&filler_text(n)), n);
        }
        assert_eq!(filler_token(0), "This");
        assert_eq!(filler_token(13), "This");
    }

    #[test]
    fn token_ids_round_trip_through_text() {
        let text = "Hello, simulated world";
        let ids = text_to_ids(text);
        assert_eq!(ids.len() as u32, count(text));
        assert_eq!(ids_to_text(&ids), text);
        assert_eq!(token_id(filler_token(0).as_bytes()), text_to_ids("This")[0]);
    }

    #[test]
    fn counting_rounds_up() {
        assert_eq!(count(""), 0);
        assert_eq!(count("a"), 1);
        assert_eq!(count("abcd"), 1);
        assert_eq!(count("abcde"), 2);
    }

    #[test]
    fn shared_prefixes_share_block_hashes() {
        let system = "You are a helpful assistant. ".repeat(10);
        let a = render_chat([("system", system.as_str()), ("user", "What is 2+2?")]);
        let b = render_chat([("system", system.as_str()), ("user", "Name a colour.")]);
        let (ha, hb) = (block_hashes(a.as_bytes(), 4), block_hashes(b.as_bytes(), 4));
        // The system prompt spans several 16-byte blocks; they agree until the user turn.
        let shared = ha.iter().zip(&hb).take_while(|(x, y)| x == y).count();
        let common_bytes = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        assert_eq!(shared, common_bytes / 16);
        assert!(shared >= 10);
        // Only full blocks are hashed.
        assert_eq!(ha.len(), a.len() / 16);
    }
}
