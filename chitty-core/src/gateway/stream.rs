//! Streamed chat completions: forwarded chunk by chunk, settled when the stream ends or is dropped.

use std::sync::Arc;

use futures::StreamExt;

use super::ops::{Op, TypedChatOp, decode_json};
use super::{Gateway, ReplyMeta, RequestContext};
use crate::budget::Reservation;
use crate::error::{Error, Result};
use crate::events::{CacheStatus, Endpoint};
use crate::keys::CacheKey;
use crate::money::NanoUsd;
use crate::provider::{Capability, ChunkStream};
use crate::time::Timestamp;
use crate::tokens;
use crate::wire::{ChatCompletionRequest, ChatCompletionResponse, ChunkAccumulator};

/// Bytes of text per replayed chunk when a cached answer is streamed.
const REPLAY_PIECE_BYTES: usize = 24;

/// A streamed answer: headers' worth of metadata now, chunks as they come.
pub struct StreamReply {
    /// Cache and budget details known before the first chunk (`cost` is zero until the end).
    pub meta: ReplyMeta,
    /// The chunks to send to the client. Dropping it cancels the upstream and settles for what was produced.
    pub chunks: ChunkStream,
}

impl std::fmt::Debug for StreamReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReply").field("meta", &self.meta).finish_non_exhaustive()
    }
}

/// Everything needed to settle, cache and report a stream once it ends.
struct Finish {
    gateway: Gateway,
    ctx: RequestContext,
    model: String,
    config: Arc<crate::gateway::ModelConfig>,
    provider: String,
    reservation: Option<Reservation>,
    key: Option<CacheKey>,
    cache_status: CacheStatus,
    prompt_estimate: u64,
    started: Timestamp,
}

impl Finish {
    /// The cost of what was produced: reported usage when there is any, else an upper estimate capped by the reservation.
    fn cost(&self, acc: &ChunkAccumulator) -> NanoUsd {
        let price = &self.config.price;
        match acc.usage() {
            Some(u) => price.cost_of_usage(u),
            None => {
                let produced = tokens::estimate_text("") + acc.generated_text_len() as u64;
                let estimate = price.cost(self.prompt_estimate, produced);
                self.reservation.as_ref().map_or(estimate, |r| estimate.min(r.amount))
            }
        }
    }

    async fn run(self, acc: ChunkAccumulator, completed: bool, status: u16) {
        let cost = self.cost(&acc);
        let charged = self.gateway.settle(self.reservation.as_ref(), cost).await;
        let usage = acc.usage().cloned();
        let response = acc.finish();
        if let Some(key) = &self.key
            && completed
            && TypedChatOp::complete(&response)
        {
            self.gateway.cache_put(key, &self.config, TypedChatOp::encode(&response)).await;
        }
        let event = self.gateway.request_event(
            &self.ctx,
            &self.model,
            Endpoint::ChatCompletions,
            self.started,
            Some(self.provider.clone()),
            self.cache_status,
            status,
            usage.as_ref(),
            charged,
            true,
        );
        self.gateway.emit(event).await;
    }
}

/// Stream state; settles on drop if the stream did not reach its end.
struct Relay {
    upstream: ChunkStream,
    acc: ChunkAccumulator,
    forward_usage: bool,
    finish: Option<Finish>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            // The client went away mid-stream: settle for what was produced, off the dropped task.
            let acc = std::mem::take(&mut self.acc);
            let spawner = finish.gateway.inner.spawner.clone();
            spawner.spawn(Box::pin(finish.run(acc, false, 499)));
        }
    }
}

impl Gateway {
    /// A streamed chat completion. Errors before the first chunk (unknown model, budget, every route failing)
    /// come back as `Err`; errors after it arrive as the stream's last item.
    pub async fn chat_stream(&self, ctx: &RequestContext, request: ChatCompletionRequest) -> Result<StreamReply> {
        let started = self.now();
        let result = self.chat_stream_inner(ctx, &request, started).await;
        if let Err(e) = &result {
            self.emit_failure(ctx, &request.model, Endpoint::ChatCompletions, started, e, true).await;
        }
        result
    }

