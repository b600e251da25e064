//! The admin API over HTTP, on a gateway built from a configuration file with `[admin]` and the in-memory
//! access store: tenants, keys, delegated keys and revocation, and the errors each refusal carries.

#![cfg(feature = "server")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chitty_core::access::{AccessStore, KeyDigest, KeyRecord, TenantRecord};
use chitty_core::gateway::{Gateway, GatewayConfig, ModelConfig, RouteConfig, api_key_digest};
use chitty_core::runtime::TokioSpawner;
use chitty_core::{Error, ManualClock, ManualTimer, ModelPrice, Timestamp};
use chitty_providers::config::GatewayFile;
use chitty_providers::memory::MemoryAccessStore;
use chitty_providers::server::{ConnectionLimits, GatewayApp, Server};
use chitty_testkit::mock::MockProvider;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "sk-admin-test";

fn config() -> String {
    format!(
        r#"
[admin]
key_sha256 = ["{admin}"]

[[providers]]
name = "mock"
kind = "mock"

[[models]]
name = "chat"
routes = [{{ provider = "mock", model = "chat" }}]
price = {{ input = "1", output = "2" }}

[[models]]
name = "other"
routes = [{{ provider = "mock", model = "other" }}]
price = {{ input = "1", output = "2" }}

[[tenants]]
id = "from-file"
key_sha256 = ["{file_key}"]
"#,
        admin = api_key_digest(ADMIN_KEY),
        file_key = api_key_digest("sk-file"),
    )
}

struct Api {
    base: String,
    http: reqwest::Client,
    _app: GatewayApp,
}

impl Api {
    async fn start(toml: &str) -> Api {
        let file = GatewayFile::parse(toml).unwrap();
        let app = file.build_with(vec![Arc::new(MockProvider::new("mock"))]).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = app.router.clone();
        tokio::spawn(async move {
            Server::new(ConnectionLimits::default()).serve(listener, router, std::future::pending()).await
        });
        Api { base, http: reqwest::Client::new(), _app: app }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(ADMIN_KEY), body).await
    }

    /// The models `key` may use, or the status it was refused with.
    async fn models(&self, key: &str) -> Result<Vec<String>, StatusCode> {
        let (status, body) = self.call(reqwest::Method::GET, "/v1/models", Some(key), None).await;
        if status != StatusCode::OK {
            return Err(status);
        }
        Ok(body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect())
    }
}

fn param(body: &Value) -> Option<&str> {
    body["error"]["param"].as_str()
}

