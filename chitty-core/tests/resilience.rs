//! Resilience in the request path, on virtual time: the retry budget, full jitter, the total deadline,
//! fallback before a stream's first token, and continuation of a stream broken after it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chitty_core::gateway::{Defaults, Gateway, GatewayConfig, ModelConfig, RouteConfig, TenantConfig, api_key_digest};
use chitty_core::gateway::{RequestContext, StreamReply};
use chitty_core::keys::CacheDirective;
use chitty_core::retry::RetryBudgetConfig;
use chitty_core::wire::{ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Role};
use chitty_core::{
    Capabilities, Capability, ChunkStream, Clock, Error, Event, EventSink, ManualClock, ManualTimer, ModelPrice,
    NanoUsd, Provider, RequestEvent, Result, SeededRandom, Spawner, Timer, Timestamp, UpstreamFailure,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::json;

const PRICE: ModelPrice = ModelPrice::from_micros_per_mtok(1_000_000, 4_000_000);

/// What a scripted provider does with one call.
#[derive(Debug, Clone)]
enum Step {
    /// Answers in full.
    Answer,
    /// Fails with this status.
    Fail(u16),
    /// Fails with 503 and this `Retry-After`.
    FailAfter(Duration),
    /// Never answers.
    Hang,
    /// Opens the stream, then breaks it before any output (after a role-only chunk when `true`).
    BreakFirst(bool),
    /// Streams this many words, then breaks the stream.
    Cut(usize),
    /// Streams a word, then the start of a tool call, then breaks the stream.
    CutInToolCall,
}

/// A provider that follows a script (`Answer` once it runs out) and keeps the requests it got.
#[derive(Debug)]
struct Scripted {
    name: &'static str,
    words: &'static [&'static str],
    steps: Mutex<VecDeque<Step>>,
    requests: Mutex<Vec<ChatCompletionRequest>>,
}

impl Scripted {
    fn new(name: &'static str, words: &'static [&'static str]) -> Arc<Scripted> {
        Arc::new(Scripted { name, words, steps: Mutex::default(), requests: Mutex::default() })
    }

    fn script(&self, steps: impl IntoIterator<Item = Step>) {
        self.steps.lock().unwrap().extend(steps);
    }

    fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn request(&self, i: usize) -> ChatCompletionRequest {
        self.requests.lock().unwrap()[i].clone()
    }

    /// The next step, the request recorded.
    fn begin(&self, request: &ChatCompletionRequest) -> Step {
        self.requests.lock().unwrap().push(request.clone());
        self.steps.lock().unwrap().pop_front().unwrap_or(Step::Answer)
    }

    fn id(&self) -> String {
        format!("chatcmpl-{}-{}", self.name, self.calls())
    }

    /// The answer's pieces: a continuation (a request ending in an assistant message) starts with a space.
    fn pieces(&self, request: &ChatCompletionRequest) -> Vec<String> {
        let continuing = request.messages.last().is_some_and(|m| m.role == Role::Assistant);
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| if i == 0 && !continuing { (*w).to_owned() } else { format!(" {w}") })
            .collect()
    }

