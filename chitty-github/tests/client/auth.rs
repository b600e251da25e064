//! JWT claims, installation-token caching, refresh at the margin, single flight, 401 after minting.

use std::time::Duration;

use chitty_github::client::{AppCredentials, ClientError, GitHubApp, InstallationId, Method};
use chitty_testkit::github_api::Fault;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;

use super::{Harness, INSTALLATION, ISSUER, PUBLIC_KEY, START, jittered};

#[derive(Debug, Deserialize)]
struct Claims {
    iat: u64,
    exp: u64,
    iss: String,
}

fn decode(jwt: &str) -> Claims {
    let mut validation = Validation::new(Algorithm::RS256);
    // The claims are checked against the virtual clock below, not the wall clock.
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["iat", "exp", "iss"]);
    let key = DecodingKey::from_rsa_pem(PUBLIC_KEY).unwrap();
    jsonwebtoken::decode::<Claims>(jwt, &key, &validation).unwrap().claims
}

#[tokio::test]
async fn jwt_is_rs256_backdated_short_lived_and_names_the_issuer() {
    let h = Harness::new().await;
    let jwt = h.app.jwt().unwrap();
    let header = jsonwebtoken::decode_header(jwt.expose_secret()).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let claims = decode(jwt.expose_secret());
    let now = START.as_secs();
    assert_eq!(claims.iat, now - 60);
    assert_eq!(claims.exp, now + 9 * 60);
    assert!(claims.exp - claims.iat <= 600, "GitHub refuses JWTs living over 10 minutes");
    assert_eq!(claims.iss, ISSUER);

    // The JWT the exchange carried verifies with the public key and follows the clock.
    h.clock.advance(Duration::from_secs(3600));
    h.app.installation_token(INSTALLATION).await.unwrap();
    let exchange = h.github.requests().into_iter().find(|r| r.path.ends_with("/access_tokens")).unwrap();
    let claims = decode(exchange.credential().unwrap());
    assert_eq!(claims.iat, now + 3600 - 60);
}

#[tokio::test]
async fn secrets_never_show_in_debug_or_errors() {
    let h = Harness::new().await;
    let token = h.app.installation_token(INSTALLATION).await.unwrap();
    assert!(token.expose_secret().starts_with("ghs_"));
    let jwt = h.app.jwt().unwrap();
    let credentials = AppCredentials::from_pem(ISSUER, super::PRIVATE_KEY).unwrap();
    let printed = format!("{:?} {:?} {:?} {:?} {:?}", h.app, token, jwt, credentials, h.repo());
    assert!(!printed.contains(token.expose_secret()));
    assert!(!printed.contains(jwt.expose_secret()));
    assert!(!printed.contains("PRIVATE KEY"));
    assert!(printed.contains(ISSUER));

    h.github.refuse_fresh_tokens(100);
    h.github.revoke_tokens();
    let err = h.repo().get::<serde_json::Value>("/repos/o/r").await.unwrap_err();
    let printed = format!("{err} {err:?}");
    assert!(!printed.contains("ghs_"), "{printed}");
}

