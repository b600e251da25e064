//! The [`EventSink`] trait and the events the gateway and the webhook intake emit.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::money::NanoUsd;
use crate::time::Timestamp;

/// Whether the cache answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// Answered from the cache.
    Hit,
    /// Looked up, not found; the answer came from a provider.
    Miss,
    /// Not looked up (policy off, or `Cache-Control: no-cache` / `no-store`).
    Bypass,
    /// Answered from the semantic cache: an earlier answer to a prompt close enough to this one.
    Semantic,
}

impl CacheStatus {
    /// `hit`, `miss`, `bypass` or `semantic`, as in the `x-chitty-cache` header.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Semantic => "semantic",
        }
    }

    /// Whether the answer came from the cache (exact or semantic).
    pub fn is_hit(self) -> bool {
        matches!(self, CacheStatus::Hit | CacheStatus::Semantic)
    }
}

/// Which endpoint served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/completions`.
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
}

impl Endpoint {
    /// The path, as used in cache keys and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }
}

/// One finished gateway request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestEvent {
    /// When it finished.
    pub at: Timestamp,
    /// The request's correlation identifier (`x-request-id`).
    pub request_id: String,
    /// Tenant identifier.
    pub tenant: String,
    /// The access-store key used (`key_…`), when the caller used one; never the secret.
    pub key_id: Option<String>,
    /// Public model name.
    pub model: String,
    /// Endpoint.
    pub endpoint: Endpoint,
    /// Provider that answered, if any did.
    pub provider: Option<String>,
    /// Cache outcome.
    pub cache: CacheStatus,
    /// HTTP status returned to the client.
    pub status: u16,
    /// Time spent in the gateway and upstream.
    pub latency: Duration,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost charged to the tenant.
    pub cost: NanoUsd,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// The error's OpenAI `code` when the request failed with one: `insufficient_quota` for a budget refusal,
    /// `rate_limit_exceeded` for a rate limit (both are 429s), `model_not_found`, ….
    pub error_code: Option<&'static str>,
    /// Which of the model's routes answered, when one did: 0 is the primary, higher is a fallback.
    pub route_index: Option<usize>,
    /// For a stream that reached the client: time from the request's arrival to its first chunk (for a stream
    /// replayed from the cache, the time to the replay). `None` for whole answers and streams that failed first.
    pub time_to_first_token: Option<Duration>,
    /// Time spent in the gateway itself: [`RequestEvent::latency`] minus the time spent waiting on the upstream
    /// (every attempt, retry backoff included). For streams it covers the time to the first chunk only, after
    /// which the upstream and the client set the pace. A request that never reached an upstream (a cache hit, a
    /// refusal) is all overhead.
    pub overhead: Duration,
    /// Upstream attempts the request made: failed ones, fallbacks and stream continuations included (0 for a
    /// cache hit or a request refused before routing).
    pub attempts: u32,
    /// Times a broken stream was continued on another attempt ([`Event::StreamContinuation`]).
    pub continuations: u32,
    /// When the request named a router (`[[routers]]`): its name and why it chose [`RequestEvent::model`]
    /// (`rule:long-context`, `knn:smalltalk`, `default+escalated:refusal`), as in `x-chitty-router`.
    pub router: Option<RouterNote>,
}

/// A router's part in a request, for its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterNote {
    /// The router's public name (what the client asked for).
    pub name: std::sync::Arc<str>,
    /// The decision's reason, as in `x-chitty-router`.
    pub reason: std::sync::Arc<str>,
}

/// A circuit breaker's state, as reported in [`Event::CircuitChanged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Traffic flows.
    Closed,
    /// One probe is let through to see whether the route recovered.
    HalfOpen,
    /// The route is skipped until the breaker lets a probe through.
    Open,
}

