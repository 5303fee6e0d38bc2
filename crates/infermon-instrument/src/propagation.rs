//! W3C Trace Context (`traceparent` / `tracestate`) carried in `http::HeaderMap`s, without the
//! OpenTelemetry SDK.
//!
//! The server side extracts the caller's context and passes it to
//! [`InferenceRequest::start`](crate::request::InferenceRequest::start) (or attaches it around
//! the creation of its own request span, see `docs/instrumenting.md`) so the request span joins
//! the caller's trace; clients inject their span's context into outgoing requests.
//!
//! These helpers always speak W3C Trace Context (version `00`, the Trace Context Level 1
//! format), whatever global propagator is installed, so a load generator and an engine built
//! from this crate agree without further setup.

use std::str::FromStr as _;

use http::header::HeaderValue;
use http::HeaderMap;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::Context;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The remote parent carried by `headers`, as a context to start a server span under.
///
/// Missing or malformed headers yield a context without a span (the request starts a new trace);
/// bad input never fails the request.
pub fn extract_context(headers: &HeaderMap) -> Context {
    let Some(sc) = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|tp| {
            let state = headers
                .get(TRACESTATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| TraceState::from_str(s).ok())
                .unwrap_or_default();
            parse_traceparent(tp, state)
        })
    else {
        return Context::new();
    };
    Context::new().with_remote_span_context(sc)
}

/// Writes `cx`'s span context into `headers` as `traceparent` (and `tracestate` when non-empty).
/// A context without a valid span writes nothing.
pub fn inject_context(cx: &Context, headers: &mut HeaderMap) {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&format_traceparent(sc)) {
        headers.insert(TRACEPARENT, v);
    }
    let state = sc.trace_state().header();
    if !state.is_empty() {
        // A trace state that is not a valid header value is dropped rather than sent corrupted.
        if let Ok(v) = HeaderValue::from_str(&state) {
            headers.insert(TRACESTATE, v);
        }
    }
}

/// `00-{trace id}-{span id}-{flags}` for a valid span context.
pub fn format_traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// Parses a `traceparent` value (lowercase hex, version `00`, or a later version's
/// `00`-compatible prefix) into a remote span context; `None` if it is malformed or all-zero.
pub fn parse_traceparent(value: &str, state: TraceState) -> Option<SpanContext> {
    let value = value.trim();
    let parts: Vec<&str> = value.splitn(5, '-').collect();
    let [version, trace_id, span_id, flags, rest @ ..] = parts.as_slice() else {
        return None;
    };
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || *version == "ff" || !lower_hex(trace_id, 32) {
        return None;
    }
    if !lower_hex(span_id, 16) || !lower_hex(flags, 2) {
        return None;
    }
    // Version 00 has exactly four fields; later versions may append more.
    if *version == "00" && !rest.is_empty() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        state,
    );
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote_context() -> Context {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "x")]).unwrap(),
        );
        Context::new().with_remote_span_context(sc)
    }

    #[test]
    fn inject_then_extract_round_trips_the_span_context() {
        let cx = remote_context();
        let mut headers = HeaderMap::new();
        inject_context(&cx, &mut headers);
        assert_eq!(
            headers[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(headers[TRACESTATE], "vendor=x");
        let back = extract_context(&headers);
        let sc = back.span().span_context().clone();
        assert_eq!(sc, cx.span().span_context().clone());
        assert!(sc.is_remote());
        assert_eq!(sc.trace_state().get("vendor"), Some("x"));
    }

    #[test]
    fn malformed_traceparent_yields_no_parent() {
        for bad in [
            "00-zz-not-a-trace",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(TRACEPARENT, HeaderValue::from_static(bad));
            assert!(
                !extract_context(&headers).span().span_context().is_valid(),
                "{bad}"
            );
        }
        assert!(!extract_context(&HeaderMap::new())
            .span()
            .span_context()
            .is_valid());
    }

    #[test]
    fn a_later_version_with_extra_fields_is_read_as_version_00() {
        let sc = parse_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever",
            TraceState::default(),
        )
        .unwrap();
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
    }

    #[test]
    fn context_without_a_span_injects_nothing() {
        let mut headers = HeaderMap::new();
        inject_context(&Context::new(), &mut headers);
        assert!(headers.is_empty());
    }
}
