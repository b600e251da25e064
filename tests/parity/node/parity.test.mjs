// The official OpenAI Node SDK against the example gateway: it must not tell chitty from OpenAI.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import OpenAI from "openai";

const baseURL = process.env.CHITTY_PARITY_BASE_URL;
assert.ok(baseURL, "CHITTY_PARITY_BASE_URL must be set");
const client = new OpenAI({ baseURL, apiKey: "sk-chitty-demo", maxRetries: 0 });
const CHAT = "chitty-mock";
const EMBED = "chitty-mock-embed";
const unique = (t) => `${t} [${randomUUID()}]`;

test("models", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(CHAT) && ids.includes(EMBED));
});

test("chat", async () => {
  const r = await client.chat.completions.create({ model: CHAT, messages: [{ role: "user", content: unique("Hello") }] });
  assert.equal(r.object, "chat.completion");
  assert.ok(r.choices[0].message.content.length > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test("streaming deltas equal the plain answer; usage chunk with include_usage", async () => {
  const messages = [{ role: "user", content: unique("Tell me a story") }];
  const plain = await client.chat.completions.create({ model: CHAT, messages, temperature: 0.5 });
  const stream = await client.chat.completions.create({
    model: CHAT, messages, temperature: 0.5, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const text = chunks.filter((c) => c.choices.length).map((c) => c.choices[0].delta.content ?? "").join("");
  assert.equal(text, plain.choices[0].message.content);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, plain.usage.completion_tokens);
});

test("legacy completions", async () => {
  const r = await client.completions.create({ model: CHAT, prompt: unique("Say this is a test"), max_tokens: 7 });
  assert.equal(r.object, "text_completion");
  assert.ok(r.usage.completion_tokens <= 7);
});

test("streamed legacy completions equal the plain answer", async () => {
  const prompt = unique("Once upon a time");
  const plain = await client.completions.create({ model: CHAT, prompt, max_tokens: 12, temperature: 0.5 });
  const stream = await client.completions.create({
    model: CHAT, prompt, max_tokens: 12, temperature: 0.5, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.ok(chunks.length > 2 && chunks.every((c) => c.object === "text_completion"));
  assert.equal(chunks.filter((c) => c.choices.length).map((c) => c.choices[0].text).join(""), plain.choices[0].text);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, plain.usage.completion_tokens);
});

test("embeddings: float and base64", async () => {
  // The Node SDK asks for base64 by default and decodes it.
  const b = await client.embeddings.create({ model: EMBED, input: ["alpha", "beta"] });
  const f = await client.embeddings.create({ model: EMBED, input: ["alpha", "beta"], encoding_format: "float" });
  assert.equal(b.data.length, 2);
  assert.equal(b.data[0].embedding.length, f.data[0].embedding.length);
  b.data[0].embedding.forEach((x, i) => assert.ok(Math.abs(x - f.data[0].embedding[i]) < 1e-6));
  const raw = await client.embeddings.create({ model: EMBED, input: "alpha", encoding_format: "base64" });
  assert.equal(typeof raw.data[0].embedding, "string");
});

test("tools round trip", async () => {
  const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];
  const messages = [{ role: "user", content: unique("Weather in Paris?") }];
  const first = await client.chat.completions.create({ model: CHAT, messages, tools });
  const call = first.choices[0].message.tool_calls[0];
  assert.equal(first.choices[0].finish_reason, "tool_calls");
  assert.equal(call.function.name, "get_weather");
  messages.push(first.choices[0].message, { role: "tool", tool_call_id: call.id, content: '{"temp_c": 18}' });
  const second = await client.chat.completions.create({ model: CHAT, messages, tools });
  assert.ok(second.choices[0].message.content.length > 0);
});

test("error classes", async () => {
  const bad = new OpenAI({ baseURL, apiKey: "sk-not-a-key", maxRetries: 0 });
  await assert.rejects(bad.chat.completions.create({ model: CHAT, messages: [{ role: "user", content: "hi" }] }), OpenAI.AuthenticationError);
  await assert.rejects(client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }), OpenAI.NotFoundError);
  await assert.rejects(client.chat.completions.create({ model: CHAT, messages: [] }), (e) => e instanceof OpenAI.BadRequestError && e.param === "messages");
  const broke = new OpenAI({ baseURL, apiKey: "sk-chitty-broke", maxRetries: 0 });
  await assert.rejects(broke.chat.completions.create({ model: CHAT, messages: [{ role: "user", content: "hi" }] }), (e) => e instanceof OpenAI.RateLimitError && e.code === "insufficient_quota");
});

test("cache header on a repeated request", async () => {
  const messages = [{ role: "user", content: unique("cache me") }];
  const first = await client.chat.completions.create({ model: CHAT, messages, temperature: 0 }).withResponse();
  const second = await client.chat.completions.create({ model: CHAT, messages, temperature: 0 }).withResponse();
  assert.equal(first.response.headers.get("x-chitty-cache"), "miss");
  assert.equal(second.response.headers.get("x-chitty-cache"), "hit");
  assert.equal(first.data.choices[0].message.content, second.data.choices[0].message.content);
});

test("models.retrieve", async () => {
  const model = await client.models.retrieve(CHAT);
  assert.equal(model.id, CHAT);
  await assert.rejects(client.models.retrieve("no-such-model"), (e) => e instanceof OpenAI.NotFoundError);
});

test("responses: plain, streamed, stored and continued", async () => {
  const first = await client.responses.create({ model: CHAT, input: unique("Say hello") });
  assert.equal(first.object, "response");
  assert.ok(first.output_text.length > 0);
  assert.ok(first.usage.input_tokens > 0);

  let text = "";
  let completed;
  const stream = await client.responses.create({ model: CHAT, input: unique("Tell me a story"), stream: true });
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") text += event.delta;
    if (event.type === "response.completed") completed = event.response;
  }
  assert.ok(completed && text.length > 0);
  assert.equal(completed.output.map((o) => o.content?.map((c) => c.text).join("")).join(""), text);

  const follow = await client.responses.create({ model: CHAT, previous_response_id: first.id, input: "More?" });
  assert.equal(follow.previous_response_id, first.id);
  const stored = await client.responses.retrieve(first.id);
  assert.equal(stored.id, first.id);
});

test("responses: a function call answered in a follow-up, and structured output", async () => {
  const tools = [
    {
      type: "function",
      name: "get_weather",
      description: "Weather for a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  ];
  const first = await client.responses.create({ model: CHAT, input: unique("Weather in Paris?"), tools });
  const call = first.output.find((item) => item.type === "function_call");
  assert.ok(call && call.name === "get_weather" && call.call_id);
  const second = await client.responses.create({
    model: CHAT,
    previous_response_id: first.id,
    input: [{ type: "function_call_output", call_id: call.call_id, output: '{"temp_c": 18}' }],
    tools,
  });
  assert.ok(second.output_text.length > 0);

  const schema = {
    type: "object",
    properties: { name: { type: "string" }, population: { type: "integer" } },
    required: ["name", "population"],
    additionalProperties: false,
  };
  const structured = await client.responses.create({
    model: CHAT,
    input: unique("A city"),
    text: { format: { type: "json_schema", name: "city", schema, strict: true } },
  });
  const city = JSON.parse(structured.output_text);
  assert.equal(typeof city.name, "string");
  assert.ok(Number.isInteger(city.population));
});