#[tokio::test]
async fn token_is_cached_and_refreshed_at_the_margin() {
    let h = Harness::new().await; // tokens live 1 h, the margin is 5 min
    let first = h.app.installation_token(INSTALLATION).await.unwrap();
    assert_eq!(first.expires_at(), START.plus(Duration::from_secs(3600)));
    let again = h.app.installation_token(INSTALLATION).await.unwrap();
    assert_eq!(again.expose_secret(), first.expose_secret());
    assert_eq!(h.github.token_exchanges(INSTALLATION.0), 1);

    h.clock.advance(Duration::from_secs(55 * 60 - 1));
    h.app.installation_token(INSTALLATION).await.unwrap();
    assert_eq!(h.github.token_exchanges(INSTALLATION.0), 1, "still outside the 5 min margin");

    h.clock.advance(Duration::from_secs(1));
    let refreshed = h.app.installation_token(INSTALLATION).await.unwrap();
    assert_eq!(h.github.token_exchanges(INSTALLATION.0), 2, "refreshed 5 min before expiry");
    assert_ne!(refreshed.expose_secret(), first.expose_secret());

    // Installations have their own tokens.
    h.app.installation_token(InstallationId(7)).await.unwrap();
    assert_eq!(h.github.token_exchanges(7), 1);
    assert_eq!(h.github.token_exchanges(INSTALLATION.0), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_callers_cause_one_exchange() {
    let h = Harness::new().await;
    let app: GitHubApp = h.app.clone();
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(
                async move { app.installation_token(INSTALLATION).await.map(|t| t.expose_secret().to_owned()) },
            )
        })
        .collect();
    let mut secrets = Vec::new();
    for caller in callers {
        secrets.push(caller.await.unwrap().unwrap());
    }
    assert_eq!(h.github.token_exchanges(INSTALLATION.0), 1);
    assert!(secrets.iter().all(|s| s == &secrets[0]));

    // Same through REST calls after the token needs refreshing.
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.clock.advance(Duration::from_secs(3600));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let repo = app.installation(INSTALLATION);
            tokio::spawn(async move { repo.get::<serde_json::Value>("/repos/o/r").await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(h.github.token_exchanges(INSTALLATION.0), 2);
}

#[tokio::test]
async fn tokens_are_replaced_before_github_expires_them() {
    let h = Harness::with_config(|c| c.token_refresh_margin = Duration::from_secs(60)).await;
    h.github.set_token_ttl(Duration::from_secs(10 * 60));
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    for _ in 0..10 {
        h.repo().get::<serde_json::Value>("/repos/o/r").await.unwrap();
        h.clock.advance(Duration::from_secs(3 * 60));
    }
    // 30 virtual minutes with 10-minute tokens refreshed a minute early: a new token every 9 minutes
    // or less, and never a request with an expired one.
    assert_eq!(h.github.token_exchanges(INSTALLATION.0), 4);
    assert_eq!(h.github.count(Method::GET, "/repos/o/r"), 10, "no 401 from an expired token");
}

#[tokio::test]
async fn a_failed_refresh_falls_back_to_the_current_token_until_it_expires() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    let first = h.app.installation_token(INSTALLATION).await.unwrap();
    h.clock.advance(Duration::from_secs(56 * 60)); // inside the 5 min margin
    let exchange = "/app/installations/42/access_tokens";
    h.github.inject_on(Some(Method::POST), Some(exchange), Fault::status(500, "Server Error"), 1_000);
    h.repo().get::<serde_json::Value>("/repos/o/r").await.unwrap();
    assert_eq!(h.github.token_exchanges(INSTALLATION.0), 1 + 4, "one refresh tried with 3 retries");
    let used = h.github.requests().into_iter().rfind(|r| r.path == "/repos/o/r").unwrap();
    assert_eq!(used.credential(), Some(first.expose_secret()));

    h.clock.set(first.expires_at());
    let err = h.repo().get::<serde_json::Value>("/repos/o/r").await.unwrap_err();
    assert_eq!(err.status(), Some(500), "no usable token left: the exchange error surfaces");
}

#[tokio::test]
async fn a_401_right_after_minting_is_retried_briefly() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.github.refuse_fresh_tokens(2);
    let repo: serde_json::Value = h.repo().get("/repos/o/r").await.unwrap();
    assert_eq!(repo["id"], 1);
    assert_eq!(h.github.token_exchanges(INSTALLATION.0), 1, "same token, retried");
    assert_eq!(h.github.count(Method::GET, "/repos/o/r"), 3);
    let waited = jittered(Duration::from_millis(500), &[0, 1]);
    assert_eq!(h.elapsed(), waited, "jittered backoff on the virtual timer");
    assert!(waited <= Duration::from_millis(500 + 1000), "at most 500 ms, then 1 s: {waited:?}");
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.app.installation_token(INSTALLATION).await.unwrap();
    h.clock.advance(Duration::from_secs(600));
    h.github.revoke_tokens();
    h.repo().get::<serde_json::Value>("/repos/o/r").await.unwrap();
    assert_eq!(h.github.token_exchanges(INSTALLATION.0), 2);
    assert_eq!(h.github.count(Method::GET, "/repos/o/r"), 2);
}

#[tokio::test]
async fn a_token_that_keeps_failing_gives_up_with_401() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.github.refuse_fresh_tokens(1_000);
    let err = h.repo().get::<serde_json::Value>("/repos/o/r").await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(matches!(err, ClientError::Api { ref message, .. } if message == "Bad credentials"));
    // First token: 1 + 3 retries (the budget is per call), then one re-minted token tried once.
    assert_eq!(h.github.count(Method::GET, "/repos/o/r"), 5);
    assert_eq!(h.github.token_exchanges(INSTALLATION.0), 2);
}

#[test]
fn garbage_private_key_is_refused_at_construction() {
    assert!(matches!(AppCredentials::from_pem("1", b"nope"), Err(ClientError::InvalidPrivateKey { .. })));
}
