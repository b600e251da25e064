//! The NATS JetStream queue (feature `nats`): deliveries go to a durable work-queue stream, a
//! durable pull consumer hands them to the [`Processor`] and acks explicitly; an unacked delivery
//! (a crashed consumer) comes back after `ack_wait`, a failing one is retried with a delay, and
//! after `max_deliver` attempts it is published to a dead-letter subject with the last error.
//!
//! ```no_run
//! use std::sync::Arc;
//! use chitty_github::processor::Processor;
//! use chitty_github::queue::{JetStreamConfig, JetStreamConsumer, JetStreamQueue};
//!
//! # async fn run() -> chitty_github::Result<()> {
//! let queue = JetStreamQueue::connect("nats://127.0.0.1:4222", JetStreamConfig::default()).await?;
//! // The intake enqueues through `queue` (a `DeliveryQueue`); a worker, possibly elsewhere, consumes:
//! let processor = Arc::new(Processor::builder().build());
//! let consumer = JetStreamConsumer::new(&queue, processor).await?;
//! consumer.run().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use async_trait::async_trait;
use chitty_core::Timestamp;
use futures::StreamExt;

use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::processor::{HEADER_ATTEMPTS, HEADER_ERROR, Processor, RetryPolicy};
use crate::queue::{DeliveryQueue, Message};

/// Header carrying `received_at` (milliseconds since the epoch) through the stream.
const HEADER_RECEIVED_AT: &str = "x-chitty-received-at";
const BACKEND: &str = "nats";

/// Names and limits of the JetStream queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// Stream name (default `CHITTY_GITHUB`).
    pub stream: String,
    /// Subject prefix: deliveries go to `<prefix>.github.<event>` (default `chitty`).
    pub subject_prefix: String,
    /// Durable consumer name (default `chitty-github-processor`).
    pub consumer: String,
    /// Dead-letter stream name (default `CHITTY_GITHUB_DEAD_LETTER`), capturing
    /// `<prefix>.dead_letter.github.<event>`.
    pub dead_letter_stream: String,
    /// How long a delivery may stay unacked before it is redelivered (default 30 s): longer than
    /// the slowest handler (bound that with [`crate::processor::ProcessorBuilder::handler_timeout`]).
    pub ack_wait: Duration,
    /// Deliveries of one message, the first included, before it is dead-lettered (default 5).
    pub max_deliver: i64,
    /// Delay before a failed delivery is redelivered, by attempt.
    pub retry: RetryPolicy,
    /// Window in which a re-published delivery key is dropped by the server (default 2 min).
    pub duplicate_window: Duration,
    /// Deliveries processed at once by one consumer (default 16).
    pub concurrency: usize,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            stream: "CHITTY_GITHUB".into(),
            subject_prefix: "chitty".into(),
            consumer: "chitty-github-processor".into(),
            dead_letter_stream: "CHITTY_GITHUB_DEAD_LETTER".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            retry: RetryPolicy::default(),
            duplicate_window: Duration::from_secs(120),
            concurrency: 16,
        }
    }
}

impl JetStreamConfig {
    /// The stream subject of a queue message subject (`github.push` → `chitty.github.push`).
    pub fn subject(&self, message_subject: &str) -> String {
        format!("{}.{message_subject}", self.subject_prefix)
    }

    /// The dead-letter subject for an event (`chitty.dead_letter.github.push`).
    pub fn dead_letter_subject(&self, event: &str) -> String {
        format!("{}.dead_letter.github.{event}", self.subject_prefix)
    }

    fn stream_subjects(&self) -> String {
        format!("{}.github.>", self.subject_prefix)
    }
}

fn nats_error(error: impl Into<chitty_core::BoxError>) -> Error {
    Error::backend(BACKEND, error)
}

/// The producer side: a [`DeliveryQueue`] publishing delivery messages to the stream and waiting for
/// the server's acknowledgement (so an accepted delivery is stored before the intake answers 202).
#[derive(Clone)]
pub struct JetStreamQueue {
    context: jetstream::Context,
    config: Arc<JetStreamConfig>,
}

