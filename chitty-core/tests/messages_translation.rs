//! Anthropic's Messages API translated to chat completions and back, on Anthropic's documented examples
//! (`tests/fixtures/anthropic/`), and the stream translator over a chunk sequence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use chitty_core::Error;
use chitty_core::wire::messages::anthropic_error_type;
use chitty_core::wire::{
    AnthropicErrorEnvelope, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, MessagesRequest,
    MessagesResponse, MessagesStreamEvent, MessagesStreamTranslator,
};
use serde_json::{Value, json};

fn fixtures(suffix: &str) -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn documented_requests_translate_to_the_expected_chat_requests() {
    let cases = fixtures(".request.json");
    assert_eq!(cases.len(), 6, "basic, system, multi-turn, tool use with a result, image, stop sequences");
    for (name, case) in cases {
        let request: MessagesRequest = serde_json::from_value(case["anthropic"].clone()).unwrap();
        // The Anthropic request itself survives parsing and writing unchanged.
        assert_eq!(serde_json::to_value(&request).unwrap(), case["anthropic"], "{name}: wire round trip");
        let chat = request.into_chat().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(serde_json::to_value(&chat).unwrap(), case["chat"], "{name}");
        // And the chat request is one the OpenAI side reads back as the same.
        let reread: ChatCompletionRequest = serde_json::from_value(case["chat"].clone()).unwrap();
        assert_eq!(reread, chat, "{name}");
    }
}

#[test]
fn documented_answers_round_trip_through_chat() {
    let cases = fixtures(".response.json");
    assert_eq!(cases.len(), 4, "end_turn, tool_use, stop_sequence, max_tokens");
    for (name, case) in cases {
        let message: MessagesResponse = serde_json::from_value(case["anthropic"].clone()).unwrap();
        assert_eq!(serde_json::to_value(&message).unwrap(), case["anthropic"], "{name}: wire round trip");
        let chat = message.to_chat(1_700_000_000);
        assert_eq!(serde_json::to_value(&chat).unwrap(), case["chat"], "{name}: to chat");
        let chat: ChatCompletionResponse = serde_json::from_value(case["chat"].clone()).unwrap();
        let back = MessagesResponse::from_chat(&chat);
        assert_eq!(serde_json::to_value(&back).unwrap(), case["anthropic"], "{name}: from chat");
    }
}

