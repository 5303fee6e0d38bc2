//! The relay's intake on arbitrary bytes: decode as an OTLP `ExportTraceServiceRequest` (what
//! both receivers do), then expand. Must never panic; every decoded span must come out again,
//! and every rebuilt child must lie inside its parent.
#![no_main]

use infermon_relay::expand::expand_request;
use infermon_relay::ModelNames;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fn spans(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut request) = ExportTraceServiceRequest::decode(data) else {
        return;
    };
    let before = spans(&request);
    let report = expand_request(&mut request, &ModelNames::new("m"), "chat");
    assert_eq!(report.received as usize, before);
    assert!(spans(&request) >= before);
});
