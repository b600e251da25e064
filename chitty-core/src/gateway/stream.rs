//! Streamed answers (chat and legacy completions): forwarded chunk by chunk, settled when the stream ends or is
//! dropped.

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::ops::{CompletionOp, Op, TypedChatOp};
use super::{Gateway, ReplyMeta, RequestContext};
use crate::budget::Reservation;
use crate::error::{Error, Result};
use crate::events::CacheStatus;
use crate::keys::CacheKey;
use crate::money::NanoUsd;
use crate::provider::{Capability, Provider};
use crate::time::Timestamp;
use crate::tokens;
use crate::wire::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChunkAccumulator, CompletionAccumulator,
    CompletionRequest, CompletionResponse, PromptInput, StreamChunk, Usage,
};

/// Bytes of text per replayed chunk when a cached answer is streamed.
const REPLAY_PIECE_BYTES: usize = 24;

/// What streaming differs in between chat and legacy completions.
pub(crate) trait StreamOp: Op {
    /// One chunk of the stream.
    type Chunk: StreamChunk;
    /// Folds chunks back into [`Op::Resp`].
    type Acc: Default + Send + 'static;
    /// What a route's provider must declare to serve the stream.
    const ROUTE_CAPABILITY: Capability;

    fn is_stream(req: &Self::Req) -> bool;
    fn wants_usage(req: &Self::Req) -> bool;
    fn open(
        provider: Arc<dyn Provider>,
        req: Self::Req,
    ) -> BoxFuture<'static, Result<BoxStream<'static, Result<Self::Chunk>>>>;
    fn push(acc: &mut Self::Acc, chunk: &Self::Chunk);
    fn acc_usage(acc: &Self::Acc) -> Option<&Usage>;
    /// Bytes generated so far, for settling a stream that reported no usage.
    fn generated_len(acc: &Self::Acc) -> usize;
    /// Bytes of the generated text that only repeat the prompt (`echo`), not charged as output.
    fn echoed_len(req: &Self::Req) -> usize;
    fn finish(acc: Self::Acc) -> Self::Resp;
    /// A cached answer as the chunks that would have produced it.
    fn replay(resp: &Self::Resp, include_usage: bool) -> Vec<Self::Chunk>;
}

impl StreamOp for TypedChatOp {
    type Chunk = ChatCompletionChunk;
    type Acc = ChunkAccumulator;
    const ROUTE_CAPABILITY: Capability = Capability::ChatStream;

    fn is_stream(req: &ChatCompletionRequest) -> bool {
        req.is_stream()
    }

    fn wants_usage(req: &ChatCompletionRequest) -> bool {
        req.wants_stream_usage()
    }

    fn open(
        provider: Arc<dyn Provider>,
        req: ChatCompletionRequest,
    ) -> BoxFuture<'static, Result<BoxStream<'static, Result<ChatCompletionChunk>>>> {
        Box::pin(async move { provider.chat_stream(req).await })
    }

    fn push(acc: &mut ChunkAccumulator, chunk: &ChatCompletionChunk) {
        acc.push(chunk);
    }

    fn acc_usage(acc: &ChunkAccumulator) -> Option<&Usage> {
        acc.usage()
    }

    fn generated_len(acc: &ChunkAccumulator) -> usize {
        acc.generated_text_len()
    }

    fn echoed_len(_req: &ChatCompletionRequest) -> usize {
        0
    }

    fn finish(acc: ChunkAccumulator) -> ChatCompletionResponse {
        acc.finish()
    }

    fn replay(resp: &ChatCompletionResponse, include_usage: bool) -> Vec<ChatCompletionChunk> {
        resp.to_chunks(REPLAY_PIECE_BYTES, include_usage)
    }
}

impl StreamOp for CompletionOp {
    type Chunk = CompletionResponse;
    type Acc = CompletionAccumulator;
    // A provider that completes but cannot stream is still routed to: its answer is sent as chunks.
    const ROUTE_CAPABILITY: Capability = Capability::Completions;

    fn is_stream(req: &CompletionRequest) -> bool {
        req.is_stream()
    }

    fn wants_usage(req: &CompletionRequest) -> bool {
        req.wants_stream_usage()
    }