    fn chunk(&self, id: &str, delta: serde_json::Value, finish: Option<&str>) -> Result<ChatCompletionChunk> {
        Ok(serde_json::from_value(json!({
            "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000 + self.calls() as u64,
            "model": format!("{}-upstream", self.name),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
        .unwrap())
    }

    fn usage_chunk(&self, id: &str, completion: usize) -> Result<ChatCompletionChunk> {
        Ok(serde_json::from_value(json!({
            "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000 + self.calls() as u64,
            "model": format!("{}-upstream", self.name), "choices": [],
            "usage": {"prompt_tokens": 30, "completion_tokens": completion, "total_tokens": 30 + completion},
        }))
        .unwrap())
    }

    fn broken(&self) -> Error {
        Error::upstream(self.name, UpstreamFailure::Interrupted, "connection reset mid-stream")
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Chat, Capability::ChatStream])
    }

    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatCompletionResponse> {
        match self.begin(&request) {
            Step::Fail(status) => Err(Error::upstream_status(self.name, status, "scripted failure", None)),
            Step::FailAfter(wait) => Err(Error::upstream_status(self.name, 503, "overloaded", Some(wait))),
            Step::Hang => futures::future::pending().await,
            _ => Ok(serde_json::from_value(json!({
                "id": self.id(), "object": "chat.completion", "created": 1, "model": request.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.pieces(&request).concat()},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 30, "completion_tokens": self.words.len(), "total_tokens": 30 + self.words.len()},
            }))
            .unwrap()),
        }
    }

    async fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream> {
        let step = self.begin(&request);
        let id = self.id();
        let role = self.chunk(&id, json!({"role": "assistant", "content": ""}), None);
        let words: Vec<_> =
            self.pieces(&request).into_iter().map(|w| self.chunk(&id, json!({"content": w}), None)).collect();
        let items: Vec<Result<ChatCompletionChunk>> = match step {
            Step::Fail(status) => return Err(Error::upstream_status(self.name, status, "scripted failure", None)),
            Step::FailAfter(wait) => return Err(Error::upstream_status(self.name, 503, "overloaded", Some(wait))),
            Step::Hang => futures::future::pending().await,
            Step::BreakFirst(false) => vec![Err(self.broken())],
            Step::BreakFirst(true) => vec![role, Err(self.broken())],
            Step::Cut(n) => {
                std::iter::once(role).chain(words.into_iter().take(n)).chain([Err(self.broken())]).collect()
            }
            Step::CutInToolCall => {
                let call = json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "lookup", "arguments": "{\"q\": \"par"}}]});
                let first = words.into_iter().next().unwrap();
                vec![role, first, self.chunk(&id, call, None), Err(self.broken())]
            }
            Step::Answer => {
                let finish = self.chunk(&id, json!({}), Some("stop"));
                let usage = self.usage_chunk(&id, self.words.len());
                std::iter::once(role).chain(words).chain([finish, usage]).collect()
            }
        };
        Ok(Box::pin(futures::stream::iter(items)))
    }
}

/// Keeps every event.
#[derive(Debug, Default)]
struct Events(Mutex<Vec<Event>>);

#[async_trait]
impl EventSink for Events {
    async fn record(&self, event: Event) -> Result<()> {
        self.0.lock().unwrap().push(event);
        Ok(())
    }
}

impl Events {
    fn retries(&self, outcome: &str) -> usize {
        let events = self.0.lock().unwrap();
        events.iter().filter(|e| matches!(e, Event::Retry { outcome: o, .. } if *o == outcome)).count()
    }

    fn continuations(&self) -> Vec<(&'static str, Option<String>)> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match e {
                Event::StreamContinuation { outcome, to_route, .. } => Some((*outcome, to_route.clone())),
                _ => None,
            })
            .collect()
    }

    fn requests(&self) -> Vec<RequestEvent> {
        let events = self.0.lock().unwrap();
        events.iter().filter_map(|e| if let Event::Request(r) = e { Some(r.clone()) } else { None }).collect()
    }
}

/// A timer over the manual clock that also notes every wait.
#[derive(Debug)]
struct RecordingTimer {
    inner: ManualTimer,
    waits: Arc<Mutex<Vec<Duration>>>,
}

impl Timer for RecordingTimer {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.waits.lock().unwrap().push(duration);
        self.inner.sleep(duration)
    }
}

#[derive(Debug)]
struct TokioSpawner;

impl Spawner for TokioSpawner {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        tokio::spawn(future);
    }
}

struct Harness {
    gateway: Gateway,
    clock: ManualClock,
    events: Arc<Events>,
    waits: Arc<Mutex<Vec<Duration>>>,
    ctx: RequestContext,
}

const T0: Timestamp = Timestamp(1_700_000_000_000);

