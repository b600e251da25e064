//! A scripted model for the review and triage tests: chat answers from a script, embeddings from
//! keywords, and every request recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chitty_core::wire::{
    ChatCompletionRequest, ChatCompletionResponse, EmbeddingInput, EmbeddingRequest, EmbeddingResponse,
};
use chitty_core::{Capabilities, Capability, Provider};
use serde_json::{Value, json};

/// Keywords and the axis each puts weight on, for embeddings: texts sharing keywords are similar.
const AXES: [&str; 4] = ["crash", "docs", "login", "slow"];

#[derive(Debug, Default)]
pub struct ScriptedModel {
    answers: Mutex<VecDeque<String>>,
    pub requests: Mutex<Vec<ChatCompletionRequest>>,
    pub embedding_requests: Mutex<Vec<EmbeddingRequest>>,
    /// How long each chat answer takes (real time), so that concurrent work overlaps.
    delay: Duration,
}

impl ScriptedModel {
    pub fn answering(answers: &[&str]) -> Arc<ScriptedModel> {
        let model = ScriptedModel::default();
        model.answers.lock().unwrap().extend(answers.iter().map(|a| (*a).to_owned()));
        Arc::new(model)
    }

    /// Like [`answering`](Self::answering), each answer taking `delay`.
    pub fn answering_after(delay: Duration, answers: &[&str]) -> Arc<ScriptedModel> {
        let model = ScriptedModel { delay, ..ScriptedModel::default() };
        model.answers.lock().unwrap().extend(answers.iter().map(|a| (*a).to_owned()));
        Arc::new(model)
    }

    pub fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The user message of call `n`: the data the model was shown.
    pub fn shown(&self, n: usize) -> Value {
        let request = &self.requests.lock().unwrap()[n];
        serde_json::from_str(&request.messages[1].text_content()).unwrap()
    }
}

fn embed(text: &str) -> Vec<f32> {
    let text = text.to_lowercase();
    AXES.iter().map(|axis| if text.contains(axis) { 1.0 } else { 0.0 }).chain([0.1]).collect()
}

#[async_trait]
impl Provider for ScriptedModel {
    fn name(&self) -> &str {
        "scripted"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Chat, Capability::Embeddings])
    }

    async fn chat(&self, request: ChatCompletionRequest) -> chitty_core::Result<ChatCompletionResponse> {
        let model = request.model.clone();
        self.requests.lock().unwrap().push(request);
        let answer = self.answers.lock().unwrap().pop_front().unwrap_or_else(|| "no more answers".to_owned());
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_790_000_000, "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": answer }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120 }
        }))
        .unwrap())
    }

    async fn embeddings(&self, request: EmbeddingRequest) -> chitty_core::Result<EmbeddingResponse> {
        let texts = match &request.input {
            EmbeddingInput::Text(text) => vec![text.clone()],
            EmbeddingInput::Texts(texts) => texts.clone(),
            _ => Vec::new(),
        };
        let model = request.model.clone();
        self.embedding_requests.lock().unwrap().push(request);
        let data: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(index, text)| json!({ "object": "embedding", "index": index, "embedding": embed(text) }))
            .collect();
        Ok(serde_json::from_value(json!({
            "object": "list", "data": data, "model": model,
            "usage": { "prompt_tokens": 10, "total_tokens": 10 }
        }))
        .unwrap())
    }
}
