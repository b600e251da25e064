//! The Responses API on the chat pipeline: a request is translated into a chat completion, run through
//! [`Gateway::chat`] or [`Gateway::chat_stream`] (so budgets, rate limits, caching, routing, fallback and
//! events apply exactly as to chat), and translated back. Stored responses live in the gateway's cache
//! backend under a key scoped to the tenant (Redis shares them between replicas), for
//! [`STORED_RESPONSE_TTL`].

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::stream::StreamReply;
use super::tenant::RequestContext;
use super::{Gateway, Reply};
use crate::error::{Error, Result};
use crate::keys::CacheKey;
use crate::wire::responses::{
    ResponseIds, ResponseObject, ResponseStreamEvent, ResponseStreamTranslator, ResponsesRequest, from_chat, to_chat,
};
use crate::wire::{ChatCompletionRequest, ChatMessage, Role, StreamOptions};

/// How long a stored response can be retrieved or continued (OpenAI keeps them 30 days). A cache backend
/// bounded in size may evict one sooner.
pub const STORED_RESPONSE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What is kept of a stored response: the object, and the conversation a follow-up continues (every turn,
/// this one's answer included, without the instructions, which OpenAI does not carry over).
#[derive(Serialize, Deserialize)]
struct StoredResponse {
    response: ResponseObject,
    conversation: Vec<ChatMessage>,
}

/// The cache key of a tenant's stored response: another tenant's key never names it.
fn stored_key(tenant: &str, id: &str) -> CacheKey {
    let mut sha = Sha256::new();
    for part in ["chitty.responses.v1", tenant, id] {
        sha.update((part.len() as u64).to_le_bytes());
        sha.update(part.as_bytes());
    }
    CacheKey(sha.finalize().into())
}

/// The turns of this request that a follow-up continues: the chat messages without the leading instructions.
fn turns(request: &ResponsesRequest, chat: &ChatCompletionRequest) -> Vec<ChatMessage> {
    let skip =
        usize::from(request.instructions.is_some() && chat.messages.first().is_some_and(|m| m.role == Role::System));
    chat.messages[skip..].to_vec()
}

impl Gateway {
    /// `POST /v1/responses`, answered whole.
    pub async fn responses(&self, ctx: &RequestContext, request: ResponsesRequest) -> Result<Reply<ResponseObject>> {
        let chat = self.responses_chat(ctx, &request).await?;
        // Copied only for a response that is kept.
        let conversation = request.wants_store().then(|| turns(&request, &chat));
        let reply = self.chat(ctx, chat).await?;
        let object = from_chat(&request, &self.response_ids(), &reply.body);
        if let Some(conversation) = conversation {
            self.store_response(ctx, &object, conversation).await;
        }
        Ok(Reply { body: object, meta: reply.meta })
    }

    /// `POST /v1/responses` with `"stream": true`: the Responses event sequence. Errors before the first
    /// event come back as `Err`; a failure after it is the stream's last event (`error`).
    pub async fn responses_stream(
        &self,
        ctx: &RequestContext,
        request: ResponsesRequest,
    ) -> Result<StreamReply<ResponseStreamEvent>> {
        let mut chat = self.responses_chat(ctx, &request).await?;
        chat.stream = Some(true);
        // The final usage chunk is what `response.completed` reports.
        chat.stream_options = Some(StreamOptions { include_usage: Some(true), extra: crate::wire::Extra::new() });
        let conversation = request.wants_store().then(|| turns(&request, &chat));
        let reply = self.chat_stream(ctx, chat).await?;
        let mut translator = ResponseStreamTranslator::new(request, self.response_ids());
        let state = StreamState {
            pending: translator.start().into(),
            translator,
            chunks: Some(reply.chunks),
            store: conversation.map(|conversation| (self.clone(), ctx.clone(), conversation)),
        };
        let events = futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(event) = state.pending.pop_front() {
                    return Some((Ok(event), state));
                }
                let chunks = state.chunks.as_mut()?;
                match chunks.next().await {
                    Some(Ok(chunk)) => state.pending.extend(state.translator.chunk(&chunk)),
                    Some(Err(e)) => {
                        state.chunks = None;
                        state.pending.push_back(state.translator.error(&e));
                    }
                    None => {
                        state.chunks = None;
                        let (events, object) = state.translator.finish();
                        if let Some((gateway, ctx, conversation)) = state.store.take() {
                            gateway.store_response(&ctx, &object, conversation).await;
                        }
                        state.pending.extend(events);
                    }
                }
            }
        });
        Ok(StreamReply { meta: reply.meta, chunks: events.boxed() })
    }

    /// `GET /v1/responses/{id}`: a response the caller's tenant stored; [`Error::NotFound`] otherwise, for
    /// another tenant's too.
    pub async fn stored_response(&self, ctx: &RequestContext, id: &str) -> Result<ResponseObject> {
        Ok(self.load_response(ctx, id).await?.ok_or_else(|| not_found(id))?.response)
    }

    /// `DELETE /v1/responses/{id}`: forgets a stored response; [`Error::NotFound`] when there is none.
    pub async fn delete_response(&self, ctx: &RequestContext, id: &str) -> Result<()> {
        self.load_response(ctx, id).await?.ok_or_else(|| not_found(id))?;
        let cache = self.inner.cache.as_ref().ok_or_else(|| not_found(id))?;
        // The cache has no delete: an empty entry is the tombstone, and reads treat it as absent.
        cache.put(&stored_key(ctx.tenant.id(), id), Bytes::new(), STORED_RESPONSE_TTL).await
    }

    /// The chat request for `request`, after the conversation of its `previous_response_id`.
    async fn responses_chat(&self, ctx: &RequestContext, request: &ResponsesRequest) -> Result<ChatCompletionRequest> {
        let earlier = match &request.previous_response_id {
            None => Vec::new(),
            Some(id) => match self.load_response(ctx, id).await? {
                Some(stored) => stored.conversation,
                None => {
                    return Err(Error::invalid_request(
                        format!("no stored response `{id}` (unknown, expired, deleted, or stored with `store: false`)"),
                        Some("previous_response_id"),
                    ));
                }
            },
        };
        to_chat(request, &earlier)
    }

    fn response_ids(&self) -> ResponseIds {
        let created = self.inner.clock.now().0 / 1000;
        ResponseIds::new(self.inner.random.next_u64(), self.inner.random.next_u64(), created)
    }

    async fn load_response(&self, ctx: &RequestContext, id: &str) -> Result<Option<StoredResponse>> {
        let Some(cache) = &self.inner.cache else { return Ok(None) };
        let Some(entry) = cache.get(&stored_key(ctx.tenant.id(), id)).await? else { return Ok(None) };
        if entry.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&entry)
            .map(Some)
            .map_err(|e| Error::backend("cache", format!("stored response `{id}` is unreadable: {e}")))
    }

    /// Stores `object` with its conversation. A failure is logged, not returned: the answer is already the
    /// client's, and only a later `previous_response_id` will miss it.
    async fn store_response(&self, ctx: &RequestContext, object: &ResponseObject, mut conversation: Vec<ChatMessage>) {
        let Some(cache) = &self.inner.cache else { return };
        conversation.extend(object.as_chat_message());
        let stored = StoredResponse { response: object.clone(), conversation };
        let result = match serde_json::to_vec(&stored) {
            Ok(json) => {
                cache.put(&stored_key(ctx.tenant.id(), object.id()), Bytes::from(json), STORED_RESPONSE_TTL).await
            }
            Err(e) => Err(Error::backend("serialize", e)),
        };
        if let Err(e) = result {
            tracing::warn!(request_id = %ctx.request_id, error = %e, "responses: storing the response failed");
        }
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound { what: "response", id: id.to_owned() }
}

/// Where a streamed response stands: events waiting to be sent, the chat chunks still to come, and what
/// storing the final object needs.
struct StreamState {
    pending: VecDeque<ResponseStreamEvent>,
    translator: ResponseStreamTranslator,
    chunks: Option<BoxStream<'static, Result<crate::wire::ChatCompletionChunk>>>,
    store: Option<(Gateway, RequestContext, Vec<ChatMessage>)>,
}
