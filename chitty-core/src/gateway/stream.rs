//! Streamed answers (chat and legacy completions): the pipeline's [`Streamed`] delivery forwards them chunk by
//! chunk and settles when the stream ends or is dropped.
//!
//! An attempt counts as answered only once its stream has produced output (text, a tool call, a finish
//! reason or usage): a stream that fails before that is an attempt error, retried or fallen back from like
//! any other, and the client never sees it. After that, a model with `continue_streams` has a broken stream
//! continued on the next route ([`Continuation`]); without it, the error ends the stream.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tracing::Instrument;

use super::ReplyMeta;
use super::config::OutputCapField;
use super::endpoint::{CompletionEndpoint, EndpointSpec, TypedChatEndpoint};
use super::pipeline::{Delivery, PendingSettlement};
use crate::error::{Error, Result, UpstreamFailure};
use crate::events::Event;
use crate::money::NanoUsd;
use crate::provider::{Capability, Provider};
use crate::time::Spawner;
use crate::tokens;
use crate::wire::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChunkAccumulator,
    CompletionAccumulator, CompletionRequest, CompletionResponse, PromptInput, StreamChunk, Usage,
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
    ) -> impl Future<Output = Result<BoxStream<'static, Result<Self::Chunk>>>> + Send + 'static;
    /// Whether a chunk carries output (text, a tool call, a refusal, a finish reason or usage), as opposed to
    /// a head chunk that only names the role: the first such chunk makes the attempt answered.
    fn carries_output(chunk: &Self::Chunk) -> bool;
    /// Notes what a chunk adds to the answer, for continuing it.
    fn observe(chunk: &Self::Chunk, progress: &mut Progress);
    /// The request that continues `text` (sent as a trailing assistant message), its output cap lowered by
    /// `produced` tokens; or why the stream cannot be continued (an [`Event::StreamContinuation`] outcome).
    fn continuation(
        req: &Self::Req,
        text: &str,
        produced: u64,
        gateway_cap: Option<(OutputCapField, u32)>,
    ) -> std::result::Result<Self::Req, &'static str>;
    /// The id, creation time and model of a chunk.
    fn identity(chunk: &Self::Chunk) -> Identity;
    /// Gives a continuation's chunk the first attempt's identity and drops the role it repeats; strips
    /// `leading_space` (the white space trimmed off the prefix) off its first text. Whether it carried text.
    fn rebrand(chunk: &mut Self::Chunk, identity: &Identity, leading_space: bool) -> bool;
    /// Replaces a chunk's usage.
    fn set_usage(chunk: &mut Self::Chunk, usage: Usage);
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

    async fn open(
        provider: Arc<dyn Provider>,
        req: ChatCompletionRequest,
    ) -> Result<BoxStream<'static, Result<ChatCompletionChunk>>> {
        provider.chat_stream(req).await
    }

    fn carries_output(chunk: &ChatCompletionChunk) -> bool {
        chunk.usage.is_some()
            || chunk.choices.iter().any(|c| {
                c.finish_reason.is_some()
                    || c.delta.content.as_ref().is_some_and(|t| !t.is_empty())
                    || c.delta.refusal.as_ref().is_some_and(|t| !t.is_empty())
                    || c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
            })
    }

    fn observe(chunk: &ChatCompletionChunk, progress: &mut Progress) {
        for c in &chunk.choices {
            if let Some(text) = &c.delta.content
                && c.index == 0
            {
                progress.text.push_str(text);
            }
            progress.tool_call |= c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty());
            progress.refusal |= c.delta.refusal.as_ref().is_some_and(|t| !t.is_empty());
            progress.finished |= c.finish_reason.is_some();
        }
    }

    fn continuation(
        req: &ChatCompletionRequest,
        text: &str,
        produced: u64,
        gateway_cap: Option<(OutputCapField, u32)>,
    ) -> std::result::Result<ChatCompletionRequest, &'static str> {
        if req.n.is_some_and(|n| n > 1) {
            return Err("choices");
        }
        let left = |cap: u32| u32::try_from(u64::from(cap).saturating_sub(produced)).unwrap_or(0);
        let mut next = req.clone();
        match (req.max_completion_tokens, req.max_tokens, gateway_cap) {
            (None, None, Some((OutputCapField::MaxTokens, cap))) => next.max_tokens = Some(left(cap)),
            (None, None, Some((OutputCapField::MaxCompletionTokens, cap))) => {
                next.max_completion_tokens = Some(left(cap))
            }
            (completion, max, _) => {
                next.max_completion_tokens = completion.map(left);
                next.max_tokens = max.map(left);
            }
        }
        if next.max_tokens == Some(0) || next.max_completion_tokens == Some(0) {
            return Err("cap_reached");
        }
        // Anthropic refuses a final assistant turn ending in white space; the relay strips it off the answer.
        next.messages.push(ChatMessage::assistant(text.trim_end()));
        Ok(next)
    }

    fn identity(chunk: &ChatCompletionChunk) -> Identity {
        Identity { id: chunk.id.clone(), created: chunk.created, model: chunk.model.clone() }
    }

    fn rebrand(chunk: &mut ChatCompletionChunk, identity: &Identity, leading_space: bool) -> bool {
        identity.id.clone_into(&mut chunk.id);
        chunk.created = identity.created;
        identity.model.clone_into(&mut chunk.model);
        let mut text = false;
        for c in &mut chunk.choices {
            c.delta.role = None;
            if let Some(t) = c.delta.content.as_mut().filter(|t| !t.is_empty()) {
                if leading_space && !text {
                    t.drain(..t.len() - t.trim_start().len());
                }
                text = true;
            }
        }
        text
    }

    fn set_usage(chunk: &mut ChatCompletionChunk, usage: Usage) {
        chunk.usage = Some(usage);
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

    async fn open(
        provider: Arc<dyn Provider>,
        req: CompletionRequest,
    ) -> Result<BoxStream<'static, Result<CompletionResponse>>> {
        if provider.capabilities().contains(Capability::CompletionsStream) {
            return provider.completion_stream(req).await;
        }
        let answer = CompletionEndpoint::call(provider, req).await?;
        let chunks = answer.to_chunks(REPLAY_PIECE_BYTES, true).into_iter().map(Ok);
        Ok(Box::pin(futures::stream::iter(chunks)) as BoxStream<'static, _>)
    }

    fn carries_output(chunk: &CompletionResponse) -> bool {
        chunk.usage.is_some() || chunk.choices.iter().any(|c| c.finish_reason.is_some() || !c.text.is_empty())
    }

    fn observe(_chunk: &CompletionResponse, _progress: &mut Progress) {}

    fn continuation(
        _req: &CompletionRequest,
        _text: &str,
        _produced: u64,
        _gateway_cap: Option<(OutputCapField, u32)>,
    ) -> std::result::Result<CompletionRequest, &'static str> {
        // Legacy completions (echo, several prompts, token prompts) are not continued.
        Err("unsupported")
    }

    fn identity(chunk: &CompletionResponse) -> Identity {
        Identity { id: chunk.id.clone(), created: chunk.created, model: chunk.model.clone() }
    }

    fn rebrand(chunk: &mut CompletionResponse, identity: &Identity, _leading_space: bool) -> bool {
        identity.id.clone_into(&mut chunk.id);
        chunk.created = identity.created;
        identity.model.clone_into(&mut chunk.model);
        chunk.choices.iter().any(|c| !c.text.is_empty())
    }

    fn set_usage(chunk: &mut CompletionResponse, usage: Usage) {
        chunk.usage = Some(usage);
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

/// What a continued answer has produced so far (only tracked for models with `continue_streams`).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// The first choice's text.
    pub(crate) text: String,
    /// Whether a tool call started: a stream broken inside one, or after one, is not continued.
    pub(crate) tool_call: bool,
    /// Whether the model refused: a refusal is not continued.
    pub(crate) refusal: bool,
    /// Whether a finish reason arrived: the answer had ended.
    pub(crate) finished: bool,
}

