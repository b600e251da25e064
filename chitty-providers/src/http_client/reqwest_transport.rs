//! The transport through a `reqwest::Client`: the default when a proxy is configured, or a host's own client.

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::BodyExt;

use super::{BoxError, HttpTransport, ResponseBody, TransportError, TransportErrorKind};

/// Sends through a `reqwest::Client` (its proxies, TLS settings and pool).
#[derive(Debug, Clone)]
pub(super) struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    pub(super) fn new(client: reqwest::Client) -> ReqwestTransport {
        ReqwestTransport { client }
    }
}

#[async_trait]
impl HttpTransport for ReqwestTransport {
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<ResponseBody>, TransportError> {
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))
            .map_err(|e| TransportError::new(TransportErrorKind::Request, e.without_url()))?;
        let response = self.client.execute(request).await.map_err(classify)?;
        let response = http::Response::from(response);
        // reqwest appends the URL to its messages; a URL may carry a credential in its query (Azure's `api-key`).
        Ok(response.map(|body| body.map_err(|e| -> BoxError { Box::new(e.without_url()) }).boxed_unsync()))
    }
}

/// reqwest's error as a [`TransportError`] of the kind it reports, without the URL.
fn classify(e: reqwest::Error) -> TransportError {
    // A connect timeout is a connect failure first: tested before `is_timeout`.
    let kind = if e.is_connect() {
        TransportErrorKind::Connect
    } else if e.is_timeout() {
        TransportErrorKind::Timeout
    } else if e.is_builder() {
        TransportErrorKind::Request
    } else if e.is_decode() {
        TransportErrorKind::Decode
    } else {
        TransportErrorKind::Interrupted
    };
    TransportError::new(kind, e.without_url())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure_without_the_url() {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let transport = ReqwestTransport::new(reqwest::Client::builder().no_proxy().build().unwrap());
        let request =
            http::Request::post(format!("http://127.0.0.1:{port}/v1/x?api-key=secret")).body(Bytes::new()).unwrap();
        let err = transport.send(request).await.unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Connect);
        let chain = crate::http_provider::describe(&err);
        assert!(!chain.contains("secret") && !chain.contains(&port.to_string()), "{chain}");
    }
}
