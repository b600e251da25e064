//! The processor: parses queued deliveries into [`WebhookEvent`]s and runs the handlers
//! registered for the event (`pull_request`), for the event and action (`pull_request.opened`),
//! and for every event (`*`), with a concurrency limit, retries with backoff on an injected
//! [`Timer`], panics caught, and a dead-letter queue for what keeps failing.
//!
//! Handlers must be idempotent: a delivery can reach them more than once (a retry after another
//! handler failed, a redelivery after a crash).
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use chitty_github::processor::{handler_fn, EventContext, ProcessOutcome, Processor};
//! use chitty_github::delivery::Delivery;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let opened = Arc::new(AtomicUsize::new(0));
//! let counter = opened.clone();
//! let processor = Processor::builder()
//!     .on("pull_request.opened", handler_fn(move |context: EventContext| {
//!         let counter = counter.clone();
//!         async move {
//!             assert_eq!(context.event.action(), Some("opened"));
//!             counter.fetch_add(1, Ordering::SeqCst);
//!             Ok(())
//!         }
//!     }))
//!     .build();
//! let delivery = Delivery {
//!     id: "guid".into(),
//!     event: "star".into(),
//!     action: Some("created".into()),
//!     hook_id: None,
//!     target_type: None,
//!     target_id: None,
//!     payload: bytes::Bytes::from_static(br#"{"action":"created"}"#),
//!     received_at: chitty_core::Timestamp(0),
//! };
//! assert!(matches!(processor.process(delivery).await, ProcessOutcome::Unhandled));
//! assert_eq!(opened.load(Ordering::SeqCst), 0);
//! # });
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chitty_core::runtime::TokioTimer;
use chitty_core::{BoxError, Timer};
use futures::FutureExt;
use futures::future::{self, Either};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::delivery::{Delivery, message_header};
use crate::error::Error;
use crate::events::catalog::route_problem;
use crate::events::{
    CheckRunEvent, CheckSuiteEvent, EventAction, InstallationEvent, InstallationRepositoriesEvent, IssueCommentEvent,
    IssuesEvent, PullRequestEvent, PullRequestReviewEvent, PushEvent, ReleaseEvent, TypedEvent, WebhookEvent,
    WorkflowRunEvent,
};
use crate::queue::{DeliveryQueue, Message, QueueReceiver};

/// The route that matches every event.
pub const ANY_EVENT: &str = "*";
/// Header carrying the last error on a dead-lettered message.
pub const HEADER_ERROR: &str = "x-chitty-error";
/// Header carrying the number of attempts made on a dead-lettered message.
pub const HEADER_ATTEMPTS: &str = "x-chitty-attempts";

/// What a handler is given: the delivery and its parsed event, a tracing span for the delivery, and
/// (with feature `client` and `ProcessorBuilder::github_app`) a client acting as the event's
/// installation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventContext {
    /// The delivery (headers, raw payload).
    pub delivery: Arc<Delivery>,
    /// The parsed event.
    pub event: Arc<WebhookEvent>,
    span: tracing::Span,
    #[cfg(feature = "client")]
    github: Option<crate::client::InstallationClient>,
}

impl EventContext {
    /// A context for `delivery` and its parsed `event`, with no span and no client (for tests; the
    /// processor makes its own).
    pub fn new(delivery: Arc<Delivery>, event: Arc<WebhookEvent>) -> Self {
        EventContext {
            delivery,
            event,
            span: tracing::Span::none(),
            #[cfg(feature = "client")]
            github: None,
        }
    }

    /// The delivery's GUID (`X-GitHub-Delivery`).
    pub fn delivery_id(&self) -> &str {
        &self.delivery.id
    }

    /// The installation the event was sent for, if any.
    pub fn installation_id(&self) -> Option<u64> {
        self.event.installation_id()
    }