#[test]
fn chat_ids_become_message_ids() {
    let chat: ChatCompletionResponse = serde_json::from_value(json!({
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": null}]
    }))
    .unwrap();
    let message = MessagesResponse::from_chat(&chat);
    assert_eq!(message.id, "msg_abc");
    assert!(message.content.is_empty(), "no empty text block");
    assert_eq!(message.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!((message.usage.input_tokens, message.usage.output_tokens), (0, 0));
}

fn request(body: Value) -> Result<ChatCompletionRequest, Error> {
    serde_json::from_value::<MessagesRequest>(body).unwrap().into_chat()
}

fn param(result: Result<ChatCompletionRequest, Error>) -> Option<String> {
    match result {
        Err(Error::InvalidRequest { param, .. }) => param,
        other => panic!("expected an invalid request, got {other:?}"),
    }
}

#[test]
fn what_chat_cannot_carry_is_refused_naming_the_parameter() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let missing = request(json!({"model": "m", "messages": user}));
    assert!(matches!(&missing, Err(e) if e.to_string().contains("max_tokens")));
    assert_eq!(param(missing).as_deref(), Some("max_tokens"));
    assert_eq!(param(request(json!({"model": "m", "max_tokens": 0, "messages": user}))).as_deref(), Some("max_tokens"));
    let document =
        json!([{"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "x"}}]}]);
    assert_eq!(
        param(request(json!({"model": "m", "max_tokens": 5, "messages": document}))).as_deref(),
        Some("messages")
    );
    let system = json!({"model": "m", "max_tokens": 5, "messages": user, "system": [{"type": "image"}]});
    assert_eq!(param(request(system)).as_deref(), Some("system"));
    let web = json!([{"type": "web_search_20250305", "name": "web_search"}]);
    assert_eq!(
        param(request(json!({"model": "m", "max_tokens": 5, "messages": user, "tools": web}))).as_deref(),
        Some("tools")
    );
    let choice = json!({"type": "tool"});
    let r = request(json!({"model": "m", "max_tokens": 5, "messages": user, "tool_choice": choice}));
    assert_eq!(param(r).as_deref(), Some("tool_choice"));
    let role = json!([{"role": "system", "content": "x"}]);
    assert_eq!(param(request(json!({"model": "m", "max_tokens": 5, "messages": role}))).as_deref(), Some("messages"));
    let file = json!([{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]);
    assert_eq!(param(request(json!({"model": "m", "max_tokens": 5, "messages": file}))).as_deref(), Some("messages"));
    // count_tokens takes no max_tokens.
    let count: MessagesRequest = serde_json::from_value(json!({"model": "m", "messages": user})).unwrap();
    assert!(count.into_chat_prompt().is_ok());
}

#[test]
fn tool_choices_and_thinking_blocks() {
    let user = json!([{"role": "user", "content": "hi"}]);
    for (choice, expected) in [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "none"}), json!("none")),
        (json!({"type": "tool", "name": "f"}), json!({"type": "function", "function": {"name": "f"}})),
    ] {
        let chat = request(json!({"model": "m", "max_tokens": 5, "messages": user, "tool_choice": choice})).unwrap();
        assert_eq!(chat.tool_choice, Some(expected));
        assert_eq!(chat.parallel_tool_calls, None);
    }
    // Thinking blocks the client sends back are dropped; chat has nowhere to put them.
    let turns = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                          {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    ]);
    let chat = request(json!({"model": "m", "max_tokens": 5, "messages": turns})).unwrap();
    let messages = serde_json::to_value(&chat.messages).unwrap();
    assert_eq!(
        messages[1],
        json!({"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
    );
    assert_eq!(
        messages[2],
        json!({"role": "tool", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "tool_call_id": "t1"})
    );
}

/// A chat completion that says something and then calls a tool, as the chunks a provider streams it in.
fn text_then_tool_chunks() -> (ChatCompletionResponse, Vec<ChatCompletionChunk>) {
    let answer: ChatCompletionResponse = serde_json::from_value(json!({
        "id": "chatcmpl-7", "object": "chat.completion", "created": 1, "model": "chitty-mock",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Let me look.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29, "prompt_tokens_details": {"cached_tokens": 5}}
    }))
    .unwrap();
    let mut chunks = answer.to_chunks(1, true);
    // Real upstreams stream the arguments in pieces after a first fragment with the id and name.
    let tool_chunk =
        chunks.iter().position(|c| c.choices.first().is_some_and(|ch| ch.delta.tool_calls.is_some())).unwrap();
    let mut first = chunks[tool_chunk].clone();
    let mut second = first.clone();
    {
        let call = &mut first.choices[0].delta.tool_calls.as_mut().unwrap()[0];
        call.function.as_mut().unwrap().arguments = Some("{\"city\":".into());
        let call = &mut second.choices[0].delta.tool_calls.as_mut().unwrap()[0];
        (call.id, call.kind) = (None, None);
        let f = call.function.as_mut().unwrap();
        (f.name, f.arguments) = (None, Some("\"Paris\"}".into()));
        second.choices[0].delta.role = None;
    }
    chunks.splice(tool_chunk..=tool_chunk, [first, second]);
    (answer, chunks)
}

fn translate(chunks: &[ChatCompletionChunk]) -> Vec<MessagesStreamEvent> {
    let mut translator = MessagesStreamTranslator::new();
    let mut events: Vec<_> = chunks.iter().flat_map(|c| translator.push(c)).collect();
    events.extend(translator.finish());
    assert!(translator.finish().is_empty(), "finish is idempotent");
    events
}

#[test]
fn a_stream_of_text_then_a_tool_call_becomes_anthropics_events_in_order() {
    let (answer, chunks) = text_then_tool_chunks();
    let events = translate(&chunks);
    let names: Vec<_> = events.iter().map(MessagesStreamEvent::name).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let json: Vec<Value> = events.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
    for (event, name) in json.iter().zip(&names) {
        assert_eq!(event["type"], *name, "the data's type is the event name");
    }
    assert_eq!(
        json[0],
        json!({"type": "message_start", "message": {"id": "msg_7", "type": "message", "role": "assistant",
            "model": "chitty-mock", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})
    );
    assert_eq!(
        json[2],
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        json[3],
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let "}})
    );
    assert_eq!(
        json[7],
        json!({"type": "content_block_start", "index": 1,
               "content_block": {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}})
    );
    assert_eq!(
        json[9],
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}})
    );
    assert_eq!(
        json[11],
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 15, "output_tokens": 9, "cache_read_input_tokens": 5}})
    );

    // Folding the events the way Anthropic's SDKs do gives the non-streamed answer.
    let mut folded = MessagesResponse::from_chat(&answer);
    let expected = serde_json::to_value(&folded).unwrap();
    folded.content.clear();
    let mut message = serde_json::to_value(&folded).unwrap();
    let mut partial = Vec::<String>::new();
    for event in &json {
        match event["type"].as_str().unwrap() {
            "content_block_start" => {
                message["content"].as_array_mut().unwrap().push(event["content_block"].clone());
                partial.push(String::new());
            }
            "content_block_delta" => {
                let i = event["index"].as_u64().unwrap() as usize;
                match event["delta"]["type"].as_str().unwrap() {
                    "text_delta" => {
                        let text = message["content"][i]["text"].as_str().unwrap().to_owned();
                        message["content"][i]["text"] = json!(text + event["delta"]["text"].as_str().unwrap());
                    }
                    _ => partial[i].push_str(event["delta"]["partial_json"].as_str().unwrap()),
                }
            }
            "content_block_stop" => {
                let i = event["index"].as_u64().unwrap() as usize;
                if !partial[i].is_empty() {
                    message["content"][i]["input"] = serde_json::from_str(&partial[i]).unwrap();
                }
            }
            _ => {}
        }
    }
    assert_eq!(message, expected);
}