/// A stream's id, creation time and model: every chunk of a continued answer carries the first attempt's.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: String,
}

/// An attempt's stream, opened: what came before its first output, and the rest.
pub(super) struct Opened<C> {
    /// A head chunk that only named the role, then the first chunk with output.
    head: [Option<C>; 2],
    rest: BoxStream<'static, Result<C>>,
}

/// How a stream that reported no usage is charged: an upper estimate from what it produced.
struct UsageEstimate {
    prompt_tokens: u64,
    /// Bytes of generated text that only repeat the prompt (`echo`), not charged as output.
    echoed_len: usize,
}

impl UsageEstimate {
    /// Tokens charged for `generated_len` bytes of output: at least as many as were produced.
    fn completion_tokens(&self, generated_len: usize) -> u64 {
        tokens::estimate_text("") + generated_len.saturating_sub(self.echoed_len) as u64
    }

    /// The cost of `generated_len` bytes of output, capped by the reservation.
    fn cost(&self, pending: &PendingSettlement, generated_len: usize) -> NanoUsd {
        let estimate = pending.price().cost(self.prompt_tokens, self.completion_tokens(generated_len));
        pending.reservation().map_or(estimate, |r| estimate.min(r.amount))
    }
}

/// A continued answer's bookkeeping: the client's request, what was produced, and what the attempts before
/// the current one used and cost.
struct Continuation<S: StreamSpec> {
    request: S::Req,
    /// The output cap the gateway set on the first attempt, when it set one.
    gateway_cap: Option<(OutputCapField, u32)>,
    progress: Progress,
    /// The first attempt's identity, taken from its first chunk.
    identity: Option<Identity>,
    /// Continuations opened so far, and the most allowed.
    continued: u32,
    max: u32,
    /// Usage and cost of the attempts before the current one (reported, or estimated from their output).
    prior_usage: Usage,
    prior_cost: NanoUsd,
    /// Generated bytes when the current attempt started, and its prompt tokens (estimated).
    generated_before: usize,
    /// Usage the current attempt reported.
    attempt_usage: Option<Usage>,
    /// White space was trimmed off the prefix: strip it off the continuation's first text.
    leading_space: bool,
}

