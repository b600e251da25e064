//! The `DeliveryQueue` conformance checks (`common::concurrent_enqueuers`), run by the in-process queue and the
//! JetStream queue (on the machine's NATS, `CHITTY_TEST_NATS_URL`, by default `nats://127.0.0.1:4222`; ignored
//! with the reason when it is unreachable: `harness = false`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use chitty_github::queue::InProcessQueue;
use chitty_testkit::services::{self, block_on, trial};

fn main() -> std::process::ExitCode {
    #[allow(unused_mut)] // the JetStream trial needs the `nats` feature
    let mut trials = vec![trial("in_process_queue_conforms", &Ok(()), |()| block_on(in_process_queue_conforms()))];
    #[cfg(feature = "nats")]
    trials
        .push(trial("jetstream_queue_conforms", &services::nats_url(), |url| block_on(jetstream_queue_conforms(url))));
    services::run(trials)
}

async fn in_process_queue_conforms() {
    let (queue, mut receiver) = InProcessQueue::bounded(1024);
    common::concurrent_enqueuers(Arc::new(queue.clone()), 4, 10).await;
    drop(queue);
    let mut messages = 0;
    while receiver.recv().await.is_some() {
        messages += 1;
    }
    // The in-process queue keeps every copy: de-duplication is the intake's job.
    assert_eq!(messages, 4 * 10);
}

#[cfg(feature = "nats")]
async fn jetstream_queue_conforms(url: String) {
    use chitty_github::queue::{JetStreamConfig, JetStreamQueue};
    let name = common::unique("chitty_sink").to_uppercase();
    let config = JetStreamConfig {
        stream: name.clone(),
        subject_prefix: name.to_lowercase(),
        dead_letter_stream: format!("{name}_DLQ"),
        ..JetStreamConfig::default()
    };
    let queue = JetStreamQueue::connect(&url, config).await.unwrap();
    common::concurrent_enqueuers(Arc::new(queue.clone()), 4, 8).await;
    let mut stream = queue.context().get_stream(&name).await.unwrap();
    // Every writer publishes the same 8 message ids: the server keeps one copy of each.
    assert_eq!(stream.info().await.unwrap().state.messages, 8);
    let _ = queue.context().delete_stream(&name).await;
    let _ = queue.context().delete_stream(format!("{name}_DLQ")).await;
}
