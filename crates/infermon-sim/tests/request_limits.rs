//! A request whose choices would hold too much output text in memory is refused with a 400
//! before anything is generated (`n` × prompts × a large `response_format` document).

use infermon_sim::{check_request, SimConfig, SimTelemetry, Simulator};
use serde_json::json;

fn body(model: &str, n: u32) -> Vec<u8> {
    // A schema whose document is about 1 MiB of text: ~256 Ki output tokens per choice.
    let schema = json!({"type": "string", "minLength": 1_000_000});
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "x"}],
        "n": n,
        "response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema": schema}},
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn choices_that_would_hold_too_much_output_are_a_400() {
    let sim = Simulator::start(SimConfig::default(), SimTelemetry::disabled()).unwrap();
    let model = sim.model().to_owned();
    assert_eq!(check_request(&sim, true, &body(&model, 2)).unwrap(), 2);
    let refused = check_request(&sim, true, &body(&model, 64)).unwrap_err();
    assert_eq!(refused.status.as_u16(), 400);
    assert!(
        refused.body().to_string().contains("lower n, max_tokens"),
        "{}",
        refused.body()
    );
}
