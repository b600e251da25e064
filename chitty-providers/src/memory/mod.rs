//! In-memory implementations: a moka-backed [`MemoryCache`], an atomic [`MemoryBudgetStore`], and the
//! [`CountingSink`] and [`CollectingSink`] event sinks.

mod budget;
mod cache;
mod sinks;

pub use budget::MemoryBudgetStore;
pub use cache::MemoryCache;
pub use sinks::{CollectingSink, CountingSink, EventCounts};
