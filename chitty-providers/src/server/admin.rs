//! The admin API: tenants, keys and delegated keys at run time, over the gateway's access store.
//!
//! Every request needs `Authorization: Bearer <admin key>`, checked against SHA-256 digests given at
//! construction (`[admin] key_sha256` in the configuration); tenant keys are never admin keys, whatever
//! they may do on `/v1`. Bodies are JSON; money is a decimal dollar string (`"25.00"`), times are RFC 3339.
//! Errors use the gateway's envelope: 400 naming the field in `param`, 401, 404, 409 on a duplicate id.
//!
//! | Method and path | Body | Answer |
//! |---|---|---|
//! | `POST /admin/v1/tenants` | `id`, `budget_usd`, `budget_period`, `rpm`, `tpm`, `models` | 201, the tenant |
//! | `GET /admin/v1/tenants/{id}` | | 200, the tenant |
//! | `PATCH /admin/v1/tenants/{id}` | any of the fields above but `id` (`null` clears one) | 200, the tenant |
//! | `POST /admin/v1/tenants/{id}/keys` | `name`, `budget_usd`?, `models`?, `expires_at`?, `rpm`?, `tpm`? | 201, `{"id", "key", …}` |
//! | `POST /admin/v1/keys/{id}/delegate` | the same | 201, `{"id", "key", …}` |
//! | `DELETE /admin/v1/keys/{id}` | | 204 (the key and its delegated keys) |
//! | `GET /admin/v1/tenants/{id}/spend` | | 200, `{"limit_usd", "spent_usd", "reserved_usd", "period_start", "period_end", "by_model", "by_key"}` for the current budget period |
//!
//! The `key` field of a 201 is the secret, shown this once; the store keeps its digest. A change is visible
//! on this replica when the answer is sent, and on replicas sharing the store when they reload (PostgreSQL
//! notifies them at once; see [`crate::access_sync`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chitty_core::access::{
    AccessStore, BudgetPeriod, KeyDigest, KeyRecord, TenantRecord, TenantUpdate, check_delegation, check_key_in_tenant,
    validate_id,
};
use chitty_core::gateway::Gateway;
use chitty_core::{Error, NanoUsd, Result, Timestamp};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{ApiError, bearer, request_id};

/// Prefix of every key the admin API mints; the rest is 256 random bits in hex.
pub const KEY_PREFIX: &str = "sk-chitty-";

#[derive(Debug)]
struct AdminState {
    gateway: Gateway,
    store: Arc<dyn AccessStore>,
    admin_keys: Vec<KeyDigest>,
}

/// The admin routes over `gateway`'s access store, for admin keys whose SHA-256 digests are `admin_keys`.
/// Fails when the gateway has no access store ([`chitty_core::gateway::GatewayBuilder::access`]) or when no
/// admin key is given (an admin API nobody can call is a configuration mistake).
pub fn admin_router(gateway: Gateway, admin_keys: Vec<KeyDigest>) -> Result<Router> {
    let store = gateway.access_store().cloned().ok_or_else(|| Error::InvalidInput {
        what: "admin API".into(),
        reason: "the gateway has no access store to manage".into(),
    })?;
    if admin_keys.is_empty() {
        return Err(Error::InvalidInput { what: "admin API".into(), reason: "no admin key digest given".into() });
    }
    let state = Arc::new(AdminState { gateway, store, admin_keys });
    Ok(Router::new()
        .route("/admin/v1/tenants", post(create_tenant))
        .route("/admin/v1/tenants/{id}", get(read_tenant).patch(update_tenant))
        .route("/admin/v1/tenants/{id}/keys", post(create_key))
        .route("/admin/v1/tenants/{id}/spend", get(read_spend))
        .route("/admin/v1/keys/{id}/delegate", post(delegate_key))
        .route("/admin/v1/keys/{id}", delete(revoke_key))
        .with_state(state))
}

type AdminResult = std::result::Result<Response, ApiError>;

impl AdminState {
    /// Refuses a request without a configured admin key; every digest is compared, in constant time.
    fn authorize(&self, headers: &HeaderMap, request_id: &str) -> std::result::Result<(), ApiError> {
        let presented = KeyDigest::of(bearer(headers).unwrap_or_default());
        let matched = self.admin_keys.iter().fold(0u8, |acc, k| acc | k.0.ct_eq(&presented.0).unwrap_u8());
        if bearer(headers).is_some() && matched == 1 {
            Ok(())
        } else {
            Err(ApiError::new(Error::InvalidApiKey, request_id))
        }
    }

    /// Makes a write visible on this replica before answering; other replicas reload on their own.
    async fn reload(&self) {
        if let Err(e) = self.gateway.reload_access().await {
            tracing::warn!(error = %e, "reloading tenants and keys after an admin change failed");
        }
    }
}

