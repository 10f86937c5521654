//! One request, one trace: the request id, the W3C trace context and the deadline of the public
//! request being served, carried (in a task-local) to every call it makes to the identity
//! service, so both processes' logs name the same request and trace, and the identity service
//! stops when the gateway's client has stopped waiting.

use std::future::Future;
use std::time::Instant;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::RngCore;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C `traceparent` header (and gRPC metadata key).
pub const TRACEPARENT: &str = "traceparent";
/// The request id header (and gRPC metadata key).
pub const REQUEST_ID: &str = "x-request-id";

/// A parsed W3C `traceparent` (version 00): trace id, parent span id, sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; ids of all zeros are invalid (W3C Trace Context §3.2).
    pub fn parse(s: &str) -> Option<TraceParent> {
        let mut parts = s.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" || flags.len() != 2 {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(parent, &mut parent_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == [0; 16] || parent_id == [0; 8] || trace.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        Some(TraceParent { trace_id, parent_id, sampled: flags & 1 == 1 })
    }

    /// A new trace, for a request that came without one (sampled: whether to record it is the
    /// exporter's decision, not a missing header's).
    pub fn fresh() -> TraceParent {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        while trace_id == [0; 16] {
            rng.fill_bytes(&mut trace_id);
        }
        while parent_id == [0; 8] {
            rng.fill_bytes(&mut parent_id);
        }
        TraceParent { trace_id, parent_id, sampled: true }
    }

    /// The same trace, under a new parent span (a call this process makes).
    pub fn child(&self) -> TraceParent {
        let mut parent_id = [0u8; 8];
        while parent_id == [0; 8] {
            rand::rng().fill_bytes(&mut parent_id);
        }
        TraceParent { parent_id, ..*self }
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// Makes `span` a child of this trace in the exported spans (when OTLP export is on; a
    /// no-op otherwise).
    pub fn adopt(&self, span: &tracing::Span) {
        let flags = if self.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let remote = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.parent_id),
            flags,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }

    /// The trace context of `span` as exported, when OTLP export is on (its trace id and its
    /// own span id as the parent of what it calls); `None` otherwise.
    pub fn of_span(span: &tracing::Span) -> Option<TraceParent> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            parent_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
        })
    }
}

/// A request's trace as it arrived: the client's `traceparent` when it sent a valid one, and a
/// fresh trace to use when it did not and no span is exported.
#[derive(Debug, Clone, Copy)]
pub struct RequestTrace {
    pub client: Option<TraceParent>,
    pub fallback: TraceParent,
}

impl RequestTrace {
    pub fn from_header(value: Option<&str>) -> RequestTrace {
        RequestTrace { client: value.and_then(TraceParent::parse), fallback: TraceParent::fresh() }
    }

    /// The trace the request belongs to, as seen from `span` (the request's span or one under
    /// it): the exported trace when OTLP export is on (which continues the client's when it
    /// sent one), else the client's, else the fresh one. Log lines and calls use this.
    pub fn effective(&self, span: &tracing::Span) -> TraceParent {
        TraceParent::of_span(span).or(self.client).unwrap_or(self.fallback)
    }

    /// The context for a call made from within `span`: the same trace under a parent id for
    /// the call (the exported span's own id when there is one).
    pub fn for_call_from(&self, span: &tracing::Span) -> TraceParent {
        match TraceParent::of_span(span) {
            Some(exported) => exported,
            None => self.client.unwrap_or(self.fallback).child(),
        }
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(self.parent_id), u8::from(self.sampled))
    }
}

/// What the request being served carries to the calls it makes.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub trace: TraceParent,
    /// When the public request times out: calls made for it must be answered by then.
    pub deadline: Instant,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// Runs `fut` with `ctx` as the current request context.
pub async fn scope<F: Future>(ctx: RequestContext, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// The request context of the running task, if it serves a request.
pub fn current() -> Option<RequestContext> {
    CURRENT.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_what_w3c_rejects() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(text).unwrap();
        assert!(tp.sampled);
        assert_eq!(tp.to_string(), text);
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.parent_id, tp.parent_id);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        let fresh = TraceParent::fresh();
        assert_eq!(TraceParent::parse(&fresh.to_string()), Some(fresh));
    }
}
