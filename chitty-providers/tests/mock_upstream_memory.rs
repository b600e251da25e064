//! The mock OpenAI upstream that the offline example gateway serves from keeps nothing per request: its
//! memory stays flat over 20,000 requests, and a client cannot make it build an embedding of a billion floats.

#![cfg(feature = "openai")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use chitty_core::Provider;
use chitty_core::wire::{ChatCompletionRequest, ChatMessage, EmbeddingInput, EmbeddingRequest};
use chitty_providers::openai::OpenAiProvider;
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::MockOpenAi;

/// Counts the bytes allocated and not yet freed by the whole test process.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// A global allocator is unsafe to implement; this one only counts and forwards to the system allocator.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

async fn send(provider: &Arc<OpenAiProvider>, requests: usize) {
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let provider = provider.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..requests / 4 {
                let request = ChatCompletionRequest {
                    model: "chitty-mock".into(),
                    messages: vec![ChatMessage::user(format!("request {worker}-{i}: say something"))],
                    ..Default::default()
                };
                provider.chat(request).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_upstream_keeps_nothing_per_request_and_refuses_huge_embeddings() {
    let server = MockOpenAi::serve(Arc::new(MockProvider::new("mock"))).await.unwrap();
    let provider = Arc::new(OpenAiProvider::builder("up").with_base_url(server.base_url()).build().unwrap());
    // Warm up: connection pools, buffers and lazy statics reach their size.
    send(&provider, 2_000).await;
    let before = LIVE.load(Ordering::Relaxed);
    send(&provider, 20_000).await;
    let grown = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(server.received(), 22_000);
    assert!(server.requests().is_empty(), "recording is opt-in");
    // Keeping each request cost about 1.3 KB: 20,000 of them would be 26 MB.
    assert!(grown < 1_000_000, "the mock kept {grown} bytes over 20,000 requests");

    let huge = EmbeddingRequest {
        model: "chitty-mock-embed".into(),
        input: EmbeddingInput::Text("x".into()),
        dimensions: Some(1_000_000_000),
        ..Default::default()
    };
    let before = LIVE.load(Ordering::Relaxed);
    let err = provider.embeddings(huge).await.unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    assert!(err.to_string().contains("dimensions"), "{err}");
    assert!(LIVE.load(Ordering::Relaxed) - before < 1_000_000, "no vector was built");
}
