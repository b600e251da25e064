//! Arbitrary bytes as a chat request body: parse, derive the cache key, estimate, re-serialize. Never panics.
#![no_main]

use chitty_core::keys::{CacheScope, chat_key};
use chitty_core::wire::ChatCompletionRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ChatCompletionRequest>(data) {
        let _ = chat_key(CacheScope::Tenant("t"), &req);
        let _ = chitty_core::tokens::estimate_chat_prompt(&req);
        let bytes = serde_json::to_vec(&req).expect("a parsed request serializes");
        let again: ChatCompletionRequest = serde_json::from_slice(&bytes).expect("and parses back");
        assert_eq!(chat_key(CacheScope::Tenant("t"), &again), chat_key(CacheScope::Tenant("t"), &req));
    }
});