async fn harness(providers: &[&Arc<Scripted>], defaults: Defaults, continue_streams: bool) -> Harness {
    let config = GatewayConfig {
        models: vec![ModelConfig {
            routes: providers.iter().map(|p| RouteConfig::new(p.name, format!("{}-upstream", p.name))).collect(),
            price: PRICE,
            continue_streams,
            ..ModelConfig::new("chat")
        }],
        tenants: vec![TenantConfig::new("acme", &api_key_digest("sk-acme"))],
        defaults,
        ..Default::default()
    };
    let clock = ManualClock::new(T0);
    let events = Arc::new(Events::default());
    let waits = Arc::new(Mutex::new(Vec::new()));
    let timer = RecordingTimer { inner: ManualTimer::new(clock.clone()), waits: waits.clone() };
    let mut builder = Gateway::builder(config)
        .runtime(Arc::new(clock.clone()), Arc::new(timer), Arc::new(TokioSpawner))
        .random(Arc::new(SeededRandom::new(11)))
        .events(events.clone());
    for p in providers {
        builder = builder.provider(Arc::clone(p) as Arc<dyn Provider>);
    }
    let gateway = builder.build().await.unwrap();
    let ctx = RequestContext::new(gateway.authenticate("sk-acme").unwrap(), "req", CacheDirective::Default);
    Harness { gateway, clock, events, waits, ctx }
}

/// Defaults whose breakers never open, so that only the retry budget and the deadline decide.
fn defaults() -> Defaults {
    Defaults { breaker_failures: 1_000_000, ..Defaults::default() }
}

fn chat(text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest { model: "chat".into(), messages: vec![ChatMessage::user(text)], ..Default::default() }
}

fn streamed(text: &str) -> ChatCompletionRequest {
    let mut req = chat(text);
    req.stream = Some(true);
    req
}

fn streamed_with_usage(text: &str) -> ChatCompletionRequest {
    let mut req: ChatCompletionRequest = serde_json::from_value(json!({
        "model": "chat", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": text}],
    }))
    .unwrap();
    req.model = "chat".into();
    req
}

async fn collect(reply: StreamReply) -> Vec<Result<ChatCompletionChunk>> {
    reply.chunks.collect().await
}

fn text_of(chunks: &[Result<ChatCompletionChunk>]) -> String {
    chunks
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .flat_map(|c| c.choices.iter().filter_map(|ch| ch.delta.content.clone()))
        .collect()
}

/// Waits for the spawned settlement of a stream (settled inline when the stream ends; this is belt and braces).
async fn settled(events: &Events, n: usize) -> Vec<RequestEvent> {
    for _ in 0..100 {
        let requests = events.requests();
        if requests.len() >= n {
            return requests;
        }
        tokio::task::yield_now().await;
    }
    events.requests()
}

#[tokio::test]
async fn the_retry_budget_refuses_past_its_share_and_recovers_as_the_window_slides() {
    let (primary, fallback) = (Scripted::new("primary", &["ok"]), Scripted::new("fallback", &["fine"]));
    // 20 % of requests, no reserve: of ten failing requests, the 5th and the 10th earn a retry.
    let budget = RetryBudgetConfig { percent: 20, min_per_sec: 0, window_secs: 10 };
    let h = harness(&[&primary, &fallback], Defaults { retry_budget: budget, ..defaults() }, false).await;
    primary.script(std::iter::repeat_n(Step::Fail(503), 100));
    for i in 0..10 {
        let reply = h.gateway.chat(&h.ctx, chat(&format!("q{i}"))).await.unwrap();
        assert_eq!(reply.meta.provider.as_deref(), Some("fallback"), "a refused retry falls back");
    }
    assert_eq!(primary.calls(), 10 + 2, "two retries granted");
    assert_eq!((h.events.retries("retry"), h.events.retries("retry_budget_exhausted")), (2, 8));
    assert_eq!(fallback.calls(), 10, "every request still answered");
    let attempts: Vec<u32> = h.events.requests().iter().map(|r| r.attempts).collect();
    assert_eq!(attempts, [2, 2, 2, 2, 3, 2, 2, 2, 2, 3], "attempts per request, in the request event");
}

