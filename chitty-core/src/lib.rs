#![cfg_attr(docsrs, feature(doc_cfg))]
//! # chitty-core
//!
//! The no-I/O core of chitty: OpenAI wire types, the five plugin traits ([`Provider`], [`Cache`],
//! [`BudgetStore`], [`EventSink`], [`Compressor`]) and the pure logic of the gateway (cache keys, money,
//! pricing, token estimates, routing and budget decisions).
//!
//! This crate performs no network or disk I/O, reads no clock and spawns nothing: time arrives through an
//! injected [`Clock`], waiting through an injected [`Timer`]. Its dependency tree holds no tokio, reqwest,
//! hyper, axum or redis (CI checks it). Implementations of the traits live in `chitty-providers`,
//! `chitty-github` and `chitty-delta`. The exceptions are opt-in: feature `tokio` adds [`runtime`] (the
//! system clock, the tokio timer and spawner, an OS-seeded random source), and feature `serve` adds [`serve`],
//! the hardened HTTP/1.1 accept loop (tokio and hyper) that the gateway's and the webhook's servers share.
//!
//! ```
//! use chitty_core::keys::{chat_key, CacheScope};
//! use chitty_core::money::{ModelPrice, NanoUsd};
//! use chitty_core::wire::ChatCompletionRequest;
//!
//! let request: ChatCompletionRequest = serde_json::from_str(
//!     r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], "temperature": 0}"#,
//! )?;
//! // Keys are tenant-scoped and ignore `stream`, so a streamed retry hits the same entry.
//! let key = chat_key(CacheScope::Tenant("acme"), &request);
//! assert_eq!(key.to_hex().len(), 64);
//!
//! // $0.15 in / $0.60 out per million tokens; money is integer nano-USD.
//! let price = ModelPrice::from_micros_per_mtok(150_000, 600_000);
//! assert_eq!(price.cost(1_000, 500), NanoUsd(150_000 + 300_000));
//! # Ok::<(), serde_json::Error>(())
//! ```

pub mod access;
pub mod balance;
pub mod budget;
pub mod cache;
pub mod compressor;
pub mod embedding;
pub mod error;
pub mod events;
pub mod gateway;
pub mod keys;
pub mod money;
pub mod provider;
pub mod ratelimit;
pub mod report;
pub mod retry;
pub mod router;
#[cfg(feature = "tokio")]
pub mod runtime;
pub mod semantic;
#[cfg(feature = "serve")]
pub mod serve;
pub mod time;
pub mod tokens;
pub mod upstream;
pub mod wire;

pub use access::{AccessSnapshot, AccessStore, BudgetPeriod, KeyDigest, KeyRecord, TenantRecord, TenantUpdate};
pub use budget::{Balance, BudgetAccount, BudgetStore, Reservation, ReserveRequest, Settlement, Spend, SpendArchive};
pub use cache::Cache;
pub use compressor::{Compressor, CompressorError, DecodeReport, EncodeReport, PartReport};
pub use error::{BoxError, Error, Result, UpstreamFailure};
pub use events::{CacheStatus, DiscardSink, Endpoint, Event, EventSink, FanOutSink, RequestEvent, RouterNote};
pub use money::{ModelPrice, NanoUsd};
pub use provider::{Capabilities, Capability, ChunkStream, CompletionChunkStream, NativeEventStream, Provider};
pub use time::{Clock, ManualClock, ManualTimer, RandomSource, SeededRandom, Spawner, Timer, Timestamp};

#[cfg(test)]
mod tests {
    use super::*;

    /// The six plugin traits are object-safe and shareable across threads: hosts pick implementations at run time.
    #[test]
    fn traits_are_object_safe_send_sync() {
        fn shareable<T: ?Sized + Send + Sync + std::fmt::Debug + 'static>() {}
        shareable::<dyn Provider>();
        shareable::<dyn Cache>();
        shareable::<dyn BudgetStore>();
        shareable::<dyn EventSink>();
        shareable::<dyn Compressor>();
        shareable::<dyn AccessStore>();
        let _: Option<std::sync::Arc<dyn Cache>> = None;
    }
}