    fn open(
        provider: Arc<dyn Provider>,
        req: CompletionRequest,
    ) -> BoxFuture<'static, Result<BoxStream<'static, Result<CompletionResponse>>>> {
        Box::pin(async move {
            if provider.capabilities().contains(Capability::CompletionsStream) {
                return provider.completion_stream(req).await;
            }
            let answer = CompletionOp::call(provider, req).await?;
            let chunks = answer.to_chunks(REPLAY_PIECE_BYTES, true).into_iter().map(Ok);
            Ok(Box::pin(futures::stream::iter(chunks)) as BoxStream<'static, _>)
        })
    }

    fn push(acc: &mut CompletionAccumulator, chunk: &CompletionResponse) {
        acc.push(chunk);
    }

    fn acc_usage(acc: &CompletionAccumulator) -> Option<&Usage> {
        acc.usage()
    }

    fn generated_len(acc: &CompletionAccumulator) -> usize {
        acc.generated_text_len()
    }

    fn echoed_len(req: &CompletionRequest) -> usize {
        if req.echo != Some(true) {
            return 0;
        }
        // Each choice repeats its prompt; token prompts come back as text of unknown length and count as output.
        let per_choice = req.n.unwrap_or(1) as usize;
        match &req.prompt {
            PromptInput::Text(t) => t.len() * per_choice,
            PromptInput::Texts(v) => v.iter().map(String::len).sum::<usize>() * per_choice,
            PromptInput::Tokens(_) | PromptInput::TokenLists(_) => 0,
        }
    }

    fn finish(acc: CompletionAccumulator) -> CompletionResponse {
        acc.finish()
    }

    fn replay(resp: &CompletionResponse, include_usage: bool) -> Vec<CompletionResponse> {
        resp.to_chunks(REPLAY_PIECE_BYTES, include_usage)
    }
}

/// A streamed answer: headers' worth of metadata now, chunks as they come. `C` is [`ChatCompletionChunk`] for
/// chat and [`CompletionResponse`] for legacy completions.
pub struct StreamReply<C = ChatCompletionChunk> {
    /// Cache and budget details known before the first chunk (`cost` is zero until the end).
    pub meta: ReplyMeta,
    /// The chunks to send to the client. Dropping it cancels the upstream and settles for what was produced.
    pub chunks: BoxStream<'static, Result<C>>,
}

impl<C> std::fmt::Debug for StreamReply<C> {
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
    echoed_len: usize,
    started: Timestamp,
}

impl Finish {
    /// The cost of what was produced: reported usage when there is any, else an upper estimate capped by the reservation.
    fn cost(&self, usage: Option<&Usage>, generated_len: usize) -> NanoUsd {
        let price = &self.config.price;
        match usage {
            Some(u) => price.cost_of_usage(u),
            None => {
                let produced = tokens::estimate_text("") + generated_len.saturating_sub(self.echoed_len) as u64;
                let estimate = price.cost(self.prompt_estimate, produced);
                self.reservation.as_ref().map_or(estimate, |r| estimate.min(r.amount))
            }
        }
    }

    async fn run<O: StreamOp>(self, acc: O::Acc, completed: bool, status: u16) {
        let usage = O::acc_usage(&acc).cloned();
        let cost = self.cost(usage.as_ref(), O::generated_len(&acc));
        let charged =
            self.gateway.settle(&self.ctx, &self.model, &self.provider, self.reservation.as_ref(), cost).await;
        let response = O::finish(acc);
        if let Some(key) = &self.key
            && completed
            && O::complete(&response)
        {
            self.gateway.cache_put(key, &self.config, O::encode(&response)).await;
        }
        let event = self.gateway.request_event(
            &self.ctx,
            &self.model,
            O::ENDPOINT,
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
struct Relay<O: StreamOp> {
    upstream: BoxStream<'static, Result<O::Chunk>>,
    acc: O::Acc,
    forward_usage: bool,
    /// Choices the request can produce; a chunk indexing past them is a broken upstream.
    choices: u32,
    finish: Option<Finish>,
}

impl<O: StreamOp> Drop for Relay<O> {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            // The client went away mid-stream: settle for what was produced, off the dropped task.
            let acc = std::mem::take(&mut self.acc);
            let spawner = finish.gateway.inner.spawner.clone();
            spawner.spawn(Box::pin(finish.run::<O>(acc, false, 499)));
        }
    }
}

impl Gateway {
    /// A streamed chat completion. Errors before the first chunk (unknown model, budget, every route failing)
    /// come back as `Err`; errors after it arrive as the stream's last item.
    pub async fn chat_stream(&self, ctx: &RequestContext, request: ChatCompletionRequest) -> Result<StreamReply> {
        self.stream::<TypedChatOp>(ctx, request).await
    }

    /// A streamed legacy completion, chunk by chunk as OpenAI streams them (`text_completion` objects holding
    /// pieces of text). Same pipeline, cache and settlement as [`Gateway::chat_stream`].
    pub async fn completion_stream(
        &self,
        ctx: &RequestContext,
        request: CompletionRequest,
    ) -> Result<StreamReply<CompletionResponse>> {
        self.stream::<CompletionOp>(ctx, request).await
    }

