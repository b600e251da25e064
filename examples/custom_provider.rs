//! A host's own `Provider` in a running gateway: a rule-based echo answering the last message, plain and streamed.
//! `cargo run --example custom_provider`, then POST a chat for model `echo` with the key `sk-echo`.
use async_trait::async_trait;
use chitty::core::gateway::{Gateway, GatewayConfig, ModelConfig, RouteConfig, TenantConfig, api_key_digest};
use chitty::core::wire::{ChatCompletionRequest, ChatCompletionResponse, ChatMessage};
use chitty::core::{Capabilities, Capability, ChunkStream, Error, Provider, Result};
use chitty::providers::runtime::TokioRuntimeExt;
use chitty::providers::server::{Server, router, shutdown_signal};
use serde_json::json;

/// Answers every chat with "echo: " and the last message's text; a token is a word.
#[derive(Debug)]
struct Echo;

#[async_trait]
impl Provider for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Chat, Capability::ChatStream])
    }
    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatCompletionResponse> {
        let text = format!("echo: {}", request.messages.last().map(ChatMessage::text_content).unwrap_or_default());
        let words = |s: &str| s.split_whitespace().count();
        let (prompt, output) = (request.messages.iter().map(|m| words(&m.text_content())).sum::<usize>(), words(&text));
        let answer = json!({"id": "echo-1", "object": "chat.completion", "created": 0, "model": request.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}});
        serde_json::from_value(answer).map_err(|e| Error::backend("echo", e))
    }
    async fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream> {
        // A word per chunk, then the usage chunk the gateway settles budgets from.
        let chunks = self.chat(request).await?.to_chunks(1, true);
        Ok(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))))
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let route = RouteConfig::new("echo", "echo-rules");
    let models = vec![ModelConfig { routes: vec![route], ..ModelConfig::new("echo") }];
    let tenants = vec![TenantConfig::new("demo", &api_key_digest("sk-echo"))];
    let config = GatewayConfig { models, tenants, ..Default::default() };
    let gateway = Gateway::builder(config).provider(std::sync::Arc::new(Echo)).tokio_runtime().build().await?;
    let addr = std::env::var("CHITTY_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    Ok(Server::new(Default::default()).serve(listener, router(gateway, Default::default()), shutdown_signal()).await?)
}
