//! What one choice "says": its output tokens' texts, how many there are, and why it ends.
//!
//! The simulator is no model, but the shape of its output follows the request as vLLM's would:
//! - plain text is the cycled filler ([`tokens::FILLER`]);
//! - `response_format` `json_object` / `json_schema` gives a JSON document (of the schema's
//!   shape), as vLLM's structured outputs would; the document's end is the natural end;
//! - a forced tool call (`tool_choice` `"required"` or a named function) gives the function's
//!   arguments as JSON of its `parameters` schema;
//! - `stop` strings cut the text before the first one found (`finish_reason` `stop`, the string
//!   not included, as vLLM's default `include_stop_str_in_output = false`), and
//!   `stop_token_ids` end the output at the first such token (its text not included);
//! - `max_tokens` (or the context) cuts any of them (`length`; a JSON document may then be
//!   cut short, as vLLM's would).
//!
//! Token texts are 4-byte pieces (see [`tokens`]), so counts match the prompt approximation.

use serde_json::{Map, Value};

use crate::engine::FinishReason;
use crate::tokens;

/// The output of one choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub tokens: Tokens,
    /// Output tokens the engine generates.
    pub output_tokens: u32,
    pub finish_reason: FinishReason,
    /// vLLM's `stop_reason`: the stop string or token id that ended the output.
    pub stop_reason: Option<Value>,
}

/// The texts of a choice's output tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum Tokens {
    /// The cycled filler (needs no JSON escaping: the fast path).
    Filler,
    /// Explicit pieces (JSON, or text cut at a stop string); tokens past the end are empty.
    Pieces(Vec<String>),
}

impl Script {
    /// Text of output token `index`.
    pub fn token(&self, index: u32) -> &str {
        match &self.tokens {
            Tokens::Filler => tokens::filler_token(index),
            Tokens::Pieces(pieces) => pieces.get(index as usize).map_or("", String::as_str),
        }
    }

    /// Text of the first `n` output tokens.
    pub fn text(&self, n: u32) -> String {
        match &self.tokens {
            Tokens::Filler => tokens::filler_text(n),
            Tokens::Pieces(pieces) => pieces.iter().take(n as usize).map(String::as_str).collect(),
        }
    }

    pub fn needs_escaping(&self) -> bool {
        matches!(self.tokens, Tokens::Pieces(_))
    }
}

/// How the output ends, before stop conditions.
pub struct Ending<'a> {
    /// Most output tokens (`max_tokens`, or what the context leaves).
    pub limit: u32,
    /// Tokens until the simulated model "emits EOS" (for filler text).
    pub natural: u32,
    pub stop: &'a [String],
    pub stop_token_ids: &'a [u32],
}

/// Plain filler text.
pub fn filler(ending: &Ending<'_>) -> Script {
    stop_conditions(Tokens::Filler, ending.natural, ending)
}

/// A JSON document (structured output or tool arguments); its end is the natural end.
pub fn json(document: &str, ending: &Ending<'_>) -> Script {
    let pieces = split_pieces(document);
    let natural = pieces.len().max(1) as u32;
    stop_conditions(Tokens::Pieces(pieces), natural, ending)
}

/// Applies `max_tokens`, then stop token ids and stop strings, to a candidate output.
fn stop_conditions(candidate: Tokens, natural: u32, ending: &Ending<'_>) -> Script {
    let (mut count, mut finish) = if natural < ending.limit {
        (natural, FinishReason::Stop)
    } else {
        (ending.limit, FinishReason::Length)
    };
    let mut script = Script {
        tokens: candidate,
        output_tokens: count,
        finish_reason: finish,
        stop_reason: None,
    };
    if ending.stop.is_empty() && ending.stop_token_ids.is_empty() {
        return script;
    }
    // The first stop token among the output: generation ends there, its text not shown.
    let mut visible_tokens = count;
    if !ending.stop_token_ids.is_empty() {
        if let Some(i) = (0..count).find(|&i| {
            ending
                .stop_token_ids
                .contains(&tokens::token_id(script.token(i).as_bytes()))
        }) {
            let id = tokens::token_id(script.token(i).as_bytes());
            count = i + 1;
            visible_tokens = i;
            finish = FinishReason::Stop;
            script.stop_reason = Some(Value::from(id));
        }
    }
    let text = script.text(visible_tokens);
    let first_stop = ending
        .stop
        .iter()
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
        .min_by_key(|(at, s)| (*at + s.len(), *at));
    let visible = match first_stop {
        Some((at, s)) => {
            // Generation ends with the token that completes the stop string.
            count = (at + s.len()).div_ceil(tokens::BYTES_PER_TOKEN) as u32;
            finish = FinishReason::Stop;
            script.stop_reason = Some(Value::from(s.as_str()));
            &text[..at]
        }
        None => &text[..],
    };
    if script.stop_reason.is_some() {
        let mut pieces = split_pieces(visible);
        pieces.resize(count as usize, String::new());
        script.tokens = Tokens::Pieces(pieces);
    }
    script.output_tokens = count.max(1);
    script.finish_reason = finish;
    script
}