/// Parses a JSON body; an error names the field at fault in `param`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != ".").then_some(path.as_str());
        Error::invalid_request(format!("invalid request body: {}", e.inner()), param)
    })
}

/// A present field, `null` included: `Some(None)` clears, an absent field (serde's default) keeps.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn dollars(field: &str, text: Option<&str>) -> Result<Option<NanoUsd>> {
    text.map(|t| t.parse::<NanoUsd>().map_err(|e| Error::invalid_request(e.to_string(), Some(field)))).transpose()
}

fn check_models(models: Option<&[String]>) -> Result<()> {
    if models.is_some_and(|m| m.iter().any(|name| name.is_empty() || name.len() > 256)) {
        return Err(Error::invalid_request("`models` entries must be 1 to 256 characters", Some("models")));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: String,
    #[serde(default)]
    budget_usd: Option<String>,
    #[serde(default)]
    budget_period: BudgetPeriod,
    #[serde(default)]
    rpm: Option<u32>,
    #[serde(default)]
    tpm: Option<u32>,
    #[serde(default)]
    models: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantPatch {
    #[serde(default, deserialize_with = "present")]
    budget_usd: Option<Option<String>>,
    #[serde(default)]
    budget_period: Option<BudgetPeriod>,
    #[serde(default, deserialize_with = "present")]
    rpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    tpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    models: Option<Option<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    budget_usd: Option<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    rpm: Option<u32>,
    #[serde(default)]
    tpm: Option<u32>,
}

impl AdminState {
    fn check_budget_store(&self, budget: Option<NanoUsd>) -> Result<()> {
        if budget.is_some() && self.gateway.budget_store().is_none() {
            return Err(Error::invalid_request(
                "this gateway has no budget store, so it cannot enforce `budget_usd`",
                Some("budget_usd"),
            ));
        }
        Ok(())
    }

    async fn tenant_record(&self, id: &str) -> Result<TenantRecord> {
        self.store.tenant(id).await?.ok_or_else(|| Error::NotFound { what: "tenant", id: id.to_owned() })
    }

    /// A key for `tenant` (delegated from `parent` when given) from `body`, with a fresh secret.
    fn mint(&self, tenant: &str, parent: Option<&str>, body: NewKey) -> Result<(KeyRecord, String)> {
        if body.name.is_empty() || body.name.len() > 128 {
            return Err(Error::invalid_request("`name` must be 1 to 128 characters", Some("name")));
        }
        check_models(body.models.as_deref())?;
        let now = self.gateway.now();
        let expires_at = body.expires_at.as_deref().map(parse_time).transpose()?;
        if expires_at.is_some_and(|e| e <= now) {
            return Err(Error::invalid_request("`expires_at` is in the past", Some("expires_at")));
        }
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let secret = format!("{KEY_PREFIX}{}", hex::encode(secret));
        let key = KeyRecord {
            id: format!("key_{:016x}", rand::random::<u64>()),
            tenant: tenant.to_owned(),
            parent: parent.map(str::to_owned),
            name: body.name,
            digest: KeyDigest::of(&secret),
            budget: dollars("budget_usd", body.budget_usd.as_deref())?,
            models: body.models,
            expires_at,
            rpm: body.rpm,
            tpm: body.tpm,
            created_at: now,
            revoked_at: None,
        };
        self.check_budget_store(key.budget)?;
        Ok((key, secret))
    }

    async fn store_key(&self, key: KeyRecord, secret: String) -> Result<Response> {
        let key = self.store.create_key(key).await?;
        self.reload().await;
        let body = json!({
            "id": key.id,
            "key": secret,
            "tenant": key.tenant,
            "parent": key.parent,
            "name": key.name,
            "budget_usd": key.budget.map(|b| b.decimal().to_string()),
            "models": key.models,
            "expires_at": key.expires_at.map(format_time).transpose()?,
            "rpm": key.rpm,
            "tpm": key.tpm,
        });
        Ok((StatusCode::CREATED, axum::Json(body)).into_response())
    }
}

/// RFC 3339 to a timestamp, as a 400 on `expires_at` when it does not parse.
fn parse_time(text: &str) -> Result<Timestamp> {
    let bad = || Error::invalid_request("`expires_at` must be an RFC 3339 time after 1970", Some("expires_at"));
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|_| bad())?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).map(Timestamp).map_err(|_| bad())
}

/// A timestamp as RFC 3339 (UTC).
pub(crate) fn format_time(at: Timestamp) -> Result<String> {
    let nanos = i128::from(at.0) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .ok_or_else(|| Error::backend("admin", format!("timestamp {} out of range", at.0)))
}

