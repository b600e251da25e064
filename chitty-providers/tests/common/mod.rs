//! Shared by the in-process gateway tests: virtual time, a replayable random source and request contexts.

// Each test binary compiles this module and uses only its own part of it.
#![allow(dead_code)]

use std::sync::Arc;

use chitty_core::gateway::{Gateway, GatewayBuilder, RequestContext};
use chitty_core::keys::CacheDirective;
use chitty_core::{ManualClock, ManualTimer, SeededRandom, Timestamp};
use chitty_providers::runtime::TokioSpawner;

/// Where the virtual clocks start: November 2023, so timestamps read like real ones.
pub(crate) const START: Timestamp = Timestamp(1_700_000_000_000);

/// The seed of the random source: retry waits and jitter are the same in every run.
pub(crate) const RANDOM_SEED: u64 = 7;

/// `builder` on `clock`'s time (a wait advances the clock instead of sleeping) with a seeded random source.
pub(crate) fn on_virtual_time(builder: GatewayBuilder, clock: &ManualClock) -> GatewayBuilder {
    builder
        .runtime(Arc::new(clock.clone()), Arc::new(ManualTimer::new(clock.clone())), Arc::new(TokioSpawner))
        .random(Arc::new(SeededRandom::new(RANDOM_SEED)))
}

/// A request context for the tenant whose API key is `key`.
pub(crate) fn context(gateway: &Gateway, key: &str) -> RequestContext {
    RequestContext::new(gateway.authenticate(key).unwrap(), "req-test", CacheDirective::Default)
}