/// Splits text into 4-byte pieces, never inside a UTF-8 character.
fn split_pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::with_capacity(text.len() / tokens::BYTES_PER_TOKEN + 1);
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + tokens::BYTES_PER_TOKEN).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        pieces.push(text[start..end].to_owned());
        start = end;
    }
    pieces
}

/// A JSON value of `schema`'s shape (objects with every property, one array item, the first
/// `enum` / `anyOf` alternative, `$ref`s into `$defs` / `definitions`), compact, cut short at
/// [`MAX_DOCUMENT_BYTES`].
pub fn document_for_schema(schema: &Value) -> String {
    let mut budget = MAX_DOCUMENT_BYTES;
    let value = sample(schema, schema, 0, &mut budget);
    serde_json::to_string(&value).unwrap_or_else(|_| "{}".to_owned())
}

/// The `json_object` document: any object will do; this one says what it is.
pub fn json_object_document() -> String {
    r#"{"text": "This text is simulated by infermon, not by a model."}"#.to_owned()
}

/// Deepest nesting followed (vLLM rejects deeper schemas; this keeps `$ref` cycles finite).
const MAX_DEPTH: usize = 16;

/// Largest schema document, in bytes (about: each value is counted at its written size). A
/// schema is client input: `minItems` and `$ref`s multiply at every level, so without a bound
/// a 200-byte schema asks for 8^8 values and `minLength` for any length (found writing the
/// `sim_request` fuzz target, docs/reliability.md). A document this long is never sent whole
/// anyway: at 4 bytes a token, a 131 072-token context ends it at 512 KiB. Past the budget,
/// values are `null` and further properties, array items and string bytes are left out.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Takes `bytes` from `budget`; false (taking nothing) if it has fewer left.
fn spend(budget: &mut usize, bytes: usize) -> bool {
    match budget.checked_sub(bytes) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}

fn sample(schema: &Value, root: &Value, depth: usize, budget: &mut usize) -> Value {
    let Some(object) = schema.as_object() else {
        return Value::Null; // `true` or an unusable schema: anything is valid; null is simple
    };
    // Every value costs at least what `null` does.
    if depth > MAX_DEPTH || !spend(budget, 4) {
        return Value::Null;
    }
    if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix("#/")
            .map(|path| path.split('/').fold(root, |v, key| &v[key]));
        return target.map_or(Value::Null, |t| sample(t, root, depth + 1, budget));
    }
    // A copied value costs its written size (computing it is bounded by the schema's size).
    let copy = |value: &Value, budget: &mut usize| {
        let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
        if spend(budget, size) {
            value.clone()
        } else {
            Value::Null
        }
    };
    if let Some(value) = object.get("const") {
        return copy(value, budget);
    }
    if let Some(first) = object.get("enum").and_then(|e| e.get(0)) {
        return copy(first, budget);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = object.get(key).and_then(|a| a.get(0)) {
            return sample(first, root, depth + 1, budget);
        }
    }
    let kind = match object.get("type") {
        Some(Value::Array(types)) => types.first().and_then(Value::as_str).unwrap_or("null"),
        Some(Value::String(t)) => t.as_str(),
        _ if object.contains_key("properties") => "object",
        _ if object.contains_key("items") => "array",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(properties) = object.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    // `"name":` and a comma.
                    if !spend(budget, name.len() + 4) {
                        break;
                    }
                    out.insert(name.clone(), sample(property, root, depth + 1, budget));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let items = object.get("items").unwrap_or(&Value::Null);
            let min = object.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let n = min.clamp(1, 8);
            let mut out = Vec::new();
            for _ in 0..n {
                if *budget == 0 {
                    break;
                }
                out.push(sample(items, root, depth + 1, budget));
            }
            Value::Array(out)
        }
        "integer" => Value::from(object.get("minimum").and_then(Value::as_i64).unwrap_or(42)),
        "number" => Value::from(object.get("minimum").and_then(Value::as_f64).unwrap_or(0.5)),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => {
            let mut text = "simulated".to_owned();
            let min = object.get("minLength").and_then(Value::as_u64).unwrap_or(0);
            // Padded to `minLength` characters, as far as the budget goes.
            let pad = usize::try_from(min)
                .unwrap_or(usize::MAX)
                .saturating_sub(text.len())
                .min(*budget);
            *budget -= pad;
            text.extend(std::iter::repeat_n('x', pad));
            Value::String(text)
        }
    }
}