#[tokio::test]
async fn the_reserve_is_spent_then_comes_back_with_the_window() {
    let (primary, fallback) = (Scripted::new("primary", &["ok"]), Scripted::new("fallback", &["fine"]));
    // No share, a reserve of 1 per second over 5 s: five retries per window.
    let budget = RetryBudgetConfig { percent: 0, min_per_sec: 1, window_secs: 5 };
    let h = harness(&[&primary, &fallback], Defaults { retry_budget: budget, ..defaults() }, false).await;
    primary.script(std::iter::repeat_n(Step::Fail(503), 100));
    for i in 0..8 {
        h.gateway.chat(&h.ctx, chat(&format!("q{i}"))).await.unwrap();
    }
    assert_eq!((h.events.retries("retry"), h.events.retries("retry_budget_exhausted")), (5, 3));
    assert_eq!(primary.calls(), 8 + 5);
    // Still inside the window: refused.
    h.gateway.chat(&h.ctx, chat("again")).await.unwrap();
    assert_eq!(h.events.retries("retry_budget_exhausted"), 4);
    // Once the window has slid past the spent retries, the reserve is back.
    h.clock.advance(Duration::from_secs(6));
    for i in 0..5 {
        h.gateway.chat(&h.ctx, chat(&format!("later{i}"))).await.unwrap();
    }
    assert_eq!(h.events.retries("retry"), 5 + 5, "five more retries after the window slid");
    h.gateway.chat(&h.ctx, chat("one more")).await.unwrap();
    assert_eq!(h.events.retries("retry_budget_exhausted"), 5, "and then refused again");
}

#[tokio::test]
async fn retry_waits_are_full_jitter_within_their_doubling_bound() {
    let primary = Scripted::new("primary", &["ok"]);
    let d = Defaults {
        attempts_per_route: 4,
        backoff_base_ms: 100,
        backoff_max_ms: 1_000,
        retry_budget: RetryBudgetConfig { percent: 100, min_per_sec: 1_000, window_secs: 10 },
        ..defaults()
    };
    let h = harness(&[&primary], d, false).await;
    const REQUESTS: usize = 300;
    primary.script(std::iter::repeat_n(Step::Fail(502), 4 * REQUESTS));
    for i in 0..REQUESTS {
        let err = h.gateway.chat(&h.ctx, chat(&format!("q{i}"))).await.unwrap_err();
        assert_eq!(err.status(), 502);
    }
    assert_eq!(primary.calls(), 4 * REQUESTS);
    let waits = h.waits.lock().unwrap().clone();
    assert_eq!(waits.len(), 3 * REQUESTS, "three retries per request, each after one wait");
    for (retry, bound) in [(0, 100u64), (1, 200), (2, 400)] {
        let of_retry: Vec<u64> = waits.iter().skip(retry).step_by(3).map(|w| w.as_millis() as u64).collect();
        assert!(of_retry.iter().all(|w| *w <= bound), "retry {}: a wait past {bound} ms: {of_retry:?}", retry + 1);
        let (min, max) = (*of_retry.iter().min().unwrap(), *of_retry.iter().max().unwrap());
        assert!(min < bound / 10 && max > bound * 9 / 10, "retry {}: {min}..{max} ms is not spread", retry + 1);
        let mean = of_retry.iter().sum::<u64>() as f64 / of_retry.len() as f64;
        assert!((mean - bound as f64 / 2.0).abs() < bound as f64 * 0.1, "retry {}: mean {mean}", retry + 1);
    }
}

