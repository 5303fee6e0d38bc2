//! An OpenAI request body as the simulator's `/v1/chat/completions` and `/v1/completions`
//! handlers read it: JSON, vLLM's validation, then each choice's output plan (stop strings,
//! `response_format` schemas, forced tool calls), everything but the engine
//! (`infermon_sim::check_request`). The first byte picks the endpoint; the rest is the body.
//! Must never panic, hang or blow up memory: a bad body is a 400, an accepted one has a choice.
#![no_main]

use std::sync::OnceLock;

use infermon_sim::{check_request, SimConfig, SimHandle, SimTelemetry, Simulator};
use libfuzzer_sys::fuzz_target;

/// One simulator for the whole run, on a runtime that is never driven: requests are only
/// planned, never submitted, so the engine task never needs to run.
fn sim() -> &'static SimHandle {
    static SIM: OnceLock<(tokio::runtime::Runtime, SimHandle)> = OnceLock::new();
    &SIM.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a Tokio runtime");
        let sim = {
            let _entered = runtime.enter();
            Simulator::start(SimConfig::default(), SimTelemetry::disabled())
                .expect("the default simulator config is valid")
        };
        (runtime, sim)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let chat = selector & 1 == 0;
    if let Ok(choices) = check_request(sim(), chat, body) {
        assert!(choices >= 1, "an accepted request has at least one choice");
    }
});
