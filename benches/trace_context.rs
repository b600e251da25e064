//! The trace-context layer on the request path: a router that answers at once, with and without
//! `chitty_providers::trace::TraceContextLayer`, for requests without and with a `traceparent` (no subscriber
//! installed, as in a gateway that does not export spans).
//!
//! `cargo bench --bench trace_context`

// A bench that cannot set up aborts, as a test would.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use chitty::providers::trace::TraceContextLayer;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

fn request(traced: bool) -> http::Request<Body> {
    let mut request = http::Request::post("/v1/chat/completions").header("authorization", "Bearer sk-bench");
    if traced {
        request = request
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .header("tracestate", "vendor=abc");
    }
    request.body(Body::empty()).expect("request")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let bare = Router::new().route("/v1/chat/completions", post(|| async { "ok" }));
    let layered = bare.clone().layer(TraceContextLayer);
    for (name, app) in [("bare", bare), ("layer", layered)] {
        for traced in [false, true] {
            let label = format!("trace_context/{name}/{}", if traced { "traceparent" } else { "none" });
            c.bench_function(&label, |b| {
                b.iter_batched(
                    || request(traced),
                    |req| black_box(rt.block_on(app.clone().oneshot(req)).expect("answer")),
                    BatchSize::SmallInput,
                )
            });
        }
    }
}

fn parse(c: &mut Criterion) {
    let headers = request(true).headers().clone();
    c.bench_function("trace_context/from_headers", |b| {
        b.iter(|| black_box(chitty::providers::trace::IncomingTrace::from_headers(black_box(&headers))))
    });
}

criterion_group!(benches, bench, parse);
criterion_main!(benches);
