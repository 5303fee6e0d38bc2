//! The requests the tests describe. The lifecycle benchmark includes this file too, so that
//! what it measures is the request the tests check field by field.

use infermon::contract::value;
use infermon::request::RequestParams;

/// A streamed chat with every sampling parameter and a response id: the request whose
/// attributes the lifecycle tests compare one by one.
pub fn full_chat(model: &str) -> RequestParams<'_> {
    RequestParams {
        operation: value::OPERATION_CHAT,
        model,
        provider: value::PROVIDER_SIMULATOR,
        max_tokens: Some(128),
        temperature: Some(0.7),
        top_p: Some(0.9),
        stream: true,
        input_tokens: 100,
        response_id: Some("chatcmpl-1"),
    }
}

/// A chat with nothing but its prompt size: for tests about what happens around a request
/// (export, logs, outages) rather than its own attributes.
pub fn plain_chat(model: &str, input_tokens: u64) -> RequestParams<'_> {
    RequestParams {
        operation: value::OPERATION_CHAT,
        model,
        provider: value::PROVIDER_SIMULATOR,
        max_tokens: None,
        temperature: None,
        top_p: None,
        stream: false,
        input_tokens,
        response_id: None,
    }
}
