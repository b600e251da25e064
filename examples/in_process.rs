//! The gateway embedded in a program, no HTTP: a deterministic mock provider, an in-memory cache and budget.
//!
//! Run with `cargo run --example in_process`.

use std::sync::Arc;

use chitty::core::gateway::{
    Gateway, GatewayConfig, ModelConfig, RequestContext, RouteConfig, TenantConfig, api_key_digest,
};
use chitty::core::keys::{CacheDirective, CachePolicy};
use chitty::core::wire::{ChatCompletionRequest, ChatMessage};
use chitty::core::{Balance, BudgetStore, ModelPrice, NanoUsd, Timestamp};
use chitty::providers::memory::{CountingSink, MemoryBudgetStore, MemoryCache};
use chitty::providers::runtime::TokioRuntimeExt;
use chitty_testkit::mock::MockProvider;
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![RouteConfig::new("mock", "mock-1")],
            price: ModelPrice::from_micros_per_mtok(150_000, 600_000), // $0.15 / $0.60 per million tokens
            cache: CachePolicy::Deterministic,
            ..ModelConfig::new("chitty-mock")
        }],
        tenants: vec![TenantConfig {
            budget_nano_usd: Some(NanoUsd::from_micros(10_000)),
            ..TenantConfig::new("demo", &api_key_digest("sk-chitty-demo"))
        }],
        ..Default::default()
    };
    let budgets = Arc::new(MemoryBudgetStore::new());
    let events = Arc::new(CountingSink::new());
    let gateway = Gateway::builder(config)
        .provider(Arc::new(MockProvider::new("mock")))
        .cache(Arc::new(MemoryCache::new(64 << 20)))
        .budgets(budgets.clone())
        .events(events.clone())
        .tokio_runtime()
        .build()
        .await?;

    let ctx = RequestContext::new(gateway.authenticate("sk-chitty-demo")?, "example-1", CacheDirective::Default);
    let request = ChatCompletionRequest {
        model: "chitty-mock".into(),
        messages: vec![ChatMessage::user("Say hello to the gateway")],
        temperature: Some(0.0),
        ..Default::default()
    };

    let first = gateway.chat(&ctx, request.clone()).await?;
    println!("answer:   {}", first.body.choices[0].message.text_content());
    println!(
        "cache:    {}, reserved {}, charged {}, max_tokens set to {:?}",
        first.meta.cache.as_str(),
        first.meta.reserved,
        first.meta.cost,
        first.meta.max_tokens_set
    );

    let second = gateway.chat(&ctx, request.clone()).await?;
    println!("again:    cache {}, charged {}", second.meta.cache.as_str(), second.meta.cost);

    let mut stream = gateway.chat_stream(&ctx, ChatCompletionRequest { stream: Some(true), ..request }).await?.chunks;
    print!("streamed: ");
    while let Some(chunk) = stream.next().await {
        if let Some(text) = chunk?.choices.first().and_then(|c| c.delta.content.clone()) {
            print!("{text}");
        }
    }
    println!();

    // Limits live with the tenant (configuration or access store); the budget store keeps the spend.
    let limit = gateway.tenant("demo").and_then(|t| t.budget()).unwrap_or_default();
    let spend = budgets.spend("demo", Timestamp(0), gateway.now()).await?;
    let balance = Balance::new(limit, spend.tenant());
    println!("budget:   spent {} of {}, {} left", balance.spent, balance.limit, balance.remaining());
    println!("events:   {:?}", events.counts());
    Ok(())
}
