//! Queues between the intake and the processor.
//!
//! - [`InProcessQueue`]: a bounded in-process queue. Its sending half is an [`EventSink`] that
//!   refuses with [`chitty_core::Error::Backpressure`] when full (the intake answers 503 with
//!   `Retry-After`); nothing is dropped silently.
//! - `JetStreamQueue` and `JetStreamConsumer` (feature `nats`): a durable NATS JetStream stream
//!   with explicit acks, redelivery after a crash, and a dead-letter subject.
//!
//! ```
//! use bytes::Bytes;
//! use chitty_core::{Event, EventSink, Message, Timestamp};
//! use chitty_github::queue::InProcessQueue;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (queue, mut receiver) = InProcessQueue::bounded(1);
//! let message = Message {
//!     subject: "github.ping".into(),
//!     id: "guid".into(),
//!     headers: vec![],
//!     payload: Bytes::from_static(b"{}"),
//!     received_at: Timestamp(0),
//! };
//! queue.record(Event::Message(message.clone())).await?;
//! let full = queue.record(Event::Message(message.clone())).await.unwrap_err();
//! assert!(matches!(full, chitty_core::Error::Backpressure { .. }));
//! assert_eq!(receiver.recv().await, Some(message));
//! # Ok::<(), chitty_core::Error>(())
//! # }).unwrap();
//! ```

use std::time::Duration;

use async_trait::async_trait;
use chitty_core::{Event, EventSink, Message};
use tokio::sync::mpsc;

#[cfg(feature = "nats")]
mod jetstream;
#[cfg(feature = "nats")]
pub use self::jetstream::{JetStreamConfig, JetStreamConsumer, JetStreamQueue};

/// Name under which the in-process queue reports backpressure.
pub const IN_PROCESS_QUEUE: &str = "github-in-process-queue";

/// The sending half of a bounded in-process queue of delivery messages.
#[derive(Debug, Clone)]
pub struct InProcessQueue {
    sender: mpsc::Sender<Message>,
    retry_after: Duration,
}

/// The receiving half of an [`InProcessQueue`].
#[derive(Debug)]
pub struct QueueReceiver {
    receiver: mpsc::Receiver<Message>,
}

impl InProcessQueue {
    /// A queue holding at most `capacity` messages (at least 1), and its receiving half.
    pub fn bounded(capacity: usize) -> (Self, QueueReceiver) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (InProcessQueue { sender, retry_after: Duration::from_secs(1) }, QueueReceiver { receiver })
    }

    /// Sets the wait suggested to senders when the queue is full (default 1 s).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Enqueues `message` without waiting: fails with backpressure when full.
    pub fn try_enqueue(&self, message: Message) -> chitty_core::Result<()> {
        self.sender.try_send(message).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                chitty_core::Error::Backpressure { sink: IN_PROCESS_QUEUE.to_owned(), retry_after: self.retry_after }
            }
            mpsc::error::TrySendError::Closed(_) => {
                chitty_core::Error::backend(IN_PROCESS_QUEUE, "the queue's receiver was dropped")
            }
        })
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl EventSink for InProcessQueue {
    async fn record(&self, event: Event) -> chitty_core::Result<()> {
        match event {
            Event::Message(message) => self.try_enqueue(message),
            // This queue carries deliveries only; other events are accepted and ignored, per the contract.
            _ => Ok(()),
        }
    }
}

impl QueueReceiver {
    /// The next message; `None` once every sender is dropped and the queue is drained.
    pub async fn recv(&mut self) -> Option<Message> {
        self.receiver.recv().await
    }

    /// The next message if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.receiver.try_recv().ok()
    }

    /// Stops accepting new messages; those already queued can still be received.
    pub fn close(&mut self) {
        self.receiver.close();
    }
}