impl fmt::Debug for JetStreamQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamQueue").field("config", &self.config).finish_non_exhaustive()
    }
}

impl JetStreamQueue {
    /// Connects to `url` and creates the streams if they do not exist.
    pub async fn connect(url: &str, config: JetStreamConfig) -> Result<Self> {
        let client = async_nats::connect(url).await.map_err(nats_error)?;
        Self::new(client, config).await
    }

    /// Uses `client`, creating the streams if they do not exist.
    pub async fn new(client: async_nats::Client, config: JetStreamConfig) -> Result<Self> {
        let context = jetstream::new(client);
        context
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![config.stream_subjects()],
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: config.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(nats_error)?;
        context
            .get_or_create_stream(stream::Config {
                name: config.dead_letter_stream.clone(),
                subjects: vec![format!("{}.dead_letter.github.>", config.subject_prefix)],
                ..Default::default()
            })
            .await
            .map_err(nats_error)?;
        Ok(JetStreamQueue { context, config: Arc::new(config) })
    }

    /// The JetStream context (for inspecting streams, or the dead-letter stream).
    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// The configuration.
    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    /// Publishes `message` to `subject` and waits for the stream to store it.
    async fn publish(&self, subject: String, message: &Message) -> Result<()> {
        // Headers are written as text lines: a control character would corrupt or inject headers.
        let header_safe = |text: &str| !text.is_empty() && !text.bytes().any(|b| b.is_ascii_control());
        if !header_safe(&message.id) || !header_safe(&subject) || subject.contains(' ') {
            return Err(Error::invalid_payload("a queue message id or subject is empty or has control characters"));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &message.headers {
            if header_safe(name) && !name.contains(':') && (value.is_empty() || header_safe(value)) {
                headers.append(name.as_str(), value.as_str());
            } else {
                tracing::warn!(header = %name.escape_debug(), "dropped a queue message header with control characters");
            }
        }
        // The server drops a second publish of the same key within the duplicate window.
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message.id.as_str());
        headers.insert(HEADER_RECEIVED_AT, message.received_at.0.to_string());
        let ack =
            self.context.publish_with_headers(subject, headers, message.payload.clone()).await.map_err(nats_error)?;
        ack.await.map_err(nats_error)?;
        Ok(())
    }
}

#[async_trait]
impl DeliveryQueue for JetStreamQueue {
    async fn enqueue(&self, message: Message) -> Result<()> {
        self.publish(self.config.subject(&message.subject), &message).await
    }
}

/// The consumer side: a durable pull consumer feeding a [`Processor`].
pub struct JetStreamConsumer {
    queue: JetStreamQueue,
    consumer: consumer::PullConsumer,
    processor: Arc<Processor>,
}

impl fmt::Debug for JetStreamConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamConsumer")
            .field("queue", &self.queue)
            .field("processor", &self.processor)
            .finish_non_exhaustive()
    }
}

/// What the consumer did with one stream message.
enum Disposition {
    Ack,
    Retry(Duration),
    DeadLetter(Error),
}

