//! Event sinks for tests and simple deployments: one that counts, one that collects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use chitty_core::{CacheStatus, Event, EventSink, RequestEvent, Result};

/// Totals kept by [`CountingSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventCounts {
    /// Finished requests.
    pub requests: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Cache hits.
    pub cache_hits: u64,
    /// Cache misses.
    pub cache_misses: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Nano-USD charged.
    pub cost_nano_usd: u64,
    /// Failed upstream attempts.
    pub upstream_failures: u64,
    /// Circuits opened.
    pub circuits_opened: u64,
    /// Requests whose reported usage cost more than their reservation.
    pub budget_excesses: u64,
    /// Nano-USD reported above reservations and not charged.
    pub budget_excess_nano_usd: u64,
}

/// Counts events with atomic counters; never blocks, never refuses.
#[derive(Debug, Default)]
pub struct CountingSink {
    requests: AtomicU64,
    errors: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cost: AtomicU64,
    upstream_failures: AtomicU64,
    circuits_opened: AtomicU64,
    budget_excesses: AtomicU64,
    budget_excess: AtomicU64,
}

impl CountingSink {
    /// A sink with every counter at zero.
    pub fn new() -> CountingSink {
        CountingSink::default()
    }

    /// The totals so far.
    pub fn counts(&self) -> EventCounts {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EventCounts {
            requests: r(&self.requests),
            errors: r(&self.errors),
            cache_hits: r(&self.cache_hits),
            cache_misses: r(&self.cache_misses),
            prompt_tokens: r(&self.prompt_tokens),
            completion_tokens: r(&self.completion_tokens),
            cost_nano_usd: r(&self.cost),
            upstream_failures: r(&self.upstream_failures),
            circuits_opened: r(&self.circuits_opened),
            budget_excesses: r(&self.budget_excesses),
            budget_excess_nano_usd: r(&self.budget_excess),
        }
    }
}

#[async_trait]
impl EventSink for CountingSink {
    async fn record(&self, event: Event) -> Result<()> {
        let add = |a: &AtomicU64, v: u64| {
            a.fetch_add(v, Ordering::Relaxed);
        };
        match event {
            Event::Request(r) => {
                add(&self.requests, 1);
                add(&self.errors, u64::from(r.status >= 400));
                add(&self.cache_hits, u64::from(r.cache.is_hit()));
                add(&self.cache_misses, u64::from(r.cache == CacheStatus::Miss));
                add(&self.prompt_tokens, r.prompt_tokens);
                add(&self.completion_tokens, r.completion_tokens);
                add(&self.cost, r.cost.0);
            }
            Event::UpstreamFailure { .. } => add(&self.upstream_failures, 1),
            Event::CircuitOpened { .. } => add(&self.circuits_opened, 1),
            Event::BudgetExcess { reserved, reported, .. } => {
                add(&self.budget_excesses, 1);
                add(&self.budget_excess, reported.saturating_sub(reserved).0);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Keeps every event in order, for tests.
#[derive(Debug, Default)]
pub struct CollectingSink {
    events: Mutex<Vec<Event>>,
}

impl CollectingSink {
    /// An empty sink.
    pub fn new() -> CollectingSink {
        CollectingSink::default()
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A copy of the request events so far (one per answered or refused request), oldest first.
    pub fn requests(&self) -> Vec<RequestEvent> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events
            .iter()
            .filter_map(|event| match event {
                Event::Request(request) => Some(request.clone()),
                _ => None,
            })
            .collect()
    }

    /// Removes and returns the events so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[async_trait]
impl EventSink for CollectingSink {
    async fn record(&self, event: Event) -> Result<()> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).push(event);
        Ok(())
    }
}