#[tokio::test]
async fn the_deadline_shortens_the_attempt_and_nothing_starts_after_it() {
    let (slow, fallback) = (Scripted::new("slow", &["ok"]), Scripted::new("fallback", &["fine"]));
    let d = Defaults { timeout_ms: 10_000, deadline_ms: 3_000, ..defaults() };
    let h = harness(&[&slow, &fallback], d, false).await;
    slow.script([Step::Hang]);
    let err = h.gateway.chat(&h.ctx, chat("hello")).await.unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err:?}");
    assert_eq!((err.status(), err.code()), (504, Some("deadline_exceeded")));
    let envelope = serde_json::to_value(err.to_envelope()).unwrap();
    assert_eq!(envelope["error"]["code"], "deadline_exceeded");
    assert_eq!(h.clock.now(), T0.plus(Duration::from_secs(3)), "the attempt waited the deadline, not 10 s");
    assert_eq!(*h.waits.lock().unwrap(), [Duration::from_secs(3)]);
    assert_eq!(fallback.calls(), 0, "no fallback starts past the deadline");
    assert_eq!(h.events.requests()[0].error_code, Some("deadline_exceeded"));

    // With time left the same hang is an ordinary timeout, and the fallback answers.
    slow.script([Step::Hang]);
    let d = Defaults { timeout_ms: 1_000, deadline_ms: 3_000, attempts_per_route: 1, ..defaults() };
    let h = harness(&[&slow, &fallback], d, false).await;
    let reply = h.gateway.chat(&h.ctx, chat("hello")).await.unwrap();
    assert_eq!((reply.meta.provider.as_deref(), reply.meta.attempts), (Some("fallback"), 2));
    assert_eq!(h.clock.now(), T0.plus(Duration::from_secs(1)));
}

#[tokio::test]
async fn no_retry_starts_when_its_wait_would_end_past_the_deadline() {
    let primary = Scripted::new("primary", &["ok"]);
    let d = Defaults { deadline_ms: 1_000, attempts_per_route: 10, backoff_max_ms: 5_000, ..defaults() };
    let h = harness(&[&primary], d, false).await;
    primary.script(std::iter::repeat_n(Step::FailAfter(Duration::from_millis(400)), 10));
    let err = h.gateway.chat(&h.ctx, chat("hello")).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (504, Some("deadline_exceeded")), "{err:?}");
    // Attempts at 0, 400 and 800 ms; a fourth would start at 1,200 ms.
    assert_eq!(primary.calls(), 3);
    assert_eq!(h.clock.now(), T0.plus(Duration::from_millis(800)), "no wait past the deadline");
    assert_eq!((h.events.retries("retry"), h.events.retries("deadline_exceeded")), (2, 1));
}

#[tokio::test]
async fn a_stream_failing_before_its_first_token_falls_back_unseen() {
    for role_first in [false, true] {
        let (primary, fallback) = (Scripted::new("primary", &["never"]), Scripted::new("fallback", &["one", "two"]));
        let h = harness(&[&primary, &fallback], Defaults { attempts_per_route: 1, ..defaults() }, false).await;
        primary.script([Step::BreakFirst(role_first)]);
        let reply = h.gateway.chat_stream(&h.ctx, streamed("hi")).await.unwrap();
        assert_eq!((reply.meta.provider.as_deref(), reply.meta.attempts), (Some("fallback"), 2));
        assert_eq!(reply.meta.route.as_deref(), Some("fallback/fallback-upstream"));
        let chunks = collect(reply).await;
        assert!(chunks.iter().all(Result::is_ok), "the client sees no error: {chunks:?}");
        assert_eq!(text_of(&chunks), "one two");
        assert!(chunks.iter().flatten().all(|c| c.id == "chatcmpl-fallback-1"), "only the fallback's chunks");
        assert_eq!((primary.calls(), fallback.calls()), (1, 1));
    }
}

#[tokio::test]
async fn a_stream_cut_after_its_first_token_is_not_continued_by_default() {
    let (primary, fallback) = (Scripted::new("primary", &["a", "b", "c"]), Scripted::new("fallback", &["x"]));
    let h = harness(&[&primary, &fallback], defaults(), false).await;
    primary.script([Step::Cut(2)]);
    let chunks = collect(h.gateway.chat_stream(&h.ctx, streamed("hi")).await.unwrap()).await;
    assert_eq!(text_of(&chunks), "a b");
    assert!(matches!(chunks.last(), Some(Err(e)) if e.status() == 502), "{chunks:?}");
    assert_eq!(fallback.calls(), 0);
    assert!(h.events.continuations().is_empty());
}

