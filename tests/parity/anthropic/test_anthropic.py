"""The official Anthropic Python SDK against the example gateway's Messages API (the mock model `chitty-mock`)."""

import os
import uuid

import anthropic
import pytest
from anthropic import Anthropic

# The OpenAI suites' base URL ends in /v1; Anthropic's SDK adds /v1 itself.
BASE_URL = os.environ["CHITTY_PARITY_BASE_URL"].removesuffix("/").removesuffix("/v1")
client = Anthropic(base_url=BASE_URL, api_key="sk-chitty-demo", max_retries=0)
MODEL = "chitty-mock"
TOOLS = [
    {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "input_schema": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "The city and state"}},
            "required": ["location"],
        },
    }
]


def unique(text: str) -> str:
    return f"{text} [{uuid.uuid4()}]"


def test_messages_create():
    r = client.messages.create(
        model=MODEL,
        max_tokens=256,
        system="You are a seasoned data scientist.",
        messages=[{"role": "user", "content": unique("Hello, world")}],
        metadata={"user_id": "parity"},
        # This SDK version has no sampling keywords; the API still takes the fields.
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 40},
    )
    assert r.type == "message" and r.role == "assistant"
    assert r.id.startswith("msg_")
    assert r.model == MODEL
    assert r.content[0].type == "text" and r.content[0].text
    assert r.stop_reason == "end_turn" and r.stop_sequence is None
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r._request_id


def test_max_tokens_cuts_the_answer():
    r = client.messages.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": unique("Tell me a story")}])
    assert r.stop_reason == "max_tokens"
    assert r.usage.output_tokens == 2


def test_multi_turn_with_blocks_and_stop_sequences():
    r = client.messages.create(
        model=MODEL,
        max_tokens=64,
        stop_sequences=["###"],
        messages=[
            {"role": "user", "content": "Hello there."},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi, I'm Claude. How can I help you?"}]},
            {"role": "user", "content": [{"type": "text", "text": unique("Can you explain LLMs in plain English?")}]},
        ],
    )
    assert r.content[0].text and r.stop_reason in ("end_turn", "stop_sequence")


def test_stream_text_and_final_message_equal_the_plain_answer():
    messages = [{"role": "user", "content": unique("Stream me a story")}]
    plain = client.messages.create(model=MODEL, max_tokens=256, messages=messages)
    with client.messages.stream(model=MODEL, max_tokens=256, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


def test_raw_stream_event_order():
    events = list(
        client.messages.create(
            model=MODEL, max_tokens=64, stream=True, messages=[{"role": "user", "content": unique("hi")}]
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:3] == ["message_start", "content_block_start", "content_block_delta"], kinds
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"], kinds
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert events[-2].delta.stop_reason == "end_turn" and events[-2].usage.output_tokens > 0


def test_tool_use_and_a_tool_result_round_trip():
    messages = [{"role": "user", "content": unique("What's the weather like in San Francisco?")}]
    first = client.messages.create(model=MODEL, max_tokens=256, tools=TOOLS, messages=messages)
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict) and call.id
    messages.append({"role": "assistant", "content": first.content})
    messages.append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "15 degrees"}]}
    )
    second = client.messages.create(model=MODEL, max_tokens=256, tools=TOOLS, messages=messages)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and second.content[0].text


def test_streamed_tool_use_parses_its_input():
    messages = [{"role": "user", "content": unique("Weather in Paris?")}]
    plain = client.messages.create(model=MODEL, max_tokens=256, tools=TOOLS, messages=messages)
    with client.messages.stream(
        model=MODEL, max_tokens=256, tools=TOOLS, tool_choice={"type": "any"}, messages=messages
    ) as stream:
        final = stream.get_final_message()
    call = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use"
    assert call.input == next(b for b in plain.content if b.type == "tool_use").input


def test_tool_choice_none_answers_in_text():
    r = client.messages.create(
        model=MODEL,
        max_tokens=64,
        tools=TOOLS,
        tool_choice={"type": "none"},
        messages=[{"role": "user", "content": unique("Weather in Rome?")}],
    )
    assert r.stop_reason == "end_turn" and r.content[0].type == "text"


def test_images_are_accepted():
    r = client.messages.create(
        model=MODEL,
        max_tokens=32,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "text", "text": unique("Describe this image.")},
                ],
            }
        ],
    )
    assert r.content[0].text


def test_count_tokens():
    small = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
    large = client.messages.count_tokens(
        model=MODEL, system="Be brief.", tools=TOOLS, messages=[{"role": "user", "content": "Hello " * 50}]
    )
    assert 0 < small.input_tokens < large.input_tokens


def test_cache_header_on_a_repeated_request():
    messages = [{"role": "user", "content": unique("cache me")}]
    create = client.messages.with_raw_response.create
    first = create(model=MODEL, max_tokens=64, messages=messages, extra_body={"temperature": 0})
    second = create(model=MODEL, max_tokens=64, messages=messages, extra_body={"temperature": 0})
    assert (first.headers["x-chitty-cache"], second.headers["x-chitty-cache"]) == ("miss", "hit")
    assert first.parse().content == second.parse().content
    assert first.headers["request-id"] != second.headers["request-id"]


def test_error_classes():
    bad = Anthropic(base_url=BASE_URL, api_key="sk-not-a-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401 and e.value.body["error"]["type"] == "authentication_error"

    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "not_found_error"

    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": "hi"}])

    with pytest.raises(anthropic.BadRequestError) as e:
        client.post("/v1/messages", cast_to=object, body={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert e.value.body["error"]["type"] == "invalid_request_error" and "max_tokens" in e.value.message

    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "robot", "content": "hi"}])

    # Budgets answer 429 and tell the SDK not to retry on its own (x-should-retry: false).
    broke = Anthropic(base_url=BASE_URL, api_key="sk-chitty-broke")
    with pytest.raises(anthropic.RateLimitError) as e:
        broke.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert e.value.response.headers["x-should-retry"] == "false"
