//! The Responses API on the chat pipeline: a request is passed through to a route whose provider speaks the
//! Responses API, or translated into a chat completion and back on any other route (`native.rs`), so
//! budgets, rate limits, caching, routing, fallback and events apply exactly as to chat. Stored responses live in the gateway's cache
//! backend under a key scoped to the tenant (Redis shares them between replicas), for
//! [`STORED_RESPONSE_TTL`].

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::native::{NativeAnswer, NativeRequest, NativeRoutes};
use super::stream::StreamReply;
use super::tenant::RequestContext;
use super::{Gateway, Reply};
use crate::error::{Error, Result};
use crate::keys::CacheKey;
use crate::wire::responses::{
    NativeChunk, ResponseIds, ResponseObject, ResponseStreamEvent, ResponseStreamTranslator, ResponsesRequest,
    from_chat, to_chat,
};
use crate::wire::{ChatCompletionRequest, ChatMessage, Role};

/// How long a stored response can be retrieved or continued (OpenAI keeps them 30 days). A cache backend
/// bounded in size may evict one sooner.
pub const STORED_RESPONSE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What is kept of a stored response: the object, and the conversation a follow-up continues (every turn,
/// this one's answer included, without the instructions, which OpenAI does not carry over).
#[derive(Serialize, Deserialize)]
struct StoredResponse {
    response: ResponseObject,
    conversation: Vec<ChatMessage>,
    /// The provider that made it, when it was passed through: a follow-up passes through only to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    native: Option<String>,
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
    /// `POST /v1/responses`, answered whole: passed through to a route whose provider speaks the Responses
    /// API ([`Capability::Responses`](crate::Capability::Responses)), the upstream's response object handed
    /// back as it came; translated to a chat completion and back on any other route.
    pub async fn responses(&self, ctx: &RequestContext, request: ResponsesRequest) -> Result<Reply<ResponseObject>> {
        let (req, conversation) = self.responses_request(ctx, &request, false).await?;
        let reply = self.responses_answer(ctx, req).await?;
        let (object, native) = match reply.body {
            NativeAnswer::Chat(chat) => (from_chat(&request, &self.response_ids(), &chat), None),
            NativeAnswer::Native(object) => (ResponseObject(object), reply.meta.provider.clone()),
            NativeAnswer::Events(_) => return Err(Error::backend("cache", "a stream's entry served a whole answer")),
        };
        if let Some(conversation) = conversation {
            self.store_response(ctx, &object, conversation, native).await;
        }
        Ok(Reply { body: object, meta: reply.meta })
    }

    /// `POST /v1/responses` with `"stream": true`: the Responses event sequence, relayed from a route that
    /// speaks the Responses API or translated from a chat stream. Errors before the first event come back as
    /// `Err`; a failure after it is the stream's last event (`error`).
    pub async fn responses_stream(
        &self,
        ctx: &RequestContext,
        request: ResponsesRequest,
    ) -> Result<StreamReply<ResponseStreamEvent>> {
        let (req, conversation) = self.responses_request(ctx, &request, true).await?;
        let reply = self.responses_events(ctx, req).await?;
        let translator = ResponseStreamTranslator::new(request, self.response_ids());
        let state = StreamState {
            pending: VecDeque::new(),
            translator,
            started: false,
            native: None,
            provider: reply.meta.provider.clone(),
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
                    Some(Ok(NativeChunk::Native(event))) => state.relay(event).await,
                    Some(Ok(NativeChunk::Chat(chunk))) => {
                        state.start();
                        state.pending.extend(state.translator.chunk(&chunk));
                    }
                    Some(Err(e)) => {
                        state.chunks = None;
                        let event = match &state.native {
                            Some(last) => native_error(&e, *last),
                            None => {
                                state.start();
                                state.translator.error(&e)
                            }
                        };
                        state.pending.push_back(event);
                    }
                    None => {
                        state.chunks = None;
                        if state.native.is_some() {
                            continue;
                        }
                        state.start();
                        let (events, object) = state.translator.finish();
                        if let Some((gateway, ctx, conversation)) = state.store.take() {
                            gateway.store_response(&ctx, &object, conversation, None).await;
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

    /// `request` in both forms (its body, and its chat translation after the conversation of its
    /// `previous_response_id`), and the turns to store with its answer when it is stored.
    async fn responses_request(
        &self,
        ctx: &RequestContext,
        request: &ResponsesRequest,
        stream: bool,
    ) -> Result<(NativeRequest, Option<Vec<ChatMessage>>)> {
        let (earlier, native) = match &request.previous_response_id {
            None => (Vec::new(), NativeRoutes::Any),
            Some(id) => match self.load_response(ctx, id).await? {
                // Only the upstream that made a response knows its id; the gateway knows every conversation.
                Some(stored) => (stored.conversation, stored.native.map_or(NativeRoutes::Never, NativeRoutes::Only)),
                None => {
                    return Err(Error::invalid_request(
                        format!("no stored response `{id}` (unknown, expired, deleted, or stored with `store: false`)"),
                        Some("previous_response_id"),
                    ));
                }
            },
        };
        let chat = to_chat(request, &earlier);
        // Copied only for a response that is kept.
        let conversation = request.wants_store().then(|| chat.as_ref().map(|c| turns(request, c)).unwrap_or_default());
        let body = serde_json::to_value(request).map_err(|e| Error::backend("serialize", e))?;
        Ok((NativeRequest::new(request.model.clone(), body, chat, native, stream), conversation))
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
    /// `native` names the provider that made it, when it was passed through.
    async fn store_response(
        &self,
        ctx: &RequestContext,
        object: &ResponseObject,
        mut conversation: Vec<ChatMessage>,
        native: Option<String>,
    ) {
        let Some(cache) = &self.inner.cache else { return };
        conversation.extend(object.as_chat_message());
        let stored = StoredResponse { response: object.clone(), conversation, native };
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

/// Where a streamed response stands: events waiting to be sent, the chunks still to come, and what storing
/// the final object needs.
struct StreamState {
    pending: VecDeque<ResponseStreamEvent>,
    translator: ResponseStreamTranslator,
    /// Whether the translator has sent its opening events.
    started: bool,
    /// The last `sequence_number` of a relayed native stream, once one is relayed.
    native: Option<u64>,
    /// The provider that answered.
    provider: Option<String>,
    chunks: Option<BoxStream<'static, Result<NativeChunk>>>,
    store: Option<(Gateway, RequestContext, Vec<ChatMessage>)>,
}

impl StreamState {
    /// Opens a translated stream (once).
    fn start(&mut self) {
        if !std::mem::replace(&mut self.started, true) {
            self.pending.extend(self.translator.start());
        }
    }

    /// Relays an upstream event; the completed response is stored when it is to be kept.
    async fn relay(&mut self, event: Value) {
        let sequence = event.get("sequence_number").and_then(Value::as_u64);
        self.native = Some(sequence.or(self.native).unwrap_or(0));
        if event.get("type").and_then(Value::as_str) == Some("response.completed")
            && let Some(response) = event.get("response")
            && let Some((gateway, ctx, conversation)) = self.store.take()
        {
            let object = ResponseObject(response.clone());
            gateway.store_response(&ctx, &object, conversation, self.provider.clone()).await;
        }
        self.pending.push_back(ResponseStreamEvent(event));
    }
}

/// The `error` event that ends a relayed stream failing after its event `last`.
fn native_error(error: &Error, last: u64) -> ResponseStreamEvent {
    let code = error.code().unwrap_or(error.error_type());
    ResponseStreamEvent(serde_json::json!({
        "type": "error",
        "code": code,
        "message": error.to_string(),
        "param": null,
        "sequence_number": last + 1,
    }))
}