    /// The span the handler runs in (`github_event`, with the delivery, event, action and
    /// installation); handlers' own events and spans nest under it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// A client acting as the event's installation (tokens minted and cached by the processor's App).
    #[cfg(feature = "client")]
    pub fn github(&self) -> Result<&crate::client::InstallationClient, Error> {
        self.github.as_ref().ok_or(Error::NoInstallationClient {
            reason: if self.event.installation_id().is_none() {
                "the event was not sent to an App installation"
            } else {
                "the processor has no GitHub App (ProcessorBuilder::github_app)"
            },
        })
    }

    /// Sets the installation client (for tests of handlers).
    #[cfg(feature = "client")]
    pub fn with_github(mut self, client: crate::client::InstallationClient) -> Self {
        self.github = Some(client);
        self
    }
}

/// Handles webhook events. Must be idempotent per delivery.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one event; an error makes the processor retry, then dead-letter.
    async fn handle(&self, context: EventContext) -> Result<(), BoxError>;
}

/// A [`Handler`] made from an async closure; see [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F>(F);

/// Turns `f(context) -> impl Future<Output = Result<(), BoxError>>` into a [`Handler`].
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(EventContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    HandlerFn(f)
}

#[async_trait]
impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(EventContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    async fn handle(&self, context: EventContext) -> Result<(), BoxError> {
        (self.0)(context).await
    }
}

/// A handler of one typed event: `f(event, context)`; see [`ProcessorBuilder::on_event`].
struct TypedHandler<E, F> {
    handler: F,
    event: PhantomData<fn() -> E>,
}

#[async_trait]
impl<E, F, Fut> Handler for TypedHandler<E, F>
where
    E: TypedEvent,
    F: Fn(E, EventContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    async fn handle(&self, context: EventContext) -> Result<(), BoxError> {
        // The route names E's event, and that event always parses into E's variant.
        let Some(event) = E::from_event(&context.event).cloned() else {
            return Err(format!("a `{}` handler was given a `{}` event", E::EVENT, context.event.name()).into());
        };
        (self.handler)(event, context).await
    }
}

/// Registration methods for each typed event: `on_pull_request(PullRequestAction::Opened, f)`.
macro_rules! typed_registrations {
    ($($(#[$doc:meta])* $method:ident => $event:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $method<F, Fut>(self, action: impl Into<Option<<$event as TypedEvent>::Action>>, handler: F) -> Self
            where
                F: Fn($event, EventContext) -> Fut + Send + Sync + 'static,
                Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
            {
                self.on_event::<$event, F, Fut>(action, handler)
            }
        )*
    };
}

/// How failed handlers are retried: `max_attempts` in all, waiting `initial_backoff`, then
/// multiplying by `multiplier` up to `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (at least 1).
    pub max_attempts: u32,
    /// Wait after the first failure.
    pub initial_backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
    /// Growth factor of the wait.
    pub multiplier: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            multiplier: 2,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failed attempt (1-based).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = self.multiplier.max(1).saturating_pow(failures.saturating_sub(1));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// What processing one delivery ended in.
#[derive(Debug)]
pub enum ProcessOutcome {
    /// Every matching handler succeeded.
    Handled {
        /// Handlers run.
        handlers: usize,
        /// Attempts made (1 when nothing failed).
        attempts: u32,
    },
    /// No handler matches the event.
    Unhandled,
    /// Handlers kept failing (or the payload did not parse); the delivery went to the dead-letter queue.
    DeadLettered {
        /// The last error.
        error: Error,
        /// Attempts made.
        attempts: u32,
    },
}

/// Counters of a [`Processor`], for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessorStats {
    /// Deliveries whose handlers all succeeded.
    pub handled: u64,
    /// Deliveries no handler matched.
    pub unhandled: u64,
    /// Handler failures (errors and panics), counting each attempt.
    pub handler_failures: u64,
    /// Handler panics caught.
    pub panics: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Deliveries dead-lettered.
    pub dead_lettered: u64,
    /// Dead-letter queue refusals (each is also logged at error level).
    pub dead_letter_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    unhandled: AtomicU64,
    handler_failures: AtomicU64,
    panics: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    dead_letter_failures: AtomicU64,
}

