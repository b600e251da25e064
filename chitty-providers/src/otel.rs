//! OpenTelemetry export of the gateway's spans (feature `opentelemetry-otlp`): OTLP over HTTP/protobuf to a
//! collector, parented to each client's `traceparent`.
//!
//! [`layer`] returns a `tracing` layer to add to the host's subscriber, and an [`OtelGuard`] that flushes
//! the last spans when dropped. Once it is installed, [`TraceContextLayer`](crate::trace::TraceContextLayer)
//! (in [`server::router`](crate::server::router)) makes the client's context the parent of the
//! `chitty.http` span, the pipeline's `chitty.request` span is its child, and every upstream request carries
//! a `traceparent` with the same trace id and the gateway's span id (the span current when the request is
//! sent, `chitty.request` unless the host filters it out). The layer records `chitty_*` spans and events at
//! debug level and above and other crates' at info; a host's own filter on its other layers is unaffected.
//!
//! ```no_run
//! use chitty_providers::otel::{OtelConfig, layer};
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! # fn main() -> chitty_core::Result<()> {
//! // `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318`, `OTEL_SERVICE_NAME=gateway-eu`:
//! let (otel, guard) = match OtelConfig::from_env() {
//!     Some(config) => layer(&config).map(|(l, g)| (Some(l), Some(g)))?,
//!     None => (None, None),
//! };
//! tracing_subscriber::registry().with(otel).init();
//! // … serve; `guard` is dropped after the server stops, outside the async runtime, and flushes.
//! drop(guard);
//! # Ok(())
//! # }
//! ```

use std::str::FromStr;
use std::time::Duration;

use chitty_core::{Error, Result};
use http::header::HeaderValue;
use opentelemetry::Context;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use crate::trace::TraceParent;

/// The standard variable naming the collector's OTLP/HTTP base URL (spans go to `{it}/v1/traces`).
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard variable naming the full URL spans are sent to (wins over the base URL).
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The standard variable naming the service in the exported resource.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// The service name when neither the configuration nor `OTEL_SERVICE_NAME` gives one.
pub const DEFAULT_SERVICE_NAME: &str = "chitty-gateway";

/// Where spans go and what the exported resource is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelConfig {
    endpoint: Option<String>,
    service_name: String,
    timeout: Option<Duration>,
}

impl OtelConfig {
    /// Spans of `service_name`, sent where the standard `OTEL_EXPORTER_OTLP_*` variables say (by default
    /// `http://localhost:4318/v1/traces`).
    pub fn new(service_name: impl Into<String>) -> OtelConfig {
        OtelConfig { endpoint: None, service_name: service_name.into(), timeout: None }
    }

    /// The configuration the standard variables describe, or `None` when neither `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// nor `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (export off). The service is `OTEL_SERVICE_NAME`, else
    /// `chitty-gateway`; headers (`OTEL_EXPORTER_OTLP_HEADERS`) and the timeout are read by the exporter.
    pub fn from_env() -> Option<OtelConfig> {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        if !set(OTEL_EXPORTER_OTLP_ENDPOINT) && !set(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) {
            return None;
        }
        let service = std::env::var(OTEL_SERVICE_NAME).ok().filter(|s| !s.trim().is_empty());
        Some(OtelConfig::new(service.unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned())))
    }

    /// The collector's OTLP/HTTP base URL, such as `http://127.0.0.1:4318`: spans go to `{base}/v1/traces`.
    /// Overrides the variables.
    pub fn with_endpoint(mut self, base: impl Into<String>) -> Self {
        self.endpoint = Some(base.into());
        self
    }

    /// How long one export may take (default: `OTEL_EXPORTER_OTLP_TIMEOUT`, else 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The service name in the exported resource.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }
}

/// Keeps the exporter running; dropping it flushes the spans not yet sent and stops it. Drop it after the
/// server stopped and outside the async runtime: it waits for the last export (at most its timeout).
#[derive(Debug)]
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

impl OtelGuard {
    /// Sends every finished span now, waiting for the collector's answer.
    pub fn force_flush(&self) -> Result<()> {
        self.provider.force_flush().map_err(|e| Error::backend("OpenTelemetry export", e))
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        // Nothing to report to at exit: the exporter logs its own failures through `tracing`.
        let _flushed = self.provider.shutdown();
    }
}

/// A `tracing` layer exporting spans as `config` says, and the guard that keeps the exporter running; fails
/// on an invalid endpoint or when the exporter cannot start.
pub fn layer<S>(config: &OtelConfig) -> Result<(impl Layer<S> + Send + Sync + 'static, OtelGuard)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync + 'static,
{
    let invalid = |e: &dyn std::fmt::Display| Error::InvalidInput {
        what: "OpenTelemetry exporter".to_owned(),
        reason: e.to_string(),
    };
    let mut exporter =
        opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let Some(base) = &config.endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    if let Some(timeout) = config.timeout {
        exporter = exporter.with_timeout(timeout);
    }
    let exporter = exporter.build().map_err(|e| invalid(&e))?;
    let resource = Resource::builder().with_service_name(config.service_name.clone()).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let tracer = provider.tracer("chitty");
    let filter = Targets::new()
        .with_target("chitty_core", Level::DEBUG)
        .with_target("chitty_providers", Level::DEBUG)
        .with_target("chitty", Level::DEBUG)
        .with_default(Level::INFO);
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter);
    Ok((layer, OtelGuard { provider }))
}

/// Makes the client's context the parent of `span` (nothing when no OpenTelemetry layer records it).
pub(crate) fn set_remote_parent(span: &tracing::Span, parent: TraceParent, tracestate: Option<&HeaderValue>) {
    // An unparsable state is dropped, the parent kept (W3C Trace Context, "tracestate" parsing).
    let state = tracestate.and_then(|v| v.to_str().ok()).and_then(|s| TraceState::from_str(s).ok()).unwrap_or_default();
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id()),
        SpanId::from_bytes(parent.parent_id()),
        TraceFlags::new(parent.flags()),
        true,
        state,
    );
    // Fails only when no OpenTelemetry layer records the span: then there is no parent to set.
    let _no_otel_layer = span.set_parent(Context::new().with_remote_span_context(remote));
}

/// Writes the current span's context into `headers` when an OpenTelemetry layer records it; whether it did.
#[cfg(feature = "upstream-http")]
pub(crate) fn insert_current_span(headers: &mut http::HeaderMap) -> bool {
    use crate::trace::{TRACEPARENT, TRACESTATE};

    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return false;
    }
    let parent = TraceParent::new(
        span_context.trace_id().to_bytes(),
        span_context.span_id().to_bytes(),
        span_context.trace_flags().to_u8(),
    );
    let Some(parent) = parent else { return false };
    headers.insert(TRACEPARENT, parent.to_header());
    let state = span_context.trace_state().header();
    match HeaderValue::from_str(&state) {
        Ok(value) if !state.is_empty() => headers.insert(TRACESTATE, value),
        _ => headers.remove(TRACESTATE),
    };
    true
}