    async fn chat_stream_inner(
        &self,
        ctx: &RequestContext,
        req: &ChatCompletionRequest,
        started: Timestamp,
    ) -> Result<StreamReply> {
        if !req.is_stream() {
            return Err(Error::invalid_request("chat_stream needs `stream: true`", Some("stream")));
        }
        let model = self.resolve::<TypedChatOp>(ctx, req)?;
        self.rate_limit(&ctx.tenant)?;
        let forward_usage = req.wants_stream_usage();
        let (key, may_read) = self.cache_plan::<TypedChatOp>(ctx, model, req);
        let mut cache_status = if key.is_some() { CacheStatus::Miss } else { CacheStatus::Bypass };
        if let (Some(k), true) = (&key, may_read) {
            if let Some(bytes) = self.cache_get(k).await {
                match decode_json::<ChatCompletionResponse>(&bytes) {
                    Ok(resp) => {
                        let event = self.request_event(
                            ctx,
                            &req.model,
                            Endpoint::ChatCompletions,
                            started,
                            None,
                            CacheStatus::Hit,
                            200,
                            resp.usage.as_ref(),
                            NanoUsd::ZERO,
                            true,
                        );
                        self.emit(event).await;
                        let chunks = resp.to_chunks(REPLAY_PIECE_BYTES, forward_usage);
                        let meta = ReplyMeta::hit();
                        return Ok(StreamReply {
                            meta,
                            chunks: Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))),
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "cache entry did not parse; treating as a miss"),
                }
            }
        } else if key.is_some() {
            cache_status = CacheStatus::Bypass;
        }
        let prompt = TypedChatOp::prompt_tokens(req);
        let held = self
            .reserve(&ctx.tenant, &model.config, prompt, TypedChatOp::output_cap(req), TypedChatOp::choices(req))
            .await?;
        let cap = held.cap_set.map(|c| (model.config.output_cap_field, c));
        let opened = self
            .route(model, Capability::ChatStream, |route| {
                let mut upstream = req.clone();
                TypedChatOp::prepare_upstream(&mut upstream, model.upstream_name(route, &req.model), cap);
                let provider = Arc::clone(&route.provider);
                Box::pin(async move { provider.chat_stream(upstream).await })
            })
            .await;
        let (upstream, provider) = match opened {
            Ok(v) => v,
            Err(e) => {
                self.release(held.reservation.as_ref()).await;
                return Err(e);
            }
        };
        let meta = ReplyMeta {
            cache: cache_status,
            provider: Some(provider.clone()),
            reserved: held.reservation.as_ref().map_or(NanoUsd::ZERO, |r| r.amount),
            cost: NanoUsd::ZERO,
            max_tokens_set: held.cap_set,
        };
        let relay = Relay {
            upstream,
            acc: ChunkAccumulator::default(),
            forward_usage,
            finish: Some(Finish {
                gateway: self.clone(),
                ctx: ctx.clone(),
                model: req.model.clone(),
                config: Arc::clone(&model.config),
                provider,
                reservation: held.reservation,
                key,
                cache_status,
                prompt_estimate: prompt,
                started,
            }),
        };
        let chunks = futures::stream::unfold(relay, |mut relay| async move {
            loop {
                match relay.upstream.next().await {
                    Some(Ok(mut chunk)) => {
                        relay.acc.push(&chunk);
                        if chunk.usage.is_some() && !relay.forward_usage {
                            if chunk.choices.is_empty() {
                                continue;
                            }
                            chunk.usage = None;
                        }
                        return Some((Ok(chunk), relay));
                    }
                    Some(Err(e)) => {
                        let finish = relay.finish.take()?;
                        let acc = std::mem::take(&mut relay.acc);
                        let status = e.status();
                        finish.run(acc, false, status).await;
                        // Nothing may follow an error item.
                        relay.upstream = Box::pin(futures::stream::empty());
                        return Some((Err(e), relay));
                    }
                    None => {
                        let finish = relay.finish.take()?;
                        let acc = std::mem::take(&mut relay.acc);
                        finish.run(acc, true, 200).await;
                        return None;
                    }
                }
            }
        });
        Ok(StreamReply { meta, chunks: Box::pin(chunks) })
    }
}