#[tokio::test]
async fn a_cut_stream_is_continued_on_the_next_route_as_one_answer() {
    let primary = Scripted::new("primary", &["The", "quick", "brown", "fox"]);
    let fallback = Scripted::new("fallback", &["jumps", "over"]);
    let h = harness(&[&primary, &fallback], defaults(), true).await;
    primary.script([Step::Cut(2)]);
    let request = streamed_with_usage("Tell me about foxes");
    let reply = h.gateway.chat_stream(&h.ctx, request.clone()).await.unwrap();
    assert_eq!(reply.meta.route.as_deref(), Some("primary/primary-upstream"));
    let chunks = collect(reply).await;
    assert!(chunks.iter().all(Result::is_ok), "one unbroken answer: {chunks:?}");
    let chunks: Vec<ChatCompletionChunk> = chunks.into_iter().map(Result::unwrap).collect();
    assert_eq!(text_of(&chunks.iter().cloned().map(Ok).collect::<Vec<_>>()), "The quick jumps over");
    let first = &chunks[0];
    assert_eq!(first.id, "chatcmpl-primary-1");
    assert!(
        chunks.iter().all(|c| c.id == first.id && c.created == first.created && c.model == first.model),
        "every chunk carries the first attempt's id, created and model"
    );
    let finishes = chunks.iter().flat_map(|c| &c.choices).filter(|c| c.finish_reason.is_some()).count();
    assert_eq!(finishes, 1, "one finish_reason");
    let roles = chunks.iter().flat_map(|c| &c.choices).filter(|c| c.delta.role.is_some()).count();
    assert_eq!(roles, 1, "the role is named once");

    // The fallback was asked to continue the text so far, as a trailing assistant message.
    let sent = fallback.request(0);
    assert_eq!(sent.model, "fallback-upstream");
    assert_eq!(sent.messages.len(), 2);
    assert_eq!((sent.messages[1].role.clone(), sent.messages[1].text_content()), (Role::Assistant, "The quick".into()));

    // Usage is both attempts': the broken one estimated from what it produced, the continuation's as reported.
    let broken_prompt = chitty_core::tokens::estimate_chat_prompt(&request);
    let broken_completion = 1 + "The quick".len() as u64;
    let usage = chunks.last().unwrap().usage.clone().expect("the client asked for usage");
    assert_eq!(usage.prompt_tokens, broken_prompt + 30);
    assert_eq!(usage.completion_tokens, broken_completion + 2);
    let usage_chunks = chunks.iter().filter(|c| c.usage.is_some()).count();
    assert_eq!(usage_chunks, 1);

    let events = settled(&h.events, 1).await;
    let event = &events[0];
    let expected = PRICE.cost(broken_prompt, broken_completion).saturating_add(PRICE.cost(30, 2));
    assert_eq!(event.cost, expected, "both attempts charged");
    assert!(event.cost > PRICE.cost(30, 2) && event.cost > NanoUsd::ZERO);
    assert_eq!((event.attempts, event.continuations, event.status), (2, 1, 200));
    assert_eq!((event.prompt_tokens, event.completion_tokens), (broken_prompt + 30, broken_completion + 2));
    assert_eq!(event.provider.as_deref(), Some("fallback"));
    assert_eq!(h.events.continuations(), [("continued", Some("fallback/fallback-upstream".to_owned()))]);
}