impl CircuitState {
    /// `closed`, `half_open` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Open => "open",
        }
    }

    /// 0 closed, 1 half-open, 2 open: the value of the `chitty_circuit_state` gauge (higher is worse).
    pub fn severity(self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

/// Something the gateway did, for metrics and logs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A gateway request finished.
    Request(RequestEvent),
    /// An upstream attempt failed and the router moved on (retry or fallback).
    UpstreamFailure {
        /// Provider name.
        provider: String,
        /// Public model name.
        model: String,
        /// The error's HTTP status mapping.
        status: u16,
    },
    /// A circuit breaker opened for a route (also reported, with the route's model, as
    /// [`Event::CircuitChanged`]).
    CircuitOpened {
        /// Provider name.
        provider: String,
    },
    /// A route's circuit breaker changed state: opened, let a probe through (half-open), or closed again.
    CircuitChanged {
        /// Provider name.
        provider: String,
        /// The route's upstream model name (from the configuration).
        model: String,
        /// The new state.
        state: CircuitState,
    },
    /// A request left one route of its model for the next: every attempt on the first failed with an error a
    /// retry could fix, or its circuit was open. Routes are named `provider/upstream-model`, as configured.
    Fallback {
        /// The public model name requested.
        model: String,
        /// The route left, as `provider/upstream-model`.
        from_model: String,
        /// The route tried next, as `provider/upstream-model`.
        to_model: String,
    },
    /// After a failed attempt, whether the route was tried again: `outcome` is `retry` (it was, after a
    /// jittered wait), `retry_budget_exhausted` (the deployment's retry budget refused; the request moved on to
    /// the next route) or `deadline_exceeded` (the wait would end past the request's deadline).
    Retry {
        /// Provider name.
        provider: String,
        /// Public model name.
        model: String,
        /// What was decided ([`crate::retry::RetryDecision::label`]).
        outcome: &'static str,
    },
    /// A stream broke after its first token and the model has `continue_streams`: `outcome` is `continued`
    /// (another attempt carries on the answer), `failed` (no deployment could continue it) or why it was
    /// refused: `tool_call` (the answer was in or had made a tool call), `choices` (`n` > 1), `unsupported`
    /// (not a chat stream), `finished` (the answer had ended), `exhausted` (the request had its continuations).
    StreamContinuation {
        /// Public model name.
        model: String,
        /// The route that broke, as `provider/upstream-model`.
        from_route: String,
        /// The route that continued, when one did.
        to_route: Option<String>,
        /// What happened.
        outcome: &'static str,
    },
    /// An upstream reported usage costing more than the request's reservation. The tenant was charged the
    /// reservation (spend never passes a limit); the rest was not billed to anyone.
    BudgetExcess {
        /// Tenant identifier.
        tenant: String,
        /// Public model name.
        model: String,
        /// Provider that answered.
        provider: String,
        /// What the request had reserved, and was charged.
        reserved: NanoUsd,
        /// What the reported usage cost.
        reported: NanoUsd,
    },
}

/// Where events go: metrics, logs, queues.
///
/// Contract: `record` returns promptly: an implementation buffers, or fails fast with an error when it
/// cannot take more. It never drops an event silently: an event is
/// either accepted (and then delivered, or counted as lost in the sink's own metrics) or refused with an
/// error. Sinks that only care about some events accept and ignore the others.
#[async_trait]
pub trait EventSink: Send + Sync + Debug + 'static {
    /// Records one event.
    async fn record(&self, event: Event) -> Result<()>;
}

/// A sink that accepts every event and keeps none: the default when nothing is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardSink;

#[async_trait]
impl EventSink for DiscardSink {
    async fn record(&self, _event: Event) -> Result<()> {
        Ok(())
    }
}

/// Sends every event to each of several sinks, in order (metrics and a request log, say); the first refusal
/// is returned after every sink has been offered the event.
#[derive(Debug, Clone, Default)]
pub struct FanOutSink {
    sinks: Vec<std::sync::Arc<dyn EventSink>>,
}

impl FanOutSink {
    /// A sink over `sinks`.
    pub fn new(sinks: Vec<std::sync::Arc<dyn EventSink>>) -> FanOutSink {
        FanOutSink { sinks }
    }
}

#[async_trait]
impl EventSink for FanOutSink {
    async fn record(&self, event: Event) -> Result<()> {
        let mut outcome = Ok(());
        if let Some((last, first)) = self.sinks.split_last() {
            for sink in first {
                let result = sink.record(event.clone()).await;
                outcome = outcome.and(result);
            }
            outcome = outcome.and(last.record(event).await);
        }
        outcome
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    struct Keep(Mutex<Vec<Event>>, bool);

    #[async_trait]
    impl EventSink for Keep {
        async fn record(&self, event: Event) -> Result<()> {
            self.0.lock().unwrap().push(event);
            if self.1 { Err(crate::Error::backend("test sink", "full")) } else { Ok(()) }
        }
    }

    #[test]
    fn fan_out_offers_every_sink_and_reports_a_refusal() {
        let (refusing, keeping) =
            (std::sync::Arc::new(Keep(Mutex::default(), true)), std::sync::Arc::new(Keep::default()));
        let fan = FanOutSink::new(vec![refusing.clone(), keeping.clone()]);
        let event = Event::CircuitOpened { provider: "p".into() };
        let result = futures::executor::block_on(fan.record(event.clone()));
        assert!(result.is_err(), "the refusal is reported");
        assert_eq!(*keeping.0.lock().unwrap(), vec![event.clone()], "the next sink still got the event");
        assert_eq!(*refusing.0.lock().unwrap(), vec![event]);
        assert!(
            futures::executor::block_on(FanOutSink::default().record(Event::CircuitOpened { provider: "p".into() }))
                .is_ok()
        );
    }
}