#[tokio::test]
async fn tenants_keys_and_delegated_keys_through_the_admin_api() {
    use reqwest::Method;
    let api = Api::start(&config()).await;

    let new_tenant = json!({"id": "acme", "budget_usd": "10.00", "budget_period": "monthly", "rpm": 600,
        "tpm": 100000, "models": ["chat", "other"]});
    let (status, body) = api.call(Method::POST, "/admin/v1/tenants", None, Some(new_tenant.clone())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_api_key")));
    let (status, _) = api.call(Method::POST, "/admin/v1/tenants", Some("sk-file"), Some(new_tenant.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a tenant key never reaches the admin API");

    let (status, tenant) = api.admin(Method::POST, "/admin/v1/tenants", Some(new_tenant.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    assert_eq!(tenant["budget_usd"], "10.000000000");
    assert_eq!((tenant["budget_period"].as_str(), tenant["rpm"].as_u64()), (Some("monthly"), Some(600)));
    let (status, body) = api.admin(Method::POST, "/admin/v1/tenants", Some(new_tenant)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));

    let (status, read) = api.admin(Method::GET, "/admin/v1/tenants/acme", None).await;
    assert_eq!((status, &read), (StatusCode::OK, &tenant));
    let (status, body) = api.admin(Method::GET, "/admin/v1/tenants/nobody", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    // Bad fields are named; nothing changes.
    for (patch, field) in [
        (json!({"budget_usd": "ten"}), "budget_usd"),
        (json!({"budget_period": "hourly"}), "budget_period"),
        (json!({"rpm": -1}), "rpm"),
    ] {
        let (status, body) = api.admin(Method::PATCH, "/admin/v1/tenants/acme", Some(patch)).await;
        assert_eq!((status, param(&body)), (StatusCode::BAD_REQUEST, Some(field)), "{body}");
    }
    let (status, body) = api.admin(Method::PATCH, "/admin/v1/tenants/acme", Some(json!({"colour": "red"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("colour"), "{body}");
    let (status, patched) = api.admin(Method::PATCH, "/admin/v1/tenants/acme", Some(json!({"rpm": null}))).await;
    assert_eq!(
        (status, &patched["rpm"], &patched["budget_usd"]),
        (StatusCode::OK, &Value::Null, &tenant["budget_usd"])
    );
    let (status, body) = api.admin(Method::POST, "/admin/v1/tenants", Some(json!({"id": "a{b}"}))).await;
    assert_eq!((status, param(&body)), (StatusCode::BAD_REQUEST, Some("id")));

    // A key, shown once, usable at once; the tenant's models bound it.
    let (status, key) = api.admin(Method::POST, "/admin/v1/tenants/acme/keys", Some(json!({"name": "ci"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let (parent_id, parent_secret) = (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned());
    assert!(parent_secret.starts_with("sk-chitty-") && parent_secret.len() == 10 + 64);
    assert_eq!(api.models(&parent_secret).await.unwrap(), ["chat", "other"]);
    let (status, _) = api.call(Method::GET, "/admin/v1/tenants/acme", Some(&parent_secret), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a minted key is a tenant key, not an admin key");
    let (status, body) = api.admin(Method::POST, "/admin/v1/tenants/nobody/keys", Some(json!({"name": "x"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    for (bad, field) in [
        (json!({"name": "x", "budget_usd": "11"}), "budget_usd"),
        (json!({"name": "x", "expires_at": "yesterday"}), "expires_at"),
        (json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
        (json!({"name": ""}), "name"),
    ] {
        let (status, body) = api.admin(Method::POST, "/admin/v1/tenants/acme/keys", Some(bad)).await;
        assert_eq!((status, param(&body)), (StatusCode::BAD_REQUEST, Some(field)), "{body}");
    }

    // A delegated key narrows its parent; it cannot widen it.
    let delegate = format!("/admin/v1/keys/{parent_id}/delegate");
    let (status, body) = api.admin(Method::POST, &delegate, Some(json!({"name": "bot", "models": ["gpt-9"]}))).await;
    assert_eq!((status, param(&body)), (StatusCode::BAD_REQUEST, Some("models")), "{body}");
    let (status, child) = api
        .admin(
            Method::POST,
            &delegate,
            Some(json!({"name": "bot", "models": ["chat"], "budget_usd": "1",
            "expires_at": "2999-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{child}");
    assert_eq!(child["parent"].as_str(), Some(parent_id.as_str()));
    assert_eq!(child["expires_at"], "2999-01-01T00:00:00Z");
    let child_secret = child["key"].as_str().unwrap().to_owned();
    assert_eq!(api.models(&child_secret).await.unwrap(), ["chat"]);
    let (status, grandchild) = api
        .admin(
            Method::POST,
            &format!("/admin/v1/keys/{}/delegate", child["id"].as_str().unwrap()),
            Some(json!({"name": "sub", "budget_usd": "2"})),
        )
        .await;
    assert_eq!((status, param(&grandchild)), (StatusCode::BAD_REQUEST, Some("budget_usd")), "inside the parent's $1");

    // Revoking the parent revokes the delegated key too, at once.
    let (status, body) = api.admin(Method::DELETE, &format!("/admin/v1/keys/{parent_id}"), None).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(api.models(&parent_secret).await, Err(StatusCode::UNAUTHORIZED));
    assert_eq!(api.models(&child_secret).await, Err(StatusCode::UNAUTHORIZED));
    let (status, _) = api.admin(Method::DELETE, "/admin/v1/keys/key_unknown", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api.admin(Method::POST, &delegate, Some(json!({"name": "late"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a revoked key cannot delegate: {body}");

    // The file's tenant was seeded into the store and still works.
    assert_eq!(api.models("sk-file").await.unwrap(), ["chat", "other"]);
}

#[tokio::test]
async fn a_config_with_admin_and_no_tenants_is_valid_and_a_bad_admin_digest_is_named() {
    let only_admin = config().split("[[tenants]]").next().unwrap().to_owned();
    let api = Api::start(&only_admin).await;
    let (status, _) = api.admin(reqwest::Method::POST, "/admin/v1/tenants", Some(json!({"id": "t"}))).await;
    assert_eq!(status, StatusCode::CREATED);

    let bad = only_admin.replace(&api_key_digest(ADMIN_KEY), "not-hex");
    let error = GatewayFile::parse(&bad).unwrap().gateway_config().unwrap_err().to_string();
    assert!(error.contains("admin.key_sha256[0]"), "{error}");
    let shared = format!("{}\n[[tenants]]\nid = \"t\"\nkey_sha256 = [\"{}\"]\n", only_admin, api_key_digest(ADMIN_KEY));
    let error = GatewayFile::parse(&shared).unwrap().gateway_config().unwrap_err().to_string();
    assert!(error.contains("also a tenant's key"), "{error}");
}

/// Expiry needs no reload: the gateway compares a key's expiry (and its ancestors') with its clock per request.
#[tokio::test]
async fn an_expired_key_or_one_under_an_expired_parent_is_refused_without_a_reload() {
    let clock = ManualClock::new(Timestamp(1_000_000));
    let store = Arc::new(MemoryAccessStore::new());
    store.create_tenant(TenantRecord::new("acme")).await.unwrap();
    let key = |id: &str, secret: &str, parent: Option<&str>, expires: Option<u64>| KeyRecord {
        id: id.into(),
        tenant: "acme".into(),
        parent: parent.map(Into::into),
        name: id.into(),
        digest: KeyDigest::of(secret),
        budget: None,
        models: None,
        expires_at: expires.map(Timestamp),
        rpm: None,
        tpm: None,
        created_at: Timestamp(0),
        revoked_at: None,
    };
    store.create_key(key("key_parent", "sk-parent", None, Some(2_000_000))).await.unwrap();
    store.create_key(key("key_child", "sk-child", Some("key_parent"), None)).await.unwrap();
    let config = GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![RouteConfig::new("mock", "chat")],
            price: ModelPrice::from_micros_per_mtok(1, 1),
            ..ModelConfig::new("chat")
        }],
        ..GatewayConfig::default()
    };
    let gateway = Gateway::builder(config)
        .provider(Arc::new(MockProvider::new("mock")))
        .access(store.clone())
        .runtime(Arc::new(clock.clone()), Arc::new(ManualTimer::new(clock.clone())), Arc::new(TokioSpawner))
        .build()
        .await
        .unwrap();
    assert_eq!(gateway.authenticate("sk-child").unwrap().key.unwrap().id(), "key_child");
    clock.advance(Duration::from_millis(999_999));
    assert!(gateway.authenticate("sk-parent").is_ok());
    clock.advance(Duration::from_millis(1));
    assert!(matches!(gateway.authenticate("sk-parent"), Err(Error::InvalidApiKey)));
    assert!(matches!(gateway.authenticate("sk-child"), Err(Error::InvalidApiKey)), "the parent's expiry binds it");
}

/// Keys' budgets nest inside their parents' and the tenant's; the spend report adds up to the nano-USD.
#[tokio::test]
async fn nested_key_budgets_bind_and_spend_is_reported_by_model_and_key() {
    use reqwest::Method;
    let api = Api::start(&config()).await;
    let (status, _) =
        api.admin(Method::POST, "/admin/v1/tenants", Some(json!({"id": "spender", "budget_usd": "1"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, parent) = api
        .admin(Method::POST, "/admin/v1/tenants/spender/keys", Some(json!({"name": "a", "budget_usd": "0.0002"})))
        .await;
    let parent_id = parent["id"].as_str().unwrap().to_owned();
    let (_, child) = api
        .admin(
            Method::POST,
            &format!("/admin/v1/keys/{parent_id}/delegate"),
            Some(json!({"name": "b", "budget_usd": "0.0001"})),
        )
        .await;
    let child_id = child["id"].as_str().unwrap().to_owned();

    let chat = |key: String, model: &'static str| {
        let request = api.http.post(format!("{}/v1/chat/completions", api.base)).bearer_auth(key).json(&json!({
            "model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "say something short"}]
        }));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let cost =
                response.headers().get("x-chitty-cost-nano-usd").map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let body: Value = response.json().await.unwrap();
            (status, cost.unwrap_or(0), body)
        }
    };
    let (mut child_cost, mut refused) = (0u64, None);
    for _ in 0..200 {
        let (status, cost, body) = chat(child["key"].as_str().unwrap().to_owned(), "chat").await;
        if status == StatusCode::OK {
            child_cost += cost;
        } else {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the delegated key's $0.0001 ran out");
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("insufficient_quota")));
    assert!(child_cost <= 100_000, "the delegated key spent {child_cost} nano-USD of its 100,000");

    // The parent still has what the child did not use of its own $0.0002, and spends on another model.
    let (mut parent_cost, mut parent_refused) = (0u64, false);
    for _ in 0..200 {
        let (status, cost, _) = chat(parent["key"].as_str().unwrap().to_owned(), "other").await;
        if status != StatusCode::OK {
            parent_refused = true;
            break;
        }
        parent_cost += cost;
    }
    assert!(parent_refused && parent_cost > 0, "the parent spends, then its own budget binds");
    assert!(child_cost + parent_cost <= 200_000, "parent and child together stay inside the parent's budget");

    let (status, spend) = api.admin(Method::GET, "/admin/v1/tenants/spender/spend", None).await;
    assert_eq!(status, StatusCode::OK, "{spend}");
    let nanos = |v: &Value| v.as_str().unwrap().parse::<chitty_core::NanoUsd>().unwrap().0;
    assert_eq!(nanos(&spend["spent_usd"]), child_cost + parent_cost, "{spend}");
    assert_eq!(nanos(&spend["reserved_usd"]), 0);
    assert_eq!(spend["limit_usd"], "1.000000000");
    assert_eq!((nanos(&spend["by_model"]["chat"]), nanos(&spend["by_model"]["other"])), (child_cost, parent_cost));
    assert_eq!((nanos(&spend["by_key"][&child_id]), nanos(&spend["by_key"][&parent_id])), (child_cost, parent_cost));
    assert_eq!((spend["period_start"].as_str(), &spend["period_end"]), (Some("1970-01-01T00:00:00Z"), &Value::Null));
}
