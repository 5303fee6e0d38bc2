//! W3C Trace Context (`traceparent` / `tracestate`) carried in `http::HeaderMap`s.
//!
//! The server side extracts the caller's context and passes it to
//! [`InferenceRequest::start`](crate::request::InferenceRequest::start) so the request span joins
//! the caller's trace; clients inject their span's context into outgoing requests.
//!
//! These helpers always speak W3C Trace Context, whatever global propagator is installed, so a
//! load generator and an engine built from this crate agree without further setup.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The remote parent carried by `headers`, as a context to start a server span under.
///
/// Missing or malformed headers yield a context without a span (the request starts a new trace);
/// bad input never fails the request.
pub fn extract_context(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes `cx`'s span context into `headers` as `traceparent` (and `tracestate` when non-empty).
/// A context without a valid span writes nothing.
pub fn inject_context(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator only produces valid lowercase names and visible-ASCII values; anything
        // else is skipped rather than sent corrupted.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    const TRACEPARENT: &str = "traceparent";

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
        let back = extract_context(&headers);
        let sc = back.span().span_context().clone();
        assert_eq!(sc, cx.span().span_context().clone());
        assert!(sc.is_remote());
        assert_eq!(sc.trace_state().get("vendor"), Some("x"));
    }

    #[test]
    fn malformed_traceparent_yields_no_parent() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-zz-not-a-trace"));
        assert!(!extract_context(&headers).span().span_context().is_valid());
        assert!(!extract_context(&HeaderMap::new())
            .span()
            .span_context()
            .is_valid());
    }

    #[test]
    fn context_without_a_span_injects_nothing() {
        let mut headers = HeaderMap::new();
        inject_context(&Context::new(), &mut headers);
        assert!(headers.is_empty());
    }
}
