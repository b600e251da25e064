//! The [`EventSink`] conformance suite.

use std::sync::Arc;
use std::time::Duration;

use chitty_core::{CacheStatus, Endpoint, Event, EventSink, NanoUsd, RequestEvent, Timestamp};

/// One event of each kind, with realistic values.
pub fn sample_events() -> Vec<Event> {
    vec![
        Event::Request(RequestEvent {
            at: Timestamp(1_700_000_000_000),
            request_id: "req-1".into(),
            tenant: "acme".into(),
            key_id: None,
            model: "chitty-mock".into(),
            endpoint: Endpoint::ChatCompletions,
            provider: Some("mock".into()),
            cache: CacheStatus::Miss,
            status: 200,
            latency: Duration::from_millis(12),
            prompt_tokens: 42,
            completion_tokens: 17,
            cost: NanoUsd(1_234),
            stream: false,
            error_code: None,
            route_index: Some(0),
            time_to_first_token: None,
            overhead: Duration::from_micros(90),
            attempts: 1,
            continuations: 0,
            router: None,
        }),
        Event::UpstreamFailure { provider: "mock".into(), model: "chitty-mock".into(), status: 502 },
        Event::CircuitOpened { provider: "mock".into() },
        Event::BudgetExcess {
            tenant: "acme".into(),
            model: "chitty-mock".into(),
            provider: "mock".into(),
            reserved: NanoUsd(1_000),
            reported: NanoUsd(1_500),
        },
    ]
}

/// The sink accepts one event of each kind.
pub async fn accepts_every_kind(sink: &dyn EventSink) {
    for e in sample_events() {
        sink.record(e.clone()).await.unwrap_or_else(|err| panic!("sink refused {e:?}: {err}"));
    }
}

/// `tasks` concurrent writers of `per_task` events each all succeed (sinks sized for the load must not refuse).
pub async fn concurrent_writers(sink: Arc<dyn EventSink>, tasks: usize, per_task: usize) {
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let sink = sink.clone();
        handles.push(tokio::spawn(async move {
            for e in sample_events().into_iter().cycle().take(per_task) {
                sink.record(e).await.expect("record");
            }
        }));
    }
    for h in handles {
        h.await.expect("writer panicked");
    }
}