impl JetStreamConsumer {
    /// Creates (or reuses) the durable consumer of `queue`'s stream.
    pub async fn new(queue: &JetStreamQueue, processor: Arc<Processor>) -> Result<Self> {
        let config = queue.config();
        let stream = queue.context.get_stream(&config.stream).await.map_err(nats_error)?;
        let consumer = stream
            .get_or_create_consumer(
                &config.consumer,
                consumer::pull::Config {
                    durable_name: Some(config.consumer.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    // Unlimited on the server: the consumer enforces `max_deliver` itself, so that a
                    // delivery whose dead letter could not be published is redelivered, not stranded.
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(nats_error)?;
        Ok(JetStreamConsumer { queue: queue.clone(), consumer, processor })
    }

    /// Consumes until the message stream ends, processing up to `concurrency` deliveries at once.
    /// Stream errors (a missed heartbeat, a reconnect) are logged and consumption goes on.
    pub async fn run(&self) -> Result<()> {
        let messages = self.consumer.messages().await.map_err(nats_error)?;
        let concurrency = self.queue.config.concurrency.max(1);
        messages
            .for_each_concurrent(concurrency, |message| async move {
                match message {
                    Ok(message) => self.handle(message).await,
                    Err(error) => tracing::warn!(error = %error, "JetStream message stream error"),
                }
            })
            .await;
        Ok(())
    }

    /// Processes one stream message and acks, naks with a delay, or dead-letters it.
    async fn handle(&self, message: jetstream::Message) {
        let config = &self.queue.config;
        let attempt = message.info().map(|info| info.delivered).unwrap_or(1);
        let core_message = to_core_message(&message, &config.subject_prefix);
        let disposition = match Delivery::from_message(&core_message) {
            Err(error) => Disposition::DeadLetter(error),
            Ok(delivery) => match self.processor.process_once(delivery).await {
                Ok(_) => Disposition::Ack,
                Err(error @ (Error::InvalidPayload { .. } | Error::MissingHeader { .. })) => {
                    Disposition::DeadLetter(error)
                }
                Err(error) if attempt >= config.max_deliver => Disposition::DeadLetter(error),
                Err(_) => Disposition::Retry(config.retry.backoff(u32::try_from(attempt).unwrap_or(u32::MAX))),
            },
        };
        let result = match disposition {
            Disposition::Ack => message.double_ack().await,
            Disposition::Retry(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
            Disposition::DeadLetter(error) => match self.dead_letter(core_message, &error, attempt).await {
                // Terminate only once the dead letter is stored; otherwise redelivery keeps it alive.
                Ok(()) => message.ack_with(AckKind::Term).await,
                Err(publish_error) => {
                    tracing::error!(error = %publish_error, "could not publish a dead letter; the delivery will be redelivered");
                    message.ack_with(AckKind::Nak(Some(config.retry.max_backoff))).await
                }
            },
        };
        if let Err(error) = result {
            tracing::warn!(error = %error, "JetStream acknowledgement failed; the delivery will be redelivered");
        }
    }

    async fn dead_letter(&self, mut message: Message, error: &Error, attempts: i64) -> Result<()> {
        let event = message.subject.trim_start_matches(crate::delivery::SUBJECT_PREFIX).to_owned();
        message.headers.push((HEADER_ERROR.to_owned(), error.to_string()));
        message.headers.push((HEADER_ATTEMPTS.to_owned(), attempts.to_string()));
        // A dead letter must not be dropped as a duplicate of the original delivery.
        message.id = format!("{}:dead-letter", message.id);
        tracing::error!(id = %message.id, error = %error, attempts, "webhook delivery dead-lettered");
        self.queue.publish(self.queue.config.dead_letter_subject(&event), &message).await
    }
}

/// The queue message a stream message carries (subject without the prefix, headers, payload).
fn to_core_message(message: &async_nats::Message, prefix: &str) -> Message {
    let subject = message.subject.as_str();
    let subject = subject.strip_prefix(prefix).and_then(|s| s.strip_prefix('.')).unwrap_or(subject).to_owned();
    let mut headers = Vec::new();
    let mut id = String::new();
    let mut received_at = Timestamp::default();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            let name: &str = name.as_ref();
            for value in values {
                let value = value.as_str();
                if name.eq_ignore_ascii_case(AsRef::<str>::as_ref(&async_nats::header::NATS_MESSAGE_ID)) {
                    id = value.to_owned();
                } else if name.eq_ignore_ascii_case(HEADER_RECEIVED_AT) {
                    received_at = Timestamp(value.parse().unwrap_or_default());
                } else {
                    headers.push((name.to_ascii_lowercase(), value.to_owned()));
                }
            }
        }
    }
    Message { subject, id, headers, payload: message.payload.clone(), received_at }
}