type Route = (String, Arc<dyn Handler>);

/// Builds a [`Processor`].
pub struct ProcessorBuilder {
    routes: HashMap<String, Vec<Arc<dyn Handler>>>,
    allowed_routes: HashSet<String>,
    #[cfg(feature = "client")]
    app: Option<crate::client::GitHubApp>,
    concurrency: usize,
    retry: RetryPolicy,
    timer: Arc<dyn Timer>,
    dead_letter: Arc<dyn DeliveryQueue>,
    handler_timeout: Option<Duration>,
}

impl ProcessorBuilder {
    /// Runs `handler` for `route`: an event (`push`), an event and action
    /// (`pull_request.opened`), or [`ANY_EVENT`].
    pub fn on(mut self, route: impl Into<String>, handler: impl Handler) -> Self {
        self.routes.entry(route.into()).or_default().push(Arc::new(handler));
        self
    }

    /// Runs `handler` for every event.
    pub fn on_any(self, handler: impl Handler) -> Self {
        self.on(ANY_EVENT, handler)
    }

    /// Runs `handler(event, context)` for event `E` with `action` (every action when `None`):
    /// the handler gets its own payload type, not an enum to match.
    ///
    /// ```
    /// use chitty_github::events::{PullRequestAction, PullRequestEvent};
    /// use chitty_github::processor::{EventContext, Processor};
    ///
    /// let processor = Processor::builder()
    ///     .on_event::<PullRequestEvent, _, _>(PullRequestAction::Opened, |pr, cx: EventContext| async move {
    ///         tracing::info!(parent: cx.span(), number = pr.number, "opened");
    ///         Ok(())
    ///     })
    ///     .on_pull_request(None, |pr: PullRequestEvent, _cx| async move {
    ///         assert!(!pr.action.is_empty());
    ///         Ok(())
    ///     })
    ///     .try_build()?;
    /// # drop(processor);
    /// # Ok::<(), chitty_github::Error>(())
    /// ```
    pub fn on_event<E, F, Fut>(self, action: impl Into<Option<E::Action>>, handler: F) -> Self
    where
        E: TypedEvent,
        F: Fn(E, EventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let route = match action.into() {
            Some(action) => format!("{}.{}", E::EVENT, action.as_str()),
            None => E::EVENT.to_owned(),
        };
        self.on(route, TypedHandler::<E, F> { handler, event: PhantomData })
    }

    /// Runs `handler(event, context)` for every `push`.
    pub fn on_push<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(PushEvent, EventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.on_event::<PushEvent, F, Fut>(None, handler)
    }

    typed_registrations! {
        /// Runs `handler(event, context)` for `pull_request` with `action` (every action when `None`).
        on_pull_request => PullRequestEvent;
        /// Runs `handler(event, context)` for `issues` with `action` (every action when `None`).
        on_issues => IssuesEvent;
        /// Runs `handler(event, context)` for `issue_comment` with `action` (every action when `None`).
        on_issue_comment => IssueCommentEvent;
        /// Runs `handler(event, context)` for `installation` with `action` (every action when `None`).
        on_installation => InstallationEvent;
        /// Runs `handler(event, context)` for `installation_repositories` with `action` (every action when `None`).
        on_installation_repositories => InstallationRepositoriesEvent;
        /// Runs `handler(event, context)` for `check_suite` with `action` (every action when `None`).
        on_check_suite => CheckSuiteEvent;
        /// Runs `handler(event, context)` for `check_run` with `action` (every action when `None`).
        on_check_run => CheckRunEvent;
        /// Runs `handler(event, context)` for `release` with `action` (every action when `None`).
        on_release => ReleaseEvent;
        /// Runs `handler(event, context)` for `workflow_run` with `action` (every action when `None`).
        on_workflow_run => WorkflowRunEvent;
        /// Runs `handler(event, context)` for `pull_request_review` with `action` (every action when `None`).
        on_pull_request_review => PullRequestReviewEvent;
    }

