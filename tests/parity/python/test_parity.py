"""The official OpenAI Python SDK against the example gateway: it must not tell chitty from OpenAI."""

import math
import os
import uuid

import openai
import pytest
from openai import OpenAI

BASE_URL = os.environ["CHITTY_PARITY_BASE_URL"]
client = OpenAI(base_url=BASE_URL, api_key="sk-chitty-demo", max_retries=0)
CHAT = "chitty-mock"
EMBED = "chitty-mock-embed"


def unique(text: str) -> str:
    return f"{text} [{uuid.uuid4()}]"


def test_models_lists_only_what_the_tenant_may_use():
    ids = [m.id for m in client.models.list()]
    assert CHAT in ids and EMBED in ids
    assert all(m.object == "model" for m in client.models.list().data)


def test_chat():
    r = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": unique("Hello")}])
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0


def test_streaming_deltas_equal_the_plain_answer_and_usage_comes_last():
    messages = [{"role": "user", "content": unique("Tell me a story")}]
    plain = client.chat.completions.create(model=CHAT, messages=messages, temperature=0.5, seed=None)
    stream = client.chat.completions.create(
        model=CHAT, messages=messages, temperature=0.5, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_include_usage_sends_no_usage_chunk():
    stream = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": unique("hi")}], stream=True
    )
    chunks = list(stream)
    assert chunks and all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason is not None


def test_legacy_completions():
    r = client.completions.create(model=CHAT, prompt=unique("Say this is a test"), max_tokens=7)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.usage.completion_tokens <= 7


def test_streamed_legacy_completions_equal_the_plain_answer():
    prompt = unique("Once upon a time")
    plain = client.completions.create(model=CHAT, prompt=prompt, max_tokens=12, temperature=0.5)
    stream = client.completions.create(
        model=CHAT, prompt=prompt, max_tokens=12, temperature=0.5, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert len(chunks) > 2 and all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def test_embeddings_base64_by_default_and_float():
    # The Python SDK asks for base64 unless told otherwise and decodes it back to floats.
    r = client.embeddings.create(model=EMBED, input=["alpha", "beta"])
    assert [d.index for d in r.data] == [0, 1]
    assert abs(_norm(r.data[0].embedding) - 1.0) < 1e-4
    f = client.embeddings.create(model=EMBED, input=["alpha", "beta"], encoding_format="float")
    assert [round(x, 6) for x in f.data[0].embedding] == [round(x, 6) for x in r.data[0].embedding]
    assert r.usage.prompt_tokens > 0


def test_tools_round_trip():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    messages = [{"role": "user", "content": unique("What's the weather in Paris?")}]
    first = client.chat.completions.create(model=CHAT, messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather"
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'})
    second = client.chat.completions.create(model=CHAT, messages=messages, tools=tools)
    assert second.choices[0].message.content
    assert second.choices[0].finish_reason in ("stop", "length")


def test_error_classes():
    bad = OpenAI(base_url=BASE_URL, api_key="sk-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"

    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT, messages=[])
    assert e.value.param == "messages"

    broke = OpenAI(base_url=BASE_URL, api_key="sk-chitty-broke", max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        broke.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "insufficient_quota"


def test_cache_header_on_a_repeated_request():
    messages = [{"role": "user", "content": unique("cache me")}]
    first = client.chat.completions.with_raw_response.create(model=CHAT, messages=messages, temperature=0)
    second = client.chat.completions.with_raw_response.create(model=CHAT, messages=messages, temperature=0)
    assert first.headers["x-chitty-cache"] == "miss"
    assert second.headers["x-chitty-cache"] == "hit"
    assert first.parse().choices[0].message.content == second.parse().choices[0].message.content
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    streamed = client.chat.completions.create(model=CHAT, messages=messages, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == second.parse().choices[0].message.content


def test_models_retrieve():
    model = client.models.retrieve(CHAT)
    assert model.id == CHAT and model.object == "model"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.code == "model_not_found"


def test_responses_plain():
    r = client.responses.create(model=CHAT, instructions="Be brief.", input=unique("Say hello"))
    assert r.object == "response" and r.status == "completed"
    assert r.output[0].type == "message" and r.output_text
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_responses_stream_deltas_equal_the_final_text():
    deltas, final = [], None
    numbers = []
    for event in client.responses.create(model=CHAT, input=unique("Tell me a story"), stream=True):
        numbers.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            final = event.response
    assert final is not None and final.output_text == "".join(deltas) != ""
    assert numbers == list(range(len(numbers)))
    assert final.usage.output_tokens > 0


def test_responses_stream_helper():
    with client.responses.stream(model=CHAT, input=unique("Another story")) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.output_text == text


def test_responses_function_call_and_its_output_in_a_follow_up():
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    first = client.responses.create(model=CHAT, input=unique("What's the weather in Paris?"), tools=tools)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and call.call_id
    second = client.responses.create(
        model=CHAT,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 18}'}],
        tools=tools,
    )
    assert second.output_text and second.previous_response_id == first.id


def test_responses_previous_response_id_and_retrieve_and_delete():
    first = client.responses.create(model=CHAT, input=unique("Remember this"))
    again = client.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == first.output_text
    follow = client.responses.create(model=CHAT, previous_response_id=first.id, input="And then?")
    assert follow.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=CHAT, previous_response_id=first.id, input="gone")
    assert e.value.param == "previous_response_id"


def test_responses_structured_output():
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int
        capital: bool

    r = client.responses.parse(model=CHAT, input=unique("A city"), text_format=City)
    assert isinstance(r.output_parsed, City)
