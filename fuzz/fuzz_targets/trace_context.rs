//! W3C `traceparent` / `tracestate` headers as every infermon server takes them from a caller
//! (`infermon_instrument::propagation::extract_context`: the simulator, the gateway, and the
//! instrumented examples). The input up to the first newline is `traceparent`, the rest
//! `tracestate`. Must never panic; a context it accepts must survive being passed on
//! (`inject_context`, as the gateway and the load generator do) unchanged.
#![no_main]

use http::header::HeaderValue;
use http::HeaderMap;
use infermon_instrument::propagation::{
    extract_context, format_traceparent, inject_context, parse_traceparent,
};
use libfuzzer_sys::fuzz_target;
use opentelemetry::trace::TraceContextExt as _;

fuzz_target!(|data: &[u8]| {
    let (traceparent, tracestate) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let mut headers = HeaderMap::new();
    // Bytes no HTTP parser would deliver as a header value never reach the extractor.
    let Ok(value) = HeaderValue::from_bytes(traceparent) else {
        return;
    };
    headers.insert("traceparent", value);
    if let Some(Ok(value)) = tracestate.map(HeaderValue::from_bytes) {
        headers.insert("tracestate", value);
    }

    let cx = extract_context(&headers);
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    assert!(sc.is_remote());
    let canonical = format_traceparent(sc);
    let reparsed = parse_traceparent(&canonical, sc.trace_state().clone())
        .expect("the canonical form of an accepted traceparent parses");
    assert_eq!(&reparsed, sc);

    let mut forwarded = HeaderMap::new();
    inject_context(&cx, &mut forwarded);
    let again = extract_context(&forwarded);
    assert_eq!(again.span().span_context(), sc, "passed on unchanged");
});
