//! Streamed answers (chat and legacy completions): the pipeline's [`Streamed`] delivery forwards them chunk by
//! chunk and settles when the stream ends or is dropped.

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tracing::Instrument;

use super::ReplyMeta;
use super::endpoint::{CompletionEndpoint, EndpointSpec, TypedChatEndpoint};
use super::pipeline::{Delivery, PendingSettlement};
use crate::error::{Error, Result};
use crate::money::NanoUsd;
use crate::provider::{Capability, Provider};
use crate::time::Spawner;
use crate::tokens;
use crate::wire::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChunkAccumulator, CompletionAccumulator,
    CompletionRequest, CompletionResponse, PromptInput, StreamChunk, Usage,
};

/// Bytes of text per replayed chunk when a cached answer is streamed.
const REPLAY_PIECE_BYTES: usize = 24;

/// What streaming differs in between chat and legacy completions.
pub(crate) trait StreamSpec: EndpointSpec {
    /// One chunk of the stream.
    type Chunk: StreamChunk;
    /// Folds chunks back into [`EndpointSpec::Resp`].
    type Accumulator: Default + Send + 'static;
    /// What a route's provider must declare to serve the stream.
    const ROUTE_CAPABILITY: Capability;

    fn is_stream(req: &Self::Req) -> bool;
    fn wants_usage(req: &Self::Req) -> bool;
    fn open(
        provider: Arc<dyn Provider>,
        req: Self::Req,
    ) -> BoxFuture<'static, Result<BoxStream<'static, Result<Self::Chunk>>>>;
    fn push(acc: &mut Self::Accumulator, chunk: &Self::Chunk);
    fn accumulated_usage(acc: &Self::Accumulator) -> Option<&Usage>;
    /// Bytes generated so far, for settling a stream that reported no usage.
    fn generated_len(acc: &Self::Accumulator) -> usize;
    /// Bytes of the generated text that only repeat the prompt (`echo`), not charged as output.
    fn echoed_len(req: &Self::Req) -> usize;
    fn finish(acc: Self::Accumulator) -> Self::Resp;
    /// A cached answer as the chunks that would have produced it.
    fn replay(resp: &Self::Resp, include_usage: bool) -> Vec<Self::Chunk>;
}

impl StreamSpec for TypedChatEndpoint {
    type Chunk = ChatCompletionChunk;
    type Accumulator = ChunkAccumulator;
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

    fn accumulated_usage(acc: &ChunkAccumulator) -> Option<&Usage> {
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

impl StreamSpec for CompletionEndpoint {
    type Chunk = CompletionResponse;
    type Accumulator = CompletionAccumulator;
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
            let answer = CompletionEndpoint::call(provider, req).await?;
            let chunks = answer.to_chunks(REPLAY_PIECE_BYTES, true).into_iter().map(Ok);
            Ok(Box::pin(futures::stream::iter(chunks)) as BoxStream<'static, _>)
        })
    }

    fn push(acc: &mut CompletionAccumulator, chunk: &CompletionResponse) {
        acc.push(chunk);
    }