#[test]
fn a_stream_ending_on_a_stop_sequence_or_the_cap_says_so() {
    let (_, mut chunks) = text_then_tool_chunks();
    chunks.retain(|c| c.choices.first().is_none_or(|ch| ch.delta.tool_calls.is_none()));
    let last = chunks.iter_mut().rev().find(|c| !c.choices.is_empty()).unwrap();
    last.choices[0].finish_reason = Some("stop".into());
    last.choices[0].extra.insert("stop_reason".into(), json!("###"));
    let events = translate(&chunks);
    let delta = serde_json::to_value(&events[events.len() - 2]).unwrap();
    assert_eq!(delta["delta"], json!({"stop_reason": "stop_sequence", "stop_sequence": "###"}));

    let last = chunks.iter_mut().rev().find(|c| !c.choices.is_empty()).unwrap();
    last.choices[0].finish_reason = Some("length".into());
    let events = translate(&chunks);
    let delta = serde_json::to_value(&events[events.len() - 2]).unwrap();
    assert_eq!(delta["delta"], json!({"stop_reason": "max_tokens", "stop_sequence": null}));
}

#[test]
fn an_empty_stream_still_starts_and_stops() {
    let names: Vec<_> = translate(&[]).iter().map(MessagesStreamEvent::name).collect();
    assert_eq!(names, ["message_start", "ping", "message_delta", "message_stop"]);
}

#[test]
fn errors_use_anthropics_types_and_statuses() {
    let envelope = AnthropicErrorEnvelope::from_error(&Error::InvalidApiKey);
    assert_eq!(
        serde_json::to_value(&envelope).unwrap(),
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid API key"}})
    );
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ] {
        assert_eq!(anthropic_error_type(status), kind, "{status}");
    }
    let budget = Error::BudgetExhausted { needed: chitty_core::NanoUsd(2), remaining: chitty_core::NanoUsd(1) };
    assert_eq!(AnthropicErrorEnvelope::from_error(&budget).error.kind, "rate_limit_error");
}