#[tokio::test]
async fn a_single_route_continues_itself() {
    let only = Scripted::new("only", &["one", "two", "three"]);
    let h = harness(&[&only], defaults(), true).await;
    only.script([Step::Cut(1)]);
    let chunks = collect(h.gateway.chat_stream(&h.ctx, streamed("count")).await.unwrap()).await;
    assert!(chunks.iter().all(Result::is_ok), "{chunks:?}");
    assert_eq!(text_of(&chunks), "one one two three");
    assert_eq!(only.calls(), 2);
    assert_eq!(only.request(1).messages.last().unwrap().text_content(), "one");
    assert_eq!(h.events.continuations(), [("continued", Some("only/only-upstream".to_owned()))]);
    // Without a usage request the client gets no usage chunk, but the event still counts both attempts.
    assert!(chunks.iter().flatten().all(|c| c.usage.is_none()));
    let events = settled(&h.events, 1).await;
    assert_eq!((events[0].attempts, events[0].continuations), (2, 1));
}

#[tokio::test]
async fn a_stream_cut_inside_a_tool_call_is_not_continued() {
    let (primary, fallback) = (Scripted::new("primary", &["Looking"]), Scripted::new("fallback", &["x"]));
    let h = harness(&[&primary, &fallback], defaults(), true).await;
    primary.script([Step::CutInToolCall]);
    let chunks = collect(h.gateway.chat_stream(&h.ctx, streamed("look it up")).await.unwrap()).await;
    let (last, before) = chunks.split_last().unwrap();
    assert!(matches!(last, Err(e) if e.status() == 502), "a clean error ends the stream: {last:?}");
    assert!(before.iter().all(Result::is_ok), "nothing half-merged before it");
    assert!(before.iter().flatten().all(|c| c.id == "chatcmpl-primary-1"));
    assert_eq!(fallback.calls(), 0, "no continuation was asked for");
    assert_eq!(h.events.continuations(), [("tool_call", None)]);
    let events = settled(&h.events, 1).await;
    assert_eq!((events[0].status, events[0].continuations), (502, 0));
}

#[tokio::test]
async fn a_continuation_that_fails_everywhere_ends_with_the_original_error() {
    let (primary, fallback) = (Scripted::new("primary", &["a", "b"]), Scripted::new("fallback", &["x"]));
    let h = harness(&[&primary, &fallback], defaults(), true).await;
    primary.script([Step::Cut(1), Step::Fail(503)]);
    fallback.script([Step::Fail(503)]);
    let chunks = collect(h.gateway.chat_stream(&h.ctx, streamed("hi")).await.unwrap()).await;
    assert_eq!(text_of(&chunks), "a");
    assert!(matches!(chunks.last(), Some(Err(Error::Upstream { failure: UpstreamFailure::Interrupted, .. }))));
    assert_eq!((primary.calls(), fallback.calls()), (2, 1), "the next route, then the same one");
    assert_eq!(h.events.continuations(), [("failed", None)]);
}

#[test]
fn configuration_checks_the_new_keys() {
    let config: GatewayConfig = serde_json::from_value(json!({
        "models": [{"name": "m", "routes": [{"provider": "p", "model": "u"}], "continue_streams": true, "deadline_ms": 5000}],
        "defaults": {"deadline_ms": 30000, "retry_budget": {"percent": 10}},
    }))
    .unwrap();
    assert!(config.models[0].continue_streams);
    assert_eq!(config.defaults.retry_budget, RetryBudgetConfig { percent: 10, min_per_sec: 10, window_secs: 10 });
    assert!(config.validate(&["p"]).is_ok());
    assert!(!ModelConfig::new("x").continue_streams, "off by default");
    let mut bad = config.clone();
    bad.defaults.deadline_ms = 0;
    assert_eq!(bad.validate(&["p"]).unwrap_err().key, "defaults.deadline_ms");
    let mut bad = config.clone();
    bad.defaults.retry_budget.window_secs = 0;
    assert_eq!(bad.validate(&["p"]).unwrap_err().key, "defaults.retry_budget.window_secs");
    let mut bad = config;
    bad.models[0].deadline_ms = Some(0);
    assert_eq!(bad.validate(&["p"]).unwrap_err().key, "models[0].deadline_ms");
}