    fn accumulated_usage(acc: &CompletionAccumulator) -> Option<&Usage> {
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

/// How a stream that reported no usage is charged: an upper estimate from what it produced.
struct UsageEstimate {
    prompt_tokens: u64,
    /// Bytes of generated text that only repeat the prompt (`echo`), not charged as output.
    echoed_len: usize,
}

impl UsageEstimate {
    /// The cost of `generated_len` bytes of output, capped by the reservation.
    fn cost(&self, pending: &PendingSettlement, generated_len: usize) -> NanoUsd {
        let produced = tokens::estimate_text("") + generated_len.saturating_sub(self.echoed_len) as u64;
        let estimate = pending.price().cost(self.prompt_tokens, produced);
        pending.reservation().map_or(estimate, |r| estimate.min(r.amount))
    }
}

/// Settles a finished, failed or abandoned stream: reported usage when there is any, else the estimate;
/// a stream that completed is cached. `status` (and `error_code`, for a stream that failed) go to its event.
async fn settle_stream<S: StreamSpec>(
    pending: PendingSettlement,
    estimate: UsageEstimate,
    accumulated: S::Accumulator,
    completed: bool,
    (status, error_code): (u16, Option<&'static str>),
) {
    let usage = S::accumulated_usage(&accumulated).cloned();
    let cost = match &usage {
        Some(u) => pending.price().cost_of_usage(u),
        None => estimate.cost(&pending, S::generated_len(&accumulated)),
    };
    let caches = pending.caches();
    let response = S::finish(accumulated);
    let entry = (caches && completed && S::complete(&response)).then(|| S::encode(&response));
    pending.complete(cost, usage.as_ref(), entry, status, error_code).await;
}

/// A stream on its way to the client; settles on drop if it did not reach its end.
struct StreamRelay<S: StreamSpec> {
    upstream: BoxStream<'static, Result<S::Chunk>>,
    accumulated: S::Accumulator,
    forward_usage: bool,
    /// Choices the request can produce; a chunk indexing past them is a broken upstream.
    choices: u32,
    /// Taken when the stream settles, so that it settles once.
    pending: Option<(PendingSettlement, UsageEstimate)>,
    /// A settlement under way. If the client goes away while it is awaited, `Drop` hands the rest of it to
    /// the spawner: a settlement is finished, never abandoned half-way.
    settling: Option<BoxFuture<'static, ()>>,
    spawner: Arc<dyn Spawner>,
    /// The request's span, so that what happens while streaming (the settlement) is logged under it.
    span: tracing::Span,
}

impl<S: StreamSpec> StreamRelay<S> {
    /// Settles now (the stream ended or failed); later items are none.
    async fn settle(&mut self, completed: bool, ending: (u16, Option<&'static str>)) {
        if let Some((pending, estimate)) = self.pending.take() {
            let accumulated = std::mem::take(&mut self.accumulated);
            let settle = settle_stream::<S>(pending, estimate, accumulated, completed, ending);
            self.settling = Some(Box::pin(settle.instrument(self.span.clone())));
        }
        if let Some(settling) = self.settling.as_mut() {
            settling.await;
            self.settling = None;
        }
    }

    /// The upstream's next item; until the first chunk, the wait counts as upstream time and the first chunk's
    /// arrival is noted (time to first token).
    async fn next_upstream(&mut self) -> Option<Result<S::Chunk>> {
        let waiting_since = match &self.pending {
            Some((pending, _)) if pending.awaits_first_chunk() => Some(pending.monotonic_nanos()),
            _ => None,
        };
        let item = self.upstream.next().await;
        if let (Some(since), Some((pending, _))) = (waiting_since, &mut self.pending) {
            let until = pending.monotonic_nanos();
            pending.waited_upstream(since, until, matches!(item, Some(Ok(_))));
        }
        item
    }

    /// The next chunk for the client, or the error that ends the stream.
    async fn next_item(&mut self) -> Option<Result<S::Chunk>> {
        loop {
            let item = match self.next_upstream().await {
                Some(Ok(chunk)) if chunk.max_choice_index().is_some_and(|i| i >= self.choices) => {
                    let message = format!(
                        "malformed stream: a chunk for choice {} of a request for {} choice(s)",
                        chunk.max_choice_index().unwrap_or_default(),
                        self.choices
                    );
                    let provider = self.pending.as_ref().map(|(p, _)| p.provider().to_owned()).unwrap_or_default();
                    Some(Err(Error::upstream(provider, crate::UpstreamFailure::Decode, message)))
                }
                other => other,
            };
            match item {
                Some(Ok(mut chunk)) => {
                    S::push(&mut self.accumulated, &chunk);
                    if chunk.usage().is_some() && !self.forward_usage {
                        if !chunk.has_choices() {
                            continue;
                        }
                        chunk.take_usage();
                    }
                    return Some(Ok(chunk));
                }
                Some(Err(e)) => {
                    self.pending.as_ref()?;
                    self.settle(false, (e.status(), e.code())).await;
                    // Nothing may follow an error item.
                    self.upstream = Box::pin(futures::stream::empty());
                    return Some(Err(e));
                }
                None => {
                    self.settle(true, (200, None)).await;
                    return None;
                }
            }
        }
    }
}

impl<S: StreamSpec> Drop for StreamRelay<S> {
    fn drop(&mut self) {
        if let Some(settling) = self.settling.take() {
            // Dropped while settling: finish the settlement off the dropped task.
            self.spawner.spawn(settling);
            return;
        }
        if let Some((pending, estimate)) = self.pending.take() {
            // The client went away mid-stream: settle for what was produced, off the dropped task.
            let accumulated = std::mem::take(&mut self.accumulated);
            let spawner = pending.gateway().inner.spawner.clone();
            let settle = settle_stream::<S>(pending, estimate, accumulated, false, (499, None));
            spawner.spawn(Box::pin(settle.instrument(self.span.clone())));
        }
    }
}

/// The streamed delivery: the answer is forwarded as it arrives and settled when it ends.
pub(super) struct Streamed;

impl<S: StreamSpec> Delivery<S> for Streamed {
    const STREAM: bool = true;
    const CAPABILITY: Capability = S::ROUTE_CAPABILITY;
    type Upstream = BoxStream<'static, Result<S::Chunk>>;
    type Output = StreamReply<S::Chunk>;

    fn check(req: &S::Req) -> Result<()> {
        if !S::is_stream(req) {
            return Err(Error::invalid_request("a streamed answer needs `stream: true`", Some("stream")));
        }
        Ok(())
    }

    fn call(provider: Arc<dyn Provider>, req: S::Req) -> BoxFuture<'static, Result<Self::Upstream>> {
        S::open(provider, req)
    }

    fn replay(cached: S::Resp, req: &S::Req, meta: ReplyMeta) -> Result<StreamReply<S::Chunk>> {
        let chunks = S::replay(&cached, S::wants_usage(req));
        Ok(StreamReply { meta, chunks: Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))) })
    }

    fn answer(_output: &StreamReply<S::Chunk>) -> Option<&S::Resp> {
        None
    }

    async fn deliver(
        upstream: Self::Upstream,
        pending: PendingSettlement,
        req: &S::Req,
    ) -> Result<StreamReply<S::Chunk>> {
        let meta = pending.meta();
        let span = pending.span().clone();
        let estimate = UsageEstimate { prompt_tokens: S::prompt_tokens(req), echoed_len: S::echoed_len(req) };
        let relay = StreamRelay::<S> {
            upstream,
            accumulated: S::Accumulator::default(),
            forward_usage: S::wants_usage(req),
            choices: S::choices(req),
            spawner: pending.gateway().inner.spawner.clone(),
            pending: Some((pending, estimate)),
            settling: None,
            span,
        };
        let chunks = futures::stream::unfold(relay, |mut relay| async move {
            let span = relay.span.clone();
            let item = relay.next_item().instrument(span).await?;
            Some((item, relay))
        });
        Ok(StreamReply { meta, chunks: Box::pin(chunks) })
    }
}