    /// Accepts `route` at [`try_build`](Self::try_build) although the catalogue of GitHub's
    /// events ([`crate::events::catalog`]) does not list it: for an event GitHub added since.
    pub fn allow_route(mut self, route: impl Into<String>) -> Self {
        self.allowed_routes.insert(route.into());
        self
    }

    /// The App whose installation clients handlers get from [`EventContext::github`].
    #[cfg(feature = "client")]
    pub fn github_app(mut self, app: crate::client::GitHubApp) -> Self {
        self.app = Some(app);
        self
    }

    /// Deliveries processed at once by [`Processor::run`] (default 16, at least 1).
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit.max(1);
        self
    }

    /// The retry policy (default: 5 attempts, 200 ms doubling up to 30 s).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Drops a handler that runs longer than `timeout` and counts it as a failure (default: no
    /// limit). Measured on the processor's timer.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = Some(timeout);
        self
    }

    /// The timer backoffs wait on (default: tokio's; a [`chitty_core::ManualTimer`] in tests).
    pub fn timer(mut self, timer: Arc<dyn Timer>) -> Self {
        self.timer = timer;
        self
    }

    /// Where failed deliveries go, with their last error in the `x-chitty-error` header
    /// (default: logged at error level).
    pub fn dead_letter(mut self, queue: Arc<dyn DeliveryQueue>) -> Self {
        self.dead_letter = queue;
        self
    }

    /// The processor, once every route names an event GitHub sends and, when it has one, an
    /// action of that event (or was allowed with [`allow_route`](Self::allow_route)); otherwise
    /// [`Error::UnknownRoute`] for the first such route, by name.
    pub fn try_build(self) -> Result<Processor, Error> {
        let mut routes: Vec<&String> = self.routes.keys().collect();
        routes.sort();
        for route in routes {
            if self.allowed_routes.contains(route) {
                continue;
            }
            if let Some(reason) = route_problem(route) {
                return Err(Error::UnknownRoute { route: route.clone(), reason });
            }
        }
        Ok(self.build_unchecked())
    }

    /// The processor, with routes unchecked: a route that names nothing GitHub sends is logged at
    /// warn level and never fires. Prefer [`try_build`](Self::try_build).
    pub fn build(self) -> Processor {
        for route in self.routes.keys().filter(|route| !self.allowed_routes.contains(*route)) {
            if let Some(reason) = route_problem(route) {
                tracing::warn!(route = %route, %reason, "webhook handler route will never fire");
            }
        }
        self.build_unchecked()
    }

    fn build_unchecked(self) -> Processor {
        Processor {
            #[cfg(feature = "client")]
            app: self.app,
            routes: self.routes,
            concurrency: self.concurrency,
            retry: self.retry,
            timer: self.timer,
            dead_letter: self.dead_letter,
            handler_timeout: self.handler_timeout,
            counters: Counters::default(),
        }
    }
}

impl fmt::Debug for ProcessorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorBuilder")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// The default dead-letter queue: an error log line per delivery, so nothing vanishes unnoticed.
#[derive(Debug)]
struct LogDeadLetters;

#[async_trait]
impl DeliveryQueue for LogDeadLetters {
    async fn enqueue(&self, message: Message) -> crate::Result<()> {
        let error = message_header(&message, HEADER_ERROR).unwrap_or_default();
        tracing::error!(subject = %message.subject, id = %message.id, error = %error, "webhook delivery dead-lettered");
        Ok(())
    }
}

/// Dispatches deliveries to handlers. Share it behind an `Arc`.
pub struct Processor {
    routes: HashMap<String, Vec<Arc<dyn Handler>>>,
    #[cfg(feature = "client")]
    app: Option<crate::client::GitHubApp>,
    concurrency: usize,
    retry: RetryPolicy,
    timer: Arc<dyn Timer>,
    dead_letter: Arc<dyn DeliveryQueue>,
    handler_timeout: Option<Duration>,
    counters: Counters,
}