impl<S: StreamSpec> Continuation<S> {
    /// Notes a chunk; a continuation's chunks get the first attempt's identity and the summed usage.
    fn track(&mut self, chunk: &mut S::Chunk) {
        match &self.identity {
            None => self.identity = Some(S::identity(chunk)),
            Some(identity) if self.continued > 0 => {
                if S::rebrand(chunk, identity, self.leading_space) {
                    self.leading_space = false;
                }
            }
            Some(_) => {}
        }
        S::observe(chunk, &mut self.progress);
        if let Some(usage) = chunk.usage() {
            self.attempt_usage = Some(usage.clone());
            if self.continued > 0 {
                let total = add_usage(&self.prior_usage, usage);
                S::set_usage(chunk, total);
            }
        }
    }

    /// The current attempt's usage (reported, or estimated from the bytes it generated) and its cost.
    fn attempt_charge(
        &self,
        pending: &PendingSettlement,
        estimate: &UsageEstimate,
        generated: usize,
    ) -> (Usage, NanoUsd) {
        match &self.attempt_usage {
            Some(u) => (u.clone(), pending.price().cost_of_usage(u)),
            None => {
                let produced = generated.saturating_sub(self.generated_before);
                let usage = Usage::new(estimate.prompt_tokens, estimate.completion_tokens(produced));
                (usage, estimate.cost(pending, produced))
            }
        }
    }
}

/// The sum of two attempts' token counts (breakdowns are per attempt and not summed).
fn add_usage(a: &Usage, b: &Usage) -> Usage {
    Usage::new(a.prompt_tokens.saturating_add(b.prompt_tokens), a.completion_tokens.saturating_add(b.completion_tokens))
}

