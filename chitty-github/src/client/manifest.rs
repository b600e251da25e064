//! The App-level calls of the install flow: the manifest code conversion (no credentials yet) and
//! reading one installation with the App JWT.

use reqwest::header::{self, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;

use super::config::ClientConfig;
use super::error::ClientError;
use super::jwt::AppCredentials;
use super::transport::{ApiRequest, AuthScope, github_message};
use super::{CONNECT_TIMEOUT, GitHubApp, InstallationId};
use crate::credentials::{AppRegistration, SecretText};
use crate::events::Installation;

/// Longest manifest code taken (GitHub's are 20 hex digits).
const MAX_CODE_LEN: usize = 128;

/// GitHub's answer to a manifest conversion; secrets go straight into [`SecretText`].
#[derive(Deserialize)]
struct ConversionWire {
    id: u64,
    slug: Option<String>,
    name: Option<String>,
    html_url: Option<String>,
    owner: Option<OwnerWire>,
    client_id: String,
    client_secret: SecretText,
    webhook_secret: Option<SecretText>,
    pem: SecretText,
}

#[derive(Deserialize)]
struct OwnerWire {
    login: String,
}

/// Whether `code` can be a manifest code: it becomes a path segment, so only a small alphabet is taken.
pub(crate) fn is_manifest_code(code: &str) -> bool {
    (1..=MAX_CODE_LEN).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Exchanges the `code` GitHub's manifest flow returned for the new App's credentials:
/// `POST {base_url}/app-manifests/{code}/conversions` (unauthenticated; a code works once, for an hour).
///
/// The private key is checked to be an RSA PEM key before the registration is returned.
pub async fn convert_manifest_code(config: &ClientConfig, code: &str) -> Result<AppRegistration, ClientError> {
    if !is_manifest_code(code) {
        return Err(ClientError::InvalidConfig { reason: "the manifest code is not of GitHub's form".to_owned() });
    }
    let mut url = Url::parse(&config.base_url)
        .map_err(|e| ClientError::InvalidConfig { reason: format!("base URL {:?}: {e}", config.base_url) })?;
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(["app-manifests", code, "conversions"]);
    }
    let http = reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(config.request_timeout)
        .build()
        .map_err(|e| ClientError::InvalidConfig { reason: format!("HTTP client: {e}") })?;
    let response = http
        .request(Method::POST, url.clone())
        .header(header::ACCEPT, "application/vnd.github+json")
        .header("x-github-api-version", config.api_version.as_str())
        // GitHub answers a bodiless POST without a length with 411.
        .header(header::CONTENT_LENGTH, HeaderValue::from_static("0"))
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                ClientError::Timeout { timeout: config.request_timeout }
            } else {
                ClientError::Transport { source: Box::new(e.without_url()) }
            }
        })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| ClientError::Transport { source: Box::new(e.without_url()) })?;
    // The path names the code, which is a one-use credential: errors say only where it was sent.
    let path = "/app-manifests/{code}/conversions".to_owned();
    if !status.is_success() {
        let error = github_message(&body, status);
        return Err(ClientError::Api {
            method: "POST".to_owned(),
            path,
            status: status.as_u16(),
            message: error.message,
            documentation_url: error.documentation_url,
            errors: error.errors,
        });
    }
    // serde's messages can quote what they choke on (a key, a secret): say only where.
    let wire: ConversionWire = serde_json::from_slice(&body).map_err(|e| ClientError::InvalidResponse {
        reason: format!(
            "the manifest conversion is not an App with credentials ({:?} at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })?;
    AppCredentials::from_pem(wire.client_id.clone(), wire.pem.expose_secret().as_bytes())?;
    tracing::info!(app_id = wire.id, slug = ?wire.slug, "GitHub App registered from the manifest");
    Ok(AppRegistration {
        app_id: wire.id,
        slug: wire.slug,
        name: wire.name,
        owner: wire.owner.map(|o| o.login),
        html_url: wire.html_url,
        client_id: wire.client_id,
        client_secret: wire.client_secret,
        webhook_secret: wire.webhook_secret,
        private_key_pem: wire.pem,
    })
}

impl GitHubApp {
    /// `GET /app/installations/{id}` with the App JWT: the installation, if it is one of this App's
    /// (GitHub answers 404 for any other id, [`ClientError::is_not_found`]).
    pub async fn fetch_installation(&self, installation: InstallationId) -> Result<Installation, ClientError> {
        let url = self.inner.url(&["app", "installations", &installation.to_string()]);
        let response = self.inner.execute(AuthScope::App, ApiRequest::new(Method::GET, url, None)).await?;
        response.json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_codes_of_githubs_form_reach_the_path() {
        assert!(is_manifest_code("a180b1a3d263c81bc6441d7b990bae27d4c10679"));
        for bad in ["", "../app", "a/b", "code?x=1", &"a".repeat(129)] {
            assert!(!is_manifest_code(bad), "{bad}");
        }
    }
}
