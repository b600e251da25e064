//! [`TracingSink`]: one structured log line per finished request, through `tracing`.
//!
//! Each [`Event::Request`] becomes one event on target `chitty::request` with the fields `request_id`,
//! `tenant`, `model`, `endpoint`, `provider`, `status`, `cache`, `prompt_tokens`, `completion_tokens`,
//! `cost_nano_usd`, `latency_ms` and `stream` — never a key and never prompt or answer text. With
//! tracing-subscriber's JSON formatter each is one JSON line (`chitty-gateway --log-format json`). Failed
//! upstream attempts and opened circuits are logged on `chitty::upstream` at warn level.
//!
//! ```
//! use std::sync::Arc;
//! use chitty_core::{EventSink, FanOutSink};
//! use chitty_providers::request_log::TracingSink;
//!
//! // Metrics and the request log side by side: `GatewayBuilder::events(Arc::new(sinks))`.
//! let sinks = FanOutSink::new(vec![Arc::new(TracingSink) as Arc<dyn EventSink>]);
//! # let _ = sinks;
//! ```

use async_trait::async_trait;
use chitty_core::{Event, EventSink, Result};

/// Logs every finished request (and upstream trouble) as structured `tracing` events.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

#[async_trait]
impl EventSink for TracingSink {
    async fn record(&self, event: Event) -> Result<()> {
        match event {
            Event::Request(r) => {
                let latency_ms = u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX);
                let provider = r.provider.as_deref().unwrap_or("");
                macro_rules! request_line {
                    ($level:ident) => {
                        tracing::$level!(
                            target: "chitty::request",
                            request_id = %r.request_id,
                            tenant = %r.tenant,
                            model = %r.model,
                            endpoint = r.endpoint.as_str(),
                            provider,
                            status = r.status,
                            cache = r.cache.as_str(),
                            prompt_tokens = r.prompt_tokens,
                            completion_tokens = r.completion_tokens,
                            cost_nano_usd = r.cost.0,
                            latency_ms,
                            stream = r.stream,
                            "request"
                        )
                    };
                }
                if r.status >= 500 {
                    request_line!(warn);
                } else {
                    request_line!(info);
                }
            }
            Event::UpstreamFailure { provider, model, status } => {
                tracing::warn!(target: "chitty::upstream", %provider, %model, status, "upstream attempt failed");
            }
            Event::CircuitOpened { provider } => {
                tracing::warn!(target: "chitty::upstream", %provider, "circuit opened");
            }
            // Logged where it is decided (the gateway's settle step).
            _ => {}
        }
        Ok(())
    }
}
