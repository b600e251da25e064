//! The Responses API translation on OpenAI's documented examples (kept as fixtures in
//! `tests/fixtures/openai_responses/`): each request becomes the chat request it means, and a chat answer comes
//! back as a response object with every field the documented one carries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chitty_core::wire::ChatCompletionResponse;
use chitty_core::wire::responses::{ResponseIds, ResponsesRequest, from_chat, to_chat};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/openai_responses/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn documented_requests_translate_to_the_chat_requests_they_mean() {
    for name in
        ["text_input", "instructions", "image_input", "function_tools", "function_call_output", "structured_output"]
    {
        let case = fixture(name);
        let request: ResponsesRequest = serde_json::from_value(case["request"].clone()).unwrap();
        let chat = serde_json::to_value(to_chat(&request, &[]).unwrap()).unwrap();
        assert_eq!(chat, case["chat"], "{name} ({})", case["doc"]);
        // The request round-trips through its own type unchanged.
        assert_eq!(serde_json::to_value(&request).unwrap(), case["request"], "{name}");
    }
}

#[test]
fn an_answer_carries_every_field_of_the_documented_response_object() {
    let documented = fixture("response_object")["response"].clone();
    let request: ResponsesRequest = serde_json::from_value(fixture("text_input")["request"].clone()).unwrap();
    let answer: ChatCompletionResponse = serde_json::from_value(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1741476542, "model": "gpt-4.1-2025-04-14",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "In a peaceful grove beneath a silver moon..."}}],
        "usage": {"prompt_tokens": 36, "completion_tokens": 87, "total_tokens": 123}
    }))
    .unwrap();
    let ours = from_chat(&request, &ResponseIds::new(1, 2, 1741476542), &answer).0;
    let (ours, documented) = (ours.as_object().unwrap(), documented.as_object().unwrap());
    let missing: Vec<&String> = documented.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(missing.is_empty(), "fields the documented object has and ours lacks: {missing:?}");
    for field in ["object", "status", "error", "incomplete_details", "usage", "text", "tool_choice", "truncation"] {
        assert_eq!(ours[field], documented[field], "{field}");
    }
    assert_eq!(ours["output"][0]["content"], documented["output"][0]["content"]);
    assert_eq!(ours["output"][0]["type"], "message");
    assert_eq!(ours["output"][0]["role"], "assistant");
}
