//! The github_app example's offline demo: a signed pull_request sent over HTTP gets a review posted
//! on the mock GitHub API.
#![cfg(all(feature = "server", feature = "client", feature = "postgres"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/github_app.rs"]
mod example;

use std::sync::Arc;

use chitty_github::installations::{InstallationStore, MemoryInstallationStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_demo_posts_a_review() {
    let installations: Arc<dyn InstallationStore> = Arc::new(MemoryInstallationStore::new());
    let demo = example::start_offline("127.0.0.1:0", installations).await.unwrap();
    let (status, review) = demo.send_sample().await.unwrap();
    assert_eq!(status, 202);
    let review = review.expect("a review within 5 s");
    assert_eq!(review["event"], "COMMENT");
    let body = review["body"].as_str().unwrap();
    assert!(body.contains("risk: low") && body.contains("<!-- chitty-review head="), "{body}");
    assert_eq!(review["comments"][0]["path"], "README.md");
    assert_eq!(review["comments"][0]["line"], 2);
    demo.stop();
}
