//! A GitHub webhook endpoint: verifies, de-duplicates and queues deliveries in-process, answers
//! 202 at once, and logs each processed event from a worker.
//!
//! ```sh
//! GITHUB_WEBHOOK_SECRET=change-me cargo run --release --example webhook --features github
//! ```
//!
//! Listens on 127.0.0.1:8081 (override with `WEBHOOK_ADDR`) at `/api/github/webhooks`. During a
//! secret rotation, set `GITHUB_WEBHOOK_SECRET_PREVIOUS` to the old secret as well. The logs follow
//! `RUST_LOG` (default `info`).

use std::sync::Arc;

use chitty_github::events::WebhookEvent;
use chitty_github::intake::WebhookIntake;
use chitty_github::processor::{EventContext, Processor, handler_fn};
use chitty_github::queue::{InProcessQueue, QueueReceiver};
use chitty_github::server::{ConnectionLimits, Server, shutdown_signal, webhook_router};
use chitty_github::signature::WebhookSecret;

/// Where GitHub posts deliveries.
pub const WEBHOOK_PATH: &str = "/api/github/webhooks";
/// Deliveries held between the intake and the worker; beyond this the endpoint answers 503.
const QUEUE_CAPACITY: usize = 10_000;

/// The endpoint's router, the processor, and the queue it consumes. Signatures made with any of
/// `secrets` are accepted (the current one first, then one being rotated out).
pub fn build_app(secrets: &[&str]) -> chitty_github::Result<(axum::Router, Arc<Processor>, QueueReceiver)> {
    let (queue, deliveries) = InProcessQueue::bounded(QUEUE_CAPACITY);
    let secrets = secrets.iter().map(WebhookSecret::new);
    let intake = WebhookIntake::builder(secrets).queue(Arc::new(queue)).build()?;
    let processor = Processor::builder()
        .on(
            "ping",
            handler_fn(|context: EventContext| async move {
                if let WebhookEvent::Ping(ping) = context.event.as_ref() {
                    tracing::info!(hook_id = ?ping.hook_id, zen = %ping.zen, "ping");
                }
                Ok(())
            }),
        )
        .on_any(handler_fn(|context: EventContext| async move {
            let event = &context.event;
            tracing::info!(
                delivery = %context.delivery.id,
                event = %event.name(),
                action = event.action().unwrap_or("-"),
                installation = ?event.installation_id(),
                repository = event.repository().map(|r| r.full_name.as_str()).unwrap_or("-"),
                "processed webhook event"
            );
            Ok(())
        }))
        .build();
    Ok((webhook_router(WEBHOOK_PATH, Arc::new(intake)), Arc::new(processor), deliveries))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let Ok(secret) = std::env::var("GITHUB_WEBHOOK_SECRET") else {
        return Err(
            "GITHUB_WEBHOOK_SECRET is not set: export the secret configured on the GitHub webhook or App".into()
        );
    };
    // While a secret is being rotated, the previous one is still accepted.
    let previous = std::env::var("GITHUB_WEBHOOK_SECRET_PREVIOUS").ok().filter(|s| !s.is_empty());
    let mut secrets = vec![secret.as_str()];
    secrets.extend(previous.as_deref());
    let addr = std::env::var("WEBHOOK_ADDR").unwrap_or_else(|_| "127.0.0.1:8081".to_owned());
    let (router, processor, deliveries) = build_app(&secrets)?;
    // Handlers run on their own thread and runtime: parsing and handler work stay off the threads that ack.
    let worker = {
        let processor = processor.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new()
            .name("webhook-worker".into())
            .spawn(move || runtime.block_on(processor.run(deliveries)))?
    };

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!("listening on http://{addr}{WEBHOOK_PATH}");
    // Header, body and idle timeouts and a connection cap: slow or idle senders cannot hold the server.
    Server::new(ConnectionLimits::default()).serve(listener, router, shutdown_signal()).await?;
    // The server (and with it the queue's sender) is gone: the worker drains what is queued.
    if worker.join().is_err() {
        return Err("the worker thread panicked".into());
    }
    tracing::info!(stats = ?processor.stats(), "stopped");
    Ok(())
}
