#![cfg_attr(docsrs, feature(doc_cfg))]
//! # chitty-providers
//!
//! Implementations of chitty-core's traits, each behind a feature.
//!
//! - `memory` (default): [`memory`] (moka cache, atomic budget ledger, counting and collecting sinks) and
//!   [`runtime`] (chitty-core's system clock, tokio timer and spawner, and OS-seeded random source, re-exported).
//! - `server`: [`server::router`], the OpenAI-compatible HTTP API over a gateway (axum), and [`config`], the TOML
//!   configuration loader.
//! - `openai`: [`openai::OpenAiProvider`], any OpenAI-compatible upstream over HTTP.
//! - `anthropic`: [`anthropic::AnthropicProvider`], Anthropic's Messages API translated to and from OpenAI's.
//! - `ollama`: [`ollama::OllamaProvider`], Ollama's native API with NDJSON streaming.
//! - `upstream-http` (enabled by each of the three above): [`http_client::UpstreamClient`], the HTTP client
//!   they share over a swappable transport, [`http_provider::ProviderBuilder`], the settings they share, and
//!   [`framing`], the server-sent-event and NDJSON readers of their streams.
//! - `redis`: [`redis::RedisCache`] and [`redis::RedisBudgetStore`], shared by every gateway replica (each budget
//!   operation is one atomic Lua script).
//! - `postgres`: [`postgres::PostgresAccessStore`], tenants and keys in PostgreSQL, with changes pushed to every
//!   replica through `LISTEN/NOTIFY` ([`access_sync`] keeps a gateway's copy current).
//! - `prometheus`: [`prometheus::PrometheusSink`], request, token, cost and upstream metrics in a host's registry.
//! - `server` or `upstream-http`: [`trace`], W3C `traceparent`/`tracestate` read from each request
//!   ([`trace::TraceContextLayer`], in [`server::router`]) and sent on every upstream request made for it.
//! - `opentelemetry-otlp`: [`otel::layer`], the gateway's request spans exported over OTLP (HTTP/protobuf),
//!   parented to the client's `traceparent`; upstream requests then carry the gateway's span as their parent.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "memory")]
pub mod access_sync;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "memory")]
pub mod runtime;
#[cfg(feature = "server")]
pub mod server;

#[cfg(feature = "anthropic")]
pub mod anthropic;
#[cfg(feature = "upstream-http")]
pub mod framing;
#[cfg(feature = "upstream-http")]
pub mod http_client;
#[cfg(feature = "upstream-http")]
pub mod http_provider;
#[cfg(feature = "ollama")]
pub mod ollama;
#[cfg(feature = "openai")]
pub mod openai;
#[cfg(feature = "opentelemetry-otlp")]
pub mod otel;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "prometheus")]
pub mod prometheus;
#[cfg(feature = "redis")]
pub mod redis;
pub mod request_log;
#[cfg(any(feature = "server", feature = "upstream-http"))]
pub mod trace;
