//! W3C trace context in message headers: with the `opentelemetry` feature, a message published
//! inside a traced span carries that span's `traceparent` (and `tracestate`), so consumers
//! continue the trace.

/// The W3C header naming the publishing span.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The W3C header carrying vendor trace state.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The trace-context headers of the current span; empty without the `opentelemetry` feature,
/// without an OpenTelemetry layer, or outside a sampled-or-not valid span.
pub(crate) fn current() -> Vec<(String, String)> {
    #[cfg(feature = "opentelemetry")]
    {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;

        let context = tracing::Span::current().context();
        let span = context.span();
        let span_context = span.span_context();
        if !span_context.is_valid() {
            return Vec::new();
        }
        let mut headers = vec![(
            TRACEPARENT_HEADER.to_owned(),
            format!(
                "00-{}-{}-{:02x}",
                span_context.trace_id(),
                span_context.span_id(),
                span_context.trace_flags().to_u8()
            ),
        )];
        let state = span_context.trace_state().header();
        if !state.is_empty() {
            headers.push((TRACESTATE_HEADER.to_owned(), state));
        }
        headers
    }
    #[cfg(not(feature = "opentelemetry"))]
    Vec::new()
}

/// Adds the trace headers unless the message already names a trace of its own.
pub(crate) fn add_to(headers: &mut Vec<(String, String)>, trace: &[(String, String)]) {
    if !trace.is_empty() && !headers.iter().any(|(name, _)| name == TRACEPARENT_HEADER) {
        headers.extend(trace.iter().cloned());
    }
}
