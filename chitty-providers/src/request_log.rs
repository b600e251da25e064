//! [`TracingSink`]: one structured log line per finished request, through `tracing`.
//!
//! Each [`Event::Request`] becomes one event on target `chitty::request` with the fields `request_id`,
//! `tenant`, `key_id` (when an access-store key was used), `model`, `endpoint`, `provider`, `route` (which of
//! the model's routes answered: 0 the primary, higher a fallback; -1 when none did), `status`, `error_code` (the
//! OpenAI error code of a failed request, empty otherwise), `cache`, `prompt_tokens`, `completion_tokens`,
//! `cost_nano_usd`, `latency_ms`, `overhead_us` (time in the gateway itself), `ttft_ms` (streams; -1 otherwise)
//! and `stream` — never a key and never prompt or answer text. With tracing-subscriber's JSON formatter each is
//! one JSON line (`chitty-gateway --log-format json`). Failed upstream attempts, fallbacks and circuit changes
//! are logged on `chitty::upstream` at warn level (a circuit closing at info).
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
use chitty_core::events::CircuitState;
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
                let overhead_us = u64::try_from(r.overhead.as_micros()).unwrap_or(u64::MAX);
                // -1 rather than an absent field keeps every line's shape the same for log queries.
                let ttft_ms = r.time_to_first_token.map_or(-1, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
                let route = r.route_index.map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX));
                let provider = r.provider.as_deref().unwrap_or("");
                let key_id = r.key_id.as_deref().unwrap_or("");
                let error_code = r.error_code.unwrap_or("");
                macro_rules! request_line {
                    ($level:ident) => {
                        tracing::$level!(
                            target: "chitty::request",
                            request_id = %r.request_id,
                            tenant = %r.tenant,
                            key_id,
                            model = %r.model,
                            endpoint = r.endpoint.as_str(),
                            provider,
                            route,
                            status = r.status,
                            error_code,
                            cache = r.cache.as_str(),
                            prompt_tokens = r.prompt_tokens,
                            completion_tokens = r.completion_tokens,
                            cost_nano_usd = r.cost.0,
                            latency_ms,
                            overhead_us,
                            ttft_ms,
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
            Event::Fallback { model, from_model, to_model } => {
                tracing::warn!(target: "chitty::upstream", %model, %from_model, %to_model, "fell back to the next route");
            }
            // Opening is logged as CircuitOpened above.
            Event::CircuitChanged { provider, model, state: CircuitState::HalfOpen } => {
                tracing::warn!(target: "chitty::upstream", %provider, %model, "circuit half-open: probing");
            }
            Event::CircuitChanged { provider, model, state: CircuitState::Closed } => {
                tracing::info!(target: "chitty::upstream", %provider, %model, "circuit closed");
            }
            // Logged where it is decided (the gateway's settle step).
            _ => {}
        }
        Ok(())
    }
}

/// Appends every event as one JSON object per line to a file, for offline analysis (cost reports, audits).
///
/// Lines are written by a thread of the sink's own, so `record` never waits on the disk; when `capacity`
/// events are waiting, `record` refuses the next with an error rather than drop it. Dropping the sink writes
/// what is queued and flushes.
///
/// ```
/// # async fn run() -> chitty_core::Result<()> {
/// use chitty_providers::request_log::JsonLinesSink;
///
/// let dir = std::env::temp_dir().join(format!("chitty-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let sink = JsonLinesSink::create(&dir.join("events.jsonl"), 10_000)?;
/// # drop(sink); std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct JsonLinesSink {
    lines: Option<std::sync::mpsc::SyncSender<String>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl JsonLinesSink {
    /// Appends to `path` (created if missing), holding at most `capacity` events not yet written.
    pub fn create(path: &std::path::Path, capacity: usize) -> Result<JsonLinesSink> {
        use std::io::Write;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| chitty_core::Error::backend("event log", e))?;
        let (lines, queued) = std::sync::mpsc::sync_channel::<String>(capacity.max(1));
        let writer = std::thread::Builder::new()
            .name("chitty-event-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Ok(line) = queued.recv() {
                    let written = out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n"));
                    // Flush when nothing else waits, so the file is current between bursts.
                    let flushed = match queued.try_recv() {
                        Ok(next) => out.write_all(next.as_bytes()).and_then(|()| out.write_all(b"\n")),
                        Err(_) => out.flush(),
                    };
                    if let Err(e) = written.and(flushed) {
                        tracing::error!(error = %e, "event log: write failed; later events are not written");
                        return;
                    }
                }
                let _ = out.flush();
            })
            .map_err(|e| chitty_core::Error::backend("event log", e))?;
        Ok(JsonLinesSink { lines: Some(lines), writer: Some(writer) })
    }
}