impl fmt::Debug for Processor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Processor")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("handler_timeout", &self.handler_timeout)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Processor {
    /// A builder with no handlers, tokio's timer and a logging dead-letter queue.
    pub fn builder() -> ProcessorBuilder {
        ProcessorBuilder {
            routes: HashMap::new(),
            allowed_routes: HashSet::new(),
            #[cfg(feature = "client")]
            app: None,
            concurrency: 16,
            retry: RetryPolicy::default(),
            timer: Arc::new(TokioTimer),
            dead_letter: Arc::new(LogDeadLetters),
            handler_timeout: None,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ProcessorStats {
        let c = &self.counters;
        ProcessorStats {
            handled: c.handled.load(Ordering::Relaxed),
            unhandled: c.unhandled.load(Ordering::Relaxed),
            handler_failures: c.handler_failures.load(Ordering::Relaxed),
            panics: c.panics.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            dead_letter_failures: c.dead_letter_failures.load(Ordering::Relaxed),
        }
    }

    /// The handlers for an event: those of the event, of `event.action`, then of `*`.
    fn handlers_for(&self, event: &str, action: Option<&str>) -> Vec<Route> {
        let mut routes = vec![event.to_owned()];
        if let Some(action) = action {
            routes.push(format!("{event}.{action}"));
        }
        routes.push(ANY_EVENT.to_owned());
        routes
            .into_iter()
            .flat_map(|route| {
                let handlers = self.routes.get(&route).cloned().unwrap_or_default();
                handlers.into_iter().map(move |handler| (route.clone(), handler))
            })
            .collect()
    }

    /// Runs one handler, turning a panic into [`Error::HandlerPanicked`].
    async fn run_handler(&self, route: &str, handler: &dyn Handler, context: EventContext) -> Result<(), Error> {
        let span = context.span.clone();
        let work = AssertUnwindSafe(handler.handle(context).instrument(span)).catch_unwind();
        let result = match self.handler_timeout {
            None => work.await,
            Some(limit) => match future::select(Box::pin(work), self.timer.sleep(limit)).await {
                Either::Left((result, _)) => result,
                Either::Right(((), _)) => {
                    self.counters.handler_failures.fetch_add(1, Ordering::Relaxed);
                    let error = Error::HandlerTimedOut { route: route.to_owned(), timeout: limit };
                    tracing::warn!(route = %route, error = %error, "webhook handler failed");
                    return Err(error);
                }
            },
        };
        let error = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => Error::HandlerFailed { route: route.to_owned(), message: error.to_string() },
            Err(panic) => {
                self.counters.panics.fetch_add(1, Ordering::Relaxed);
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                Error::HandlerPanicked { route: route.to_owned(), message }
            }
        };
        self.counters.handler_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(route = %route, error = %error, "webhook handler failed");
        Err(error)
    }

    /// Parses the delivery and the matching handlers, or says why it cannot be processed.
    fn prepare(&self, delivery: Delivery) -> Result<(EventContext, Vec<Route>), Error> {
        let event = WebhookEvent::parse(&delivery.event, &delivery.payload)?;
        let handlers = self.handlers_for(event.name(), event.action());
        let span = tracing::info_span!(
            "github_event",
            delivery = %delivery.id,
            event = %event.name(),
            action = event.action().unwrap_or_default(),
            installation = event.installation_id(),
        );
        let mut context = EventContext::new(Arc::new(delivery), Arc::new(event));
        context.span = span;
        #[cfg(feature = "client")]
        {
            let installation = context.event.installation_id();
            context.github = self
                .app
                .as_ref()
                .zip(installation)
                .map(|(app, id)| app.installation(crate::client::InstallationId(id)));
        }
        Ok((context, handlers))
    }

    /// One attempt: runs every matching handler once, in registration order, and returns how
    /// many ran, or the first failure (after running the others). For queues that retry by
    /// redelivery, like JetStream.
    pub async fn process_once(&self, delivery: Delivery) -> Result<usize, Error> {
        let (context, handlers) = self.prepare(delivery)?;
        let mut first_error = None;
        for (route, handler) in &handlers {
            if let Err(error) = self.run_handler(route, handler.as_ref(), context.clone()).await {
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            None => {
                let counter = if handlers.is_empty() { &self.counters.unhandled } else { &self.counters.handled };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(handlers.len())
            }
            Some(error) => Err(error),
        }
    }

    /// Processes a delivery: runs the matching handlers, retries those that fail with backoff,
    /// and dead-letters the delivery with the last error when attempts run out.
    pub async fn process(&self, delivery: Delivery) -> ProcessOutcome {
        let dead_letter_copy = delivery.clone();
        let (context, handlers) = match self.prepare(delivery) {
            Ok(prepared) => prepared,
            // A payload that does not parse will not parse on a retry either.
            Err(error) => return self.give_up(dead_letter_copy, error, 1).await,
        };
        if handlers.is_empty() {
            self.counters.unhandled.fetch_add(1, Ordering::Relaxed);
            return ProcessOutcome::Unhandled;
        }
        let mut pending: Vec<&Route> = handlers.iter().collect();
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut failed = Vec::new();
            let mut last_error = None;
            for route in pending {
                if let Err(error) = self.run_handler(&route.0, route.1.as_ref(), context.clone()).await {
                    failed.push(route);
                    last_error = Some(error);
                }
            }
            let Some(error) = last_error else {
                self.counters.handled.fetch_add(1, Ordering::Relaxed);
                return ProcessOutcome::Handled { handlers: handlers.len(), attempts };
            };
            if attempts >= max_attempts {
                return self.give_up(dead_letter_copy, error, attempts).await;
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            self.timer.sleep(self.retry.backoff(attempts)).await;
            pending = failed;
        }
    }

    /// Processes a queue message carrying a delivery (see [`Delivery::into_message`]).
    pub async fn process_message(&self, message: Message) -> ProcessOutcome {
        match Delivery::from_message(&message) {
            Ok(delivery) => self.process(delivery).await,
            Err(error) => {
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                self.send_dead_letter(message, &error, 1).await;
                ProcessOutcome::DeadLettered { error, attempts: 1 }
            }
        }
    }

    async fn give_up(&self, delivery: Delivery, error: Error, attempts: u32) -> ProcessOutcome {
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.send_dead_letter(delivery.into_message(), &error, attempts).await;
        ProcessOutcome::DeadLettered { error, attempts }
    }

    async fn send_dead_letter(&self, mut message: Message, error: &Error, attempts: u32) {
        message.subject = format!("github.dead_letter.{}", message.subject.trim_start_matches("github."));
        message.headers.push((HEADER_ERROR.to_owned(), error.to_string()));
        message.headers.push((HEADER_ATTEMPTS.to_owned(), attempts.to_string()));
        let id = message.id.clone();
        if let Err(queue_error) = self.dead_letter.enqueue(message).await {
            self.counters.dead_letter_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(id = %id, error = %error, queue_error = %queue_error, "dead-letter queue refused a failed delivery");
        }
    }

    /// Consumes `receiver` until it is closed and drained, processing up to the concurrency
    /// limit at once on tokio tasks; returns when every started delivery is finished.
    pub async fn run(self: Arc<Self>, mut receiver: QueueReceiver) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        loop {
            // Take a permit before a message, so that a busy processor leaves messages queued and
            // the intake sees backpressure instead of an unbounded task backlog.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let Some(message) = receiver.recv().await else {
                break;
            };
            let processor = self.clone();
            tasks.spawn(async move {
                let _permit = permit;
                processor.process_message(message).await
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }
}