/// Runs `f` with the request authorised, turning its error into the gateway's envelope.
async fn handle<F, Fut>(state: &AdminState, headers: &HeaderMap, f: F) -> AdminResult
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Response>>,
{
    let id = request_id(headers);
    state.authorize(headers, &id)?;
    f().await.map_err(|e| ApiError::new(e, &id))
}

async fn create_tenant(State(state): State<Arc<AdminState>>, headers: HeaderMap, body: Bytes) -> AdminResult {
    handle(&state, &headers, || async {
        let new: NewTenant = parse(&body)?;
        validate_id("id", &new.id)?;
        check_models(new.models.as_deref())?;
        let tenant = TenantRecord {
            budget: dollars("budget_usd", new.budget_usd.as_deref())?,
            budget_period: new.budget_period,
            rpm: new.rpm,
            tpm: new.tpm,
            models: new.models,
            ..TenantRecord::new(new.id)
        };
        state.check_budget_store(tenant.budget)?;
        let tenant = state.store.create_tenant(tenant).await?;
        state.reload().await;
        Ok((StatusCode::CREATED, axum::Json(tenant)).into_response())
    })
    .await
}

async fn read_tenant(State(state): State<Arc<AdminState>>, Path(id): Path<String>, headers: HeaderMap) -> AdminResult {
    handle(&state, &headers, || async { Ok(axum::Json(state.tenant_record(&id).await?).into_response()) }).await
}

async fn update_tenant(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult {
    handle(&state, &headers, || async {
        let patch: TenantPatch = parse(&body)?;
        let budget = patch.budget_usd.map(|b| dollars("budget_usd", b.as_deref())).transpose()?;
        state.check_budget_store(budget.flatten())?;
        if let Some(Some(models)) = &patch.models {
            check_models(Some(models))?;
        }
        let update = TenantUpdate {
            budget,
            budget_period: patch.budget_period,
            rpm: patch.rpm,
            tpm: patch.tpm,
            models: patch.models,
        };
        let tenant = state.store.update_tenant(&id, &update).await?;
        state.reload().await;
        Ok(axum::Json(tenant).into_response())
    })
    .await
}

async fn read_spend(State(state): State<Arc<AdminState>>, Path(id): Path<String>, headers: HeaderMap) -> AdminResult {
    handle(&state, &headers, || async {
        let tenant = state.tenant_record(&id).await?;
        let budgets = state
            .gateway
            .budget_store()
            .ok_or_else(|| Error::invalid_request("this gateway has no budget store, so it keeps no spend", None))?;
        let now = state.gateway.now();
        let window = tenant.budget_period.window(now);
        let spend = budgets.spend(&id, window.start, now).await?;
        let dollars =
            |amounts: &std::collections::BTreeMap<String, NanoUsd>| -> serde_json::Map<String, serde_json::Value> {
                amounts.iter().map(|(name, amount)| (name.clone(), json!(amount.decimal().to_string()))).collect()
            };
        let own = spend.tenant();
        let body = json!({
            "tenant": id,
            "budget_period": tenant.budget_period,
            "limit_usd": tenant.budget.map(|b| b.decimal().to_string()),
            "spent_usd": own.spent.decimal().to_string(),
            "reserved_usd": own.reserved.decimal().to_string(),
            "period_start": format_time(window.start)?,
            "period_end": window.end.map(format_time).transpose()?,
            "by_model": dollars(&spend.by_model),
            "by_key": dollars(&spend.by_key),
        });
        Ok(axum::Json(body).into_response())
    })
    .await
}

async fn create_key(
    State(state): State<Arc<AdminState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult {
    handle(&state, &headers, || async {
        let new: NewKey = parse(&body)?;
        let record = state.tenant_record(&tenant).await?;
        let (key, secret) = state.mint(&tenant, None, new)?;
        check_key_in_tenant(&record, &key)?;
        state.store_key(key, secret).await
    })
    .await
}

async fn delegate_key(
    State(state): State<Arc<AdminState>>,
    Path(parent_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult {
    handle(&state, &headers, || async {
        let new: NewKey = parse(&body)?;
        let parent =
            state.store.key(&parent_id).await?.ok_or_else(|| Error::NotFound { what: "key", id: parent_id.clone() })?;
        let record = state.tenant_record(&parent.tenant).await?;
        let (key, secret) = state.mint(&parent.tenant, Some(&parent.id), new)?;
        check_key_in_tenant(&record, &key)?;
        check_delegation(&parent, &key, state.gateway.now())?;
        state.store_key(key, secret).await
    })
    .await
}

async fn revoke_key(State(state): State<Arc<AdminState>>, Path(id): Path<String>, headers: HeaderMap) -> AdminResult {
    handle(&state, &headers, || async {
        state.store.revoke_key(&id, state.gateway.now()).await?;
        state.reload().await;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}