impl Drop for JsonLinesSink {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has written what is queued.
        drop(self.lines.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// An event as the JSON object [`JsonLinesSink`] writes (`kind` says which event it is).
pub fn event_json(event: &Event) -> serde_json::Value {
    use serde_json::json;
    match event {
        Event::Request(r) => json!({
            "kind": "request",
            "at_ms": r.at.0,
            "request_id": r.request_id,
            "tenant": r.tenant,
            "key_id": r.key_id,
            "model": r.model,
            "endpoint": r.endpoint.as_str(),
            "provider": r.provider,
            "route": r.route_index,
            "status": r.status,
            "error_code": r.error_code,
            "cache": r.cache.as_str(),
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "cost_nano_usd": r.cost.0,
            "latency_ms": u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX),
            "overhead_us": u64::try_from(r.overhead.as_micros()).unwrap_or(u64::MAX),
            "ttft_ms": r.time_to_first_token.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            "stream": r.stream,
            "router": r.router.as_ref().map(|n| &*n.name),
            "router_reason": r.router.as_ref().map(|n| &*n.reason),
            "attempts": r.attempts,
            "continuations": r.continuations,
        }),
        Event::UpstreamFailure { provider, model, status } => {
            json!({"kind": "upstream_failure", "provider": provider, "model": model, "status": status})
        }
        Event::CircuitOpened { provider } => json!({"kind": "circuit_opened", "provider": provider}),
        Event::CircuitChanged { provider, model, state } => {
            json!({"kind": "circuit_changed", "provider": provider, "model": model, "state": state.as_str()})
        }
        Event::Fallback { model, from_model, to_model } => {
            json!({"kind": "fallback", "model": model, "from_model": from_model, "to_model": to_model})
        }
        Event::BudgetExcess { tenant, model, provider, reserved, reported } => json!({
            "kind": "budget_excess", "tenant": tenant, "model": model, "provider": provider,
            "reserved_nano_usd": reserved.0, "reported_nano_usd": reported.0,
        }),
        Event::Retry { provider, model, outcome } => {
            json!({"kind": "retry", "provider": provider, "model": model, "outcome": outcome})
        }
        Event::StreamContinuation { model, from_route, to_route, outcome } => json!({
            "kind": "stream_continuation", "model": model, "from_route": from_route, "to_route": to_route,
            "outcome": outcome,
        }),
        other => json!({"kind": "other", "debug": format!("{other:?}")}),
    }
}

#[async_trait]
impl EventSink for JsonLinesSink {
    async fn record(&self, event: Event) -> Result<()> {
        let Some(lines) = &self.lines else { return Err(chitty_core::Error::backend("event log", "closed")) };
        match lines.try_send(event_json(&event).to_string()) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                Err(chitty_core::Error::backend("event log", "the writer is behind; event refused"))
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                Err(chitty_core::Error::backend("event log", "the writer stopped after a write error"))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use chitty_core::{CacheStatus, Endpoint, NanoUsd, RequestEvent, Timestamp};

    use super::*;

    fn request(id: &str) -> Event {
        Event::Request(RequestEvent {
            at: Timestamp(1_700_000_000_000),
            request_id: id.into(),
            tenant: "acme".into(),
            key_id: None,
            model: "m".into(),
            endpoint: Endpoint::ChatCompletions,
            provider: Some("p".into()),
            cache: CacheStatus::Miss,
            status: 200,
            latency: Duration::from_millis(12),
            prompt_tokens: 3,
            completion_tokens: 5,
            cost: NanoUsd(1_234),
            stream: false,
            error_code: None,
            route_index: Some(0),
            time_to_first_token: None,
            overhead: Duration::from_micros(90),
            attempts: 1,
            continuations: 0,
            router: None,
        })
    }

    #[tokio::test]
    async fn every_event_is_one_json_line_in_order() {
        let dir =
            std::env::temp_dir().join(format!("chitty-jsonl-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let sink = JsonLinesSink::create(&path, 1_000).unwrap();
        for i in 0..100 {
            sink.record(request(&format!("r{i}"))).await.unwrap();
        }
        sink.record(Event::CircuitOpened { provider: "p".into() }).await.unwrap();
        let change = Event::CircuitChanged {
            provider: "p".into(),
            model: "up".into(),
            state: chitty_core::events::CircuitState::HalfOpen,
        };
        sink.record(change).await.unwrap();
        let fallback = Event::Fallback { model: "m".into(), from_model: "p/up".into(), to_model: "q/up".into() };
        sink.record(fallback).await.unwrap();
        let Event::Request(mut refused) = request("refused") else { unreachable!() };
        (refused.status, refused.error_code, refused.route_index) = (429, Some("insufficient_quota"), None);
        refused.time_to_first_token = Some(Duration::from_millis(7));
        sink.record(Event::Request(refused)).await.unwrap();
        drop(sink);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 104);
        assert_eq!(lines[0]["request_id"], "r0");
        assert_eq!(lines[99]["request_id"], "r99");
        assert_eq!((lines[0]["cost_nano_usd"].as_u64(), lines[0]["latency_ms"].as_u64()), (Some(1_234), Some(12)));
        assert_eq!((lines[0]["overhead_us"].as_u64(), lines[0]["route"].as_u64()), (Some(90), Some(0)));
        assert!(lines[0]["error_code"].is_null() && lines[0]["ttft_ms"].is_null(), "{}", lines[0]);
        assert_eq!((lines[0]["attempts"].as_u64(), lines[0]["continuations"].as_u64()), (Some(1), Some(0)));
        assert!(lines[0]["router"].is_null(), "{}", lines[0]);
        assert_eq!(lines[100]["kind"], "circuit_opened");
        assert_eq!(
            (lines[101]["kind"].as_str(), lines[101]["state"].as_str()),
            (Some("circuit_changed"), Some("half_open"))
        );
        assert_eq!(
            (lines[102]["kind"].as_str(), lines[102]["from_model"].as_str(), lines[102]["to_model"].as_str()),
            (Some("fallback"), Some("p/up"), Some("q/up"))
        );
        let refused = &lines[103];
        assert_eq!(
            (refused["error_code"].as_str(), refused["ttft_ms"].as_u64()),
            (Some("insufficient_quota"), Some(7))
        );
        assert!(refused["route"].is_null(), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        assert!(JsonLinesSink::create(std::path::Path::new("/nonexistent-dir/events.jsonl"), 10).is_err());
    }
}