    async fn stream<O: StreamOp>(&self, ctx: &RequestContext, request: O::Req) -> Result<StreamReply<O::Chunk>> {
        let started = self.now();
        let result = self.stream_inner::<O>(ctx, &request, started).await;
        if let Err(e) = &result {
            self.emit_failure(ctx, O::model(&request), O::ENDPOINT, started, e, true).await;
        }
        result
    }

    async fn stream_inner<O: StreamOp>(
        &self,
        ctx: &RequestContext,
        req: &O::Req,
        started: Timestamp,
    ) -> Result<StreamReply<O::Chunk>> {
        if !O::is_stream(req) {
            return Err(Error::invalid_request("a streamed answer needs `stream: true`", Some("stream")));
        }
        let model = self.resolve::<O>(ctx, req)?;
        self.rate_limit(&ctx.tenant)?;
        let forward_usage = O::wants_usage(req);
        let (key, may_read) = self.cache_plan::<O>(ctx, model, req);
        let mut cache_status = if key.is_some() { CacheStatus::Miss } else { CacheStatus::Bypass };
        if let (Some(k), true) = (&key, may_read) {
            if let Some(bytes) = self.cache_get(k).await {
                match O::decode(bytes) {
                    Ok(resp) => {
                        let event = self.request_event(
                            ctx,
                            O::model(req),
                            O::ENDPOINT,
                            started,
                            None,
                            CacheStatus::Hit,
                            200,
                            O::usage(&resp).as_ref(),
                            NanoUsd::ZERO,
                            true,
                        );
                        self.emit(event).await;
                        let chunks = O::replay(&resp, forward_usage);
                        return Ok(StreamReply {
                            meta: ReplyMeta::hit(),
                            chunks: Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))),
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "cache entry did not parse; treating as a miss"),
                }
            }
        } else if key.is_some() {
            cache_status = CacheStatus::Bypass;
        }
        let prompt = O::prompt_tokens(req);
        let held = self.reserve(&ctx.tenant, &model.config, prompt, O::output_cap(req), O::generations(req)).await?;
        let cap = held.cap_set.map(|c| (model.config.output_cap_field, c));
        let opened = self
            .route(model, O::ROUTE_CAPABILITY, |route| {
                let mut upstream = req.clone();
                O::prepare_upstream(&mut upstream, model.upstream_name(route, O::model(req)), cap);
                O::open(Arc::clone(&route.provider), upstream)
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
        let relay = Relay::<O> {
            upstream,
            acc: O::Acc::default(),
            forward_usage,
            choices: O::choices(req),
            finish: Some(Finish {
                gateway: self.clone(),
                ctx: ctx.clone(),
                model: O::model(req).to_owned(),
                config: Arc::clone(&model.config),
                provider,
                reservation: held.reservation,
                key,
                cache_status,
                prompt_estimate: prompt,
                echoed_len: O::echoed_len(req),
                started,
            }),
        };
        let chunks = futures::stream::unfold(relay, |mut relay| async move {
            loop {
                let item = match relay.upstream.next().await {
                    Some(Ok(chunk)) if chunk.max_choice_index().is_some_and(|i| i >= relay.choices) => {
                        let message = format!(
                            "malformed stream: a chunk for choice {} of a request for {} choice(s)",
                            chunk.max_choice_index().unwrap_or_default(),
                            relay.choices
                        );
                        let provider = relay.finish.as_ref().map(|f| f.provider.clone()).unwrap_or_default();
                        Some(Err(Error::upstream(provider, crate::UpstreamFailure::Decode, message)))
                    }
                    other => other,
                };
                match item {
                    Some(Ok(mut chunk)) => {
                        O::push(&mut relay.acc, &chunk);
                        if chunk.usage().is_some() && !relay.forward_usage {
                            if !chunk.has_choices() {
                                continue;
                            }
                            chunk.take_usage();
                        }
                        return Some((Ok(chunk), relay));
                    }
                    Some(Err(e)) => {
                        let finish = relay.finish.take()?;
                        let acc = std::mem::take(&mut relay.acc);
                        let status = e.status();
                        finish.run::<O>(acc, false, status).await;
                        // Nothing may follow an error item.
                        relay.upstream = Box::pin(futures::stream::empty());
                        return Some((Err(e), relay));
                    }
                    None => {
                        let finish = relay.finish.take()?;
                        let acc = std::mem::take(&mut relay.acc);
                        finish.run::<O>(acc, true, 200).await;
                        return None;
                    }
                }
            }
        });
        Ok(StreamReply { meta, chunks: Box::pin(chunks) })
    }
}