/// Settles a finished, failed or abandoned stream: reported usage when there is any, else the estimate;
/// a continued stream is charged for each of its attempts. A stream that completed is cached. `status` (and
/// `error_code`, for a stream that failed) go to its event.
async fn settle_stream<S: StreamSpec>(
    pending: PendingSettlement,
    estimate: UsageEstimate,
    accumulated: S::Accumulator,
    continuation: Option<Box<Continuation<S>>>,
    completed: bool,
    (status, error_code): (u16, Option<&'static str>),
) {
    let (usage, cost) = match continuation.as_deref().filter(|c| c.continued > 0) {
        Some(c) => {
            let (last, cost) = c.attempt_charge(&pending, &estimate, S::generated_len(&accumulated));
            (Some(add_usage(&c.prior_usage, &last)), c.prior_cost.saturating_add(cost))
        }
        None => {
            let usage = S::accumulated_usage(&accumulated).cloned();
            let cost = match &usage {
                Some(u) => pending.price().cost_of_usage(u),
                None => estimate.cost(&pending, S::generated_len(&accumulated)),
            };
            (usage, cost)
        }
    };
    let caches = pending.caches();
    let response = S::finish(accumulated);
    let entry = (caches && completed && S::complete(&response)).then(|| S::encode(&response));
    pending.complete(cost, usage.as_ref(), entry, status, error_code).await;
}

/// A stream on its way to the client; settles on drop if it did not reach its end.
struct StreamRelay<S: StreamSpec> {
    /// What the attempt's stream produced before it was handed over, to send first.
    head: [Option<S::Chunk>; 2],
    upstream: BoxStream<'static, Result<S::Chunk>>,
    accumulated: S::Accumulator,
    forward_usage: bool,
    /// Choices the request can produce; a chunk indexing past them is a broken upstream.
    choices: u32,
    /// Taken when the stream settles, so that it settles once.
    pending: Option<(PendingSettlement, UsageEstimate)>,
    /// For models with `continue_streams`; none otherwise (nothing is tracked).
    continuation: Option<Box<Continuation<S>>>,
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
            let continuation = self.continuation.take();
            let settle = settle_stream::<S>(pending, estimate, accumulated, continuation, completed, ending);
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
        let item = match self.head.iter_mut().find_map(Option::take) {
            Some(chunk) => Some(Ok(chunk)),
            None => self.upstream.next().await,
        };
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
                    if let Some(continuation) = self.continuation.as_deref_mut() {
                        continuation.track(&mut chunk);
                    }
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
                    let e = match self.continue_stream(e).await {
                        Ok(()) => continue,
                        Err(e) => e,
                    };
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

    /// After the stream broke with `error`: opens a continuation on the next route when the model allows it
    /// and the answer can be continued; otherwise (or when no route can) gives `error` back.
    async fn continue_stream(&mut self, error: Error) -> std::result::Result<(), Error> {
        let (Some(c), Some((pending, estimate))) = (self.continuation.as_deref_mut(), self.pending.as_mut()) else {
            return Err(error);
        };
        if !error.is_retryable() {
            return Err(error);
        }
        let gateway = pending.gateway().clone();
        let model = pending.requested_model().to_owned();
        let from_route = pending.route_taken_mut().route.clone();
        let refused = match &c.progress {
            p if p.tool_call => Some("tool_call"),
            p if p.refusal => Some("refusal"),
            p if p.finished => Some("finished"),
            _ if c.continued >= c.max => Some("exhausted"),
            _ => None,
        };
        let produced = c.progress.text.len() as u64;
        let request = match refused {
            Some(why) => Err(why),
            None => S::continuation(&c.request, &c.progress.text, produced, c.gateway_cap),
        };
        let request = match request {
            Ok(r) => r,
            Err(outcome) => {
                gateway.emit(Event::StreamContinuation { model, from_route, to_route: None, outcome }).await;
                return Err(error);
            }
        };
        let prompt_tokens = S::prompt_tokens(&request);
        let taken = pending.route_taken_mut();
        let opened = gateway
            .continue_on(&model, taken, S::ROUTE_CAPABILITY, |route, upstream| {
                let mut attempt = request.clone();
                S::prepare_upstream(&mut attempt, upstream, None);
                <Streamed as Delivery<S>>::call(Arc::clone(&route.provider), attempt)
            })
            .await;
        let opened = match opened {
            Ok(opened) => opened,
            Err(failure) => {
                tracing::warn!(error = %failure, "no route could continue the broken stream");
                let outcome = "failed";
                gateway.emit(Event::StreamContinuation { model, from_route, to_route: None, outcome }).await;
                return Err(error);
            }
        };
        taken.continuations += 1;
        let to_route = Some(taken.route.clone());
        // The broken attempt is charged for what it used; the continuation starts its own count.
        let generated = S::generated_len(&self.accumulated);
        let (used, cost) = c.attempt_charge(pending, estimate, generated);
        c.prior_usage = add_usage(&c.prior_usage, &used);
        c.prior_cost = c.prior_cost.saturating_add(cost);
        c.generated_before = generated;
        c.attempt_usage = None;
        c.continued += 1;
        c.leading_space = c.progress.text.len() != c.progress.text.trim_end().len();
        estimate.prompt_tokens = prompt_tokens;
        (self.head, self.upstream) = (opened.head, opened.rest);
        gateway.emit(Event::StreamContinuation { model, from_route, to_route, outcome: "continued" }).await;
        Ok(())
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
            let continuation = self.continuation.take();
            let spawner = pending.gateway().inner.spawner.clone();
            let settle = settle_stream::<S>(pending, estimate, accumulated, continuation, false, (499, None));
            spawner.spawn(Box::pin(settle.instrument(self.span.clone())));
        }
    }
}

