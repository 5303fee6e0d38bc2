//! A client's request body as the gateway reads it before routing
//! (`infermon_gateway::proxy::read_request`): a JSON object with a string `model`, a streaming
//! request made to ask for usage. Must never panic; what it accepts must be what it forwards.
#![no_main]

use infermon_gateway::proxy::read_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = read_request(data) else {
        return;
    };
    assert_eq!(request.json["model"].as_str(), Some(request.model.as_str()));
    assert_eq!(
        request.json["stream"].as_bool().unwrap_or(false),
        request.streaming
    );
    if request.streaming {
        // The gateway's token accounting relies on the upstream's final usage chunk.
        assert_eq!(
            request.json["stream_options"]["include_usage"].as_bool(),
            Some(true)
        );
    }
    if request.changed {
        // What goes upstream instead of the client's bytes must itself be a valid body.
        let bytes = serde_json::to_vec(&request.json).expect("a JSON value serialises");
        let again = read_request(&bytes).expect("the rewritten body is accepted again");
        assert!(!again.changed, "the rewrite is idempotent");
    }
});
