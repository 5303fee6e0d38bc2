//! Synthetic prompt text of a requested token length.
//!
//! A prompt of N tokens is N common three-letter English words separated by spaces: each is one
//! token for BPE tokenisers (Llama, GPT) and exactly four bytes with its space, so servers that
//! count tokens by words or by bytes / 4 (OpenAI's rule of thumb, and the simulator's) both see
//! close to N. The first word is the request's sequence
//! number, so prompts do not share a prefix and a server's prefix cache is not flattered.
//! Text is never logged or put in telemetry.

/// Three-letter words, each a single token in common BPE vocabularies.
const WORDS: &[&str] = &[
    "the", "cat", "sat", "and", "saw", "one", "red", "fox", "run", "old", "oak", "sun", "all",
    "can", "see", "its", "big", "day", "new", "way", "for", "you", "out", "now",
];

/// Pre-built filler so each request only copies a prefix of it.
#[derive(Debug)]
pub struct PromptText {
    text: String,
    /// Byte offset just past word `i` of `text`.
    word_ends: Vec<usize>,
}

/// Longer prompts than this are built word by word instead of being pre-built (memory stays
/// small for a typo such as `--prompt-tokens 100000000`).
const MAX_PREBUILT_WORDS: u64 = 1 << 17;

impl PromptText {
    /// Pre-builds filler for prompts of up to `max_tokens` tokens.
    pub fn new(max_tokens: u64) -> Self {
        let words = max_tokens.min(MAX_PREBUILT_WORDS) as usize;
        let mut text = String::with_capacity(words * 4);
        let mut word_ends = Vec::with_capacity(words);
        for i in 0..words {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(WORDS[i % WORDS.len()]);
            word_ends.push(text.len());
        }
        Self { text, word_ends }
    }

    /// A prompt of `tokens` words (at least 1), starting with `sequence`.
    pub fn build(&self, tokens: u64, sequence: u64) -> String {
        let filler_words = tokens.saturating_sub(1) as usize;
        let mut prompt = String::with_capacity(24 + filler_words * 4);
        prompt.push_str(&sequence.to_string());
        if filler_words == 0 {
            return prompt;
        }
        prompt.push(' ');
        match self.word_ends.get(filler_words - 1) {
            Some(&end) => prompt.push_str(&self.text[..end]),
            None => {
                for i in 0..filler_words {
                    if i > 0 {
                        prompt.push(' ');
                    }
                    prompt.push_str(WORDS[i % WORDS.len()]);
                }
            }
        }
        prompt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_have_the_requested_number_of_words() {
        let text = PromptText::new(100);
        for tokens in [1, 2, 37, 100, 250] {
            let prompt = text.build(tokens, 42);
            assert_eq!(prompt.split(' ').count() as u64, tokens, "{tokens}");
            assert!(prompt.starts_with("42"));
        }
    }

    #[test]
    fn filler_is_four_bytes_per_token() {
        let text = PromptText::new(1000);
        let prompt = text.build(1000, 7);
        // "7" + 999 × " xyz": a byte/4 tokeniser counts 1000 tokens.
        assert_eq!(prompt.len().div_ceil(4), 1000);
    }

    #[test]
    fn prompts_differ_from_the_first_word() {
        let text = PromptText::new(10);
        assert_ne!(text.build(10, 1)[..2], text.build(10, 2)[..2]);
    }
}