/// The streamed delivery: the answer is forwarded as it arrives and settled when it ends.
pub(super) struct Streamed;

impl<S: StreamSpec> Delivery<S> for Streamed {
    const STREAM: bool = true;
    const CAPABILITY: Capability = S::ROUTE_CAPABILITY;
    type Upstream = Opened<S::Chunk>;
    type Output = StreamReply<S::Chunk>;

    fn check(req: &S::Req) -> Result<()> {
        if !S::is_stream(req) {
            return Err(Error::invalid_request("a streamed answer needs `stream: true`", Some("stream")));
        }
        Ok(())
    }

    /// Opens the stream and waits for its first output, so that a stream failing before it is an attempt
    /// error (retried or fallen back from, unseen by the client) and the attempt timeout bounds that wait.
    fn call(provider: Arc<dyn Provider>, req: S::Req) -> BoxFuture<'static, Result<Opened<S::Chunk>>> {
        Box::pin(async move {
            let named = Arc::clone(&provider);
            let mut rest = S::open(provider, req).await?;
            let mut head = [None, None];
            loop {
                match rest.next().await {
                    Some(Ok(chunk)) if head[0].is_none() && !S::carries_output(&chunk) => head[0] = Some(chunk),
                    Some(Ok(chunk)) => {
                        head[1] = Some(chunk);
                        return Ok(Opened { head, rest });
                    }
                    Some(Err(e)) => return Err(e),
                    None => {
                        let message = "the stream ended before any output";
                        return Err(Error::upstream(named.name(), UpstreamFailure::Interrupted, message));
                    }
                }
            }
        })
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
        let config = pending.config();
        let continuation = config.continue_streams.then(|| {
            let attempts = pending.gateway().inner.defaults.attempts_per_route.max(1);
            let routes = u32::try_from(config.routes.len().max(1)).unwrap_or(u32::MAX);
            Box::new(Continuation::<S> {
                request: req.clone(),
                gateway_cap: meta.max_tokens_set.map(|cap| (config.output_cap_field, cap)),
                progress: Progress::default(),
                identity: None,
                continued: 0,
                max: attempts.saturating_mul(routes),
                prior_usage: Usage::new(0, 0),
                prior_cost: NanoUsd::ZERO,
                generated_before: 0,
                attempt_usage: None,
                leading_space: false,
            })
        });
        let relay = StreamRelay::<S> {
            head: upstream.head,
            upstream: upstream.rest,
            accumulated: S::Accumulator::default(),
            forward_usage: S::wants_usage(req),
            choices: S::choices(req),
            spawner: pending.gateway().inner.spawner.clone(),
            pending: Some((pending, estimate)),
            continuation,
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