/// Synthetic log-probabilities: deterministic, negative, and ranked (the chosen token first).
pub fn logprob(index: u32, rank: u32) -> f64 {
    -0.01 - f64::from(index % 7) * 0.05 - f64::from(rank) * 0.75
}

/// The alternatives shown as `top_logprobs` of output token `index` (rank 0 is the token).
pub fn alternative(index: u32, rank: u32) -> &'static str {
    tokens::filler_token(index.wrapping_add(rank * 5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ending<'a>(limit: u32, natural: u32, stop: &'a [String], ids: &'a [u32]) -> Ending<'a> {
        Ending {
            limit,
            natural,
            stop,
            stop_token_ids: ids,
        }
    }

    #[test]
    fn stop_strings_cut_before_the_first_occurrence() {
        // Filler: "This text is simulated by infermon, not by a model. "
        let stop = vec!["simulated".to_owned(), "model".to_owned()];
        let s = filler(&ending(100, 50, &stop, &[]));
        assert_eq!(s.finish_reason, FinishReason::Stop);
        assert_eq!(s.text(s.output_tokens), "This text is ");
        // "simulated" ends at byte 22: the 6th token completes it.
        assert_eq!(s.output_tokens, 6);
        assert_eq!(s.stop_reason, Some(json!("simulated")));
    }

    #[test]
    fn stop_token_ids_end_the_output_without_their_text() {
        let id = tokens::token_id(b" sim"); // token 3 of the filler
        let s = filler(&ending(100, 50, &[], &[id]));
        assert_eq!(s.output_tokens, 4);
        assert_eq!(s.text(4), "This text is");
        assert_eq!(s.stop_reason, Some(json!(id)));
    }

    #[test]
    fn max_tokens_wins_when_no_stop_is_reached() {
        let s = filler(&ending(5, 50, &["nowhere".to_owned()], &[]));
        assert_eq!(
            (s.output_tokens, s.finish_reason),
            (5, FinishReason::Length)
        );
    }

    #[test]
    fn schema_documents_have_the_schema_shape() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"type": "string"}},
                "kind": {"enum": ["a", "b"]},
                "address": {"$ref": "#/$defs/address"}
            },
            "$defs": {"address": {"type": "object", "properties": {"city": {"type": "string"}}}}
        });
        let doc: Value = serde_json::from_str(&document_for_schema(&schema)).unwrap();
        assert!(doc["name"].is_string());
        assert_eq!(doc["age"], 0);
        assert!(doc["tags"][0].is_string());
        assert_eq!(doc["kind"], "a");
        assert!(doc["address"]["city"].is_string());
    }

    /// The schemas of the reproducers in fuzz/regressions/sim_request/: both made the request
    /// handler hang (and would have exhausted memory) before the document had a budget.
    #[test]
    fn hostile_schemas_give_a_bounded_document_quickly() {
        let nested_refs: Value = serde_json::from_str(
            r##"{"$defs":{"a":{"type":"array","minItems":8,"items":{"$ref":"#/$defs/a"}}},"$ref":"#/$defs/a"}"##,
        )
        .unwrap();
        let long_string: Value =
            serde_json::from_str(r#"{"type":"string","minLength":100000000000}"#).unwrap();
        let wide_refs: Value = serde_json::from_str(
            r##"{"$defs":{"o":{"properties":{"a":{"$ref":"#/$defs/o"},"b":{"$ref":"#/$defs/o"},"c":{"$ref":"#/$defs/o"},"d":{"$ref":"#/$defs/o"}}}},"$ref":"#/$defs/o"}"##,
        )
        .unwrap();
        for schema in [nested_refs, long_string, wide_refs] {
            let started = std::time::Instant::now();
            let doc = document_for_schema(&schema);
            assert!(
                doc.len() <= 2 * MAX_DOCUMENT_BYTES,
                "{} bytes for {schema}",
                doc.len()
            );
            assert!(
                serde_json::from_str::<Value>(&doc).is_ok(),
                "still a JSON document"
            );
            assert!(started.elapsed().as_secs() < 5, "{schema} took too long");
        }
    }

    #[test]
    fn a_long_min_length_is_honoured_within_the_budget() {
        let doc = document_for_schema(&json!({"type": "string", "minLength": 1000}));
        assert_eq!(doc.len(), 1000 + 2, "1000 characters, quoted: {doc}");
    }

    #[test]
    fn json_output_reassembles_and_counts_its_pieces() {
        let doc = r#"{"città": "ünïcödé"}"#;
        let s = json(doc, &ending(1000, 0, &[], &[]));
        assert_eq!(s.text(s.output_tokens), doc);
        assert_eq!(s.finish_reason, FinishReason::Stop);
    }
}
