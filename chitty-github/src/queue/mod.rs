//! Queues between the intake and the processor, behind one small trait, [`DeliveryQueue`].
//!
//! - [`InProcessQueue`]: a bounded in-process queue. Its sending half refuses with
//!   [`Error::Backpressure`] when full (the intake answers 503 with `Retry-After`); nothing is
//!   dropped silently.
//! - `JetStreamQueue` and `JetStreamConsumer` (feature `nats`): a durable NATS JetStream stream
//!   with explicit acks, redelivery after a crash, and a dead-letter subject.
//!
//! ```
//! use bytes::Bytes;
//! use chitty_core::Timestamp;
//! use chitty_github::queue::Message;
//! use chitty_github::queue::{DeliveryQueue, InProcessQueue};
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
//! queue.enqueue(message.clone()).await?;
//! let full = queue.enqueue(message.clone()).await.unwrap_err();
//! assert!(matches!(full, chitty_github::Error::Backpressure { .. }));
//! assert_eq!(receiver.recv().await, Some(message));
//! # Ok::<(), chitty_github::Error>(())
//! # }).unwrap();
//! ```

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chitty_core::Timestamp;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

#[cfg(feature = "nats")]
mod jetstream;
#[cfg(feature = "nats")]
pub use self::jetstream::{JetStreamConfig, JetStreamConsumer, JetStreamQueue};

/// A message on a delivery queue: a webhook delivery as the queue carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Subject or topic, e.g. `github.pull_request`.
    pub subject: String,
    /// Unique identifier, used for de-duplication by queues that support it.
    pub id: String,
    /// Headers to carry along.
    pub headers: Vec<(String, String)>,
    /// The payload.
    pub payload: Bytes,
    /// When it was received.
    pub received_at: Timestamp,
}

/// Name under which the in-process queue reports backpressure.
pub const IN_PROCESS_QUEUE: &str = "github-in-process-queue";

/// Where verified deliveries go (from the intake) and failed ones (from the processor's dead-letter path):
/// a queue of delivery messages (see [`crate::delivery::Delivery::into_message`]).
///
/// Contract: `enqueue` returns promptly. The message is then stored, or refused with an error:
/// [`Error::Backpressure`] with a suggested wait when the queue is full, another error when it is
/// broken. It is never dropped silently.
#[async_trait]
pub trait DeliveryQueue: Send + Sync + Debug + 'static {
    /// Stores `message`, or says why not.
    async fn enqueue(&self, message: Message) -> Result<()>;
}

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
    pub fn try_enqueue(&self, message: Message) -> Result<()> {
        self.sender.try_send(message).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                Error::Backpressure { queue: IN_PROCESS_QUEUE.to_owned(), retry_after: self.retry_after }
            }
            mpsc::error::TrySendError::Closed(_) => {
                Error::backend(IN_PROCESS_QUEUE, "the queue's receiver was dropped")
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
impl DeliveryQueue for InProcessQueue {
    async fn enqueue(&self, message: Message) -> Result<()> {
        self.try_enqueue(message)
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
