//! In-memory implementations: a moka-backed [`MemoryCache`], an atomic [`MemoryBudgetStore`], a [`MemoryAccessStore`], and the
//! [`CountingSink`] and [`CollectingSink`] event sinks.

mod access;
mod budget;
mod cache;
mod sinks;

pub use access::MemoryAccessStore;
pub use budget::MemoryBudgetStore;
pub use cache::MemoryCache;
pub use sinks::{CollectingSink, CountingSink, EventCounts};
