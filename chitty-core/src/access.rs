//! Tenants and API keys at run time: the [`AccessStore`] trait (the sixth plugin trait), the records it keeps,
//! budget periods on UTC calendar boundaries, and the rules a delegated key must follow.
//!
//! A store is the durable copy. The gateway never asks it per request: it authenticates against a local
//! directory built from [`AccessStore::snapshot`] and rebuilt when the store reports a change (see
//! `Gateway::reload_access`). Keys are stored as SHA-256 digests; the secret is shown once, at creation.
//!
//! ```
//! use chitty_core::access::{BudgetPeriod, KeyDigest};
//! use chitty_core::Timestamp;
//!
//! // 2026-12-06T10:00:00Z falls in the week that starts on Monday 2026-11-30 and in December's month.
//! let now = Timestamp(1_796_551_200_000);
//! let week = BudgetPeriod::Weekly.window(now);
//! assert_eq!(week.start, Timestamp(1_795_996_800_000));
//! assert_eq!(week.end, Some(Timestamp(1_796_601_600_000)));
//! assert_eq!(BudgetPeriod::Never.window(now).end, None);
//! // Keys are kept as digests only.
//! assert_ne!(KeyDigest::of("sk-one"), KeyDigest::of("sk-two"));
//! ```

use std::collections::HashSet;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::money::NanoUsd;
use crate::time::Timestamp;

/// The SHA-256 digest of an API key: what stores keep instead of the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// The digest of `secret`.
    pub fn of(secret: &str) -> KeyDigest {
        KeyDigest(Sha256::digest(secret.as_bytes()).into())
    }

    /// Reads 64 hex characters.
    pub fn from_hex(hex_digest: &str) -> Option<KeyDigest> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digest.trim(), &mut digest).ok().map(|()| KeyDigest(digest))
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeyDigest {
    /// The first eight hex characters: enough to tell digests apart in a log, not to look one up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({}…)", &self.to_hex()[..8])
    }
}

/// How often a budget starts again from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// A lifetime budget.
    #[default]
    Never,
    /// Every day at 00:00 UTC.
    Daily,
    /// Every Monday at 00:00 UTC (ISO weeks).
    Weekly,
    /// On the first of every month at 00:00 UTC.
    Monthly,
}

/// The period a given instant falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeriodWindow {
    /// When the period began (the epoch for [`BudgetPeriod::Never`]).
    pub start: Timestamp,
    /// When the next one begins; `None` for a lifetime budget.
    pub end: Option<Timestamp>,
}

const DAY_MS: u64 = 86_400_000;

impl BudgetPeriod {
    /// `never`, `daily`, `weekly` or `monthly`, as in configuration and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Never => "never",
            BudgetPeriod::Daily => "daily",
            BudgetPeriod::Weekly => "weekly",
            BudgetPeriod::Monthly => "monthly",
        }
    }

    /// Reads [`BudgetPeriod::as_str`]'s names.
    pub fn parse(name: &str) -> Option<BudgetPeriod> {
        [BudgetPeriod::Never, BudgetPeriod::Daily, BudgetPeriod::Weekly, BudgetPeriod::Monthly]
            .into_iter()
            .find(|p| p.as_str() == name)
    }

    /// The period `now` falls in. Pure calendar arithmetic: a new period needs no job to start it.
    pub fn window(self, now: Timestamp) -> PeriodWindow {
        let day = now.0 / DAY_MS;
        match self {
            BudgetPeriod::Never => PeriodWindow { start: Timestamp(0), end: None },
            BudgetPeriod::Daily => {
                PeriodWindow { start: Timestamp(day * DAY_MS), end: Some(Timestamp((day + 1) * DAY_MS)) }
            }
            BudgetPeriod::Weekly => {
                // 1970-01-01 was a Thursday: Monday-based weeks start three days later in the cycle.
                let monday = day - (day + 3) % 7;
                PeriodWindow { start: Timestamp(monday * DAY_MS), end: Some(Timestamp((monday + 7) * DAY_MS)) }
            }
            BudgetPeriod::Monthly => {
                let (year, month) = year_month(day);
                let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                PeriodWindow {
                    start: Timestamp(days_from_civil(year, month) * DAY_MS),
                    end: Some(Timestamp(days_from_civil(next_year, next_month) * DAY_MS)),
                }
            }
        }
    }
}

/// The proleptic Gregorian year and month of a day count since 1970-01-01 (Hinnant's `civil_from_days`).
fn year_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

/// Days since 1970-01-01 of the first of `month` in `year` (Hinnant's `days_from_civil`, day 1).
fn days_from_civil(year: u64, month: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A tenant: who pays, and the outer limits every one of its keys stays inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Stable identifier (in metrics, budgets, cache scopes); see [`validate_id`].
    pub id: String,
    /// Spend limit per period; no budget enforcement when unset.
    #[serde(default, rename = "budget_usd", with = "crate::money::optional_dollar_string")]
    pub budget: Option<NanoUsd>,
    /// When the budget starts again from zero.
    #[serde(default)]
    pub budget_period: BudgetPeriod,
    /// Requests per minute; unlimited when unset.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute (prompt plus output cap at admission, corrected at settlement); unlimited when unset.
    #[serde(default)]
    pub tpm: Option<u32>,
    /// Public models the tenant may use (a trailing `*` matches a prefix); every model when unset.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Requests above the steady rate allowed at once; the rate / 6 (at least 1) when unset.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Shares cache entries with every tenant naming the same group; tenant-private when unset.
    #[serde(default)]
    pub cache_group: Option<String>,
}

impl TenantRecord {
    /// A tenant with no budget, no limits and access to every model.
    pub fn new(id: impl Into<String>) -> TenantRecord {
        TenantRecord {
            id: id.into(),
            budget: None,
            budget_period: BudgetPeriod::Never,
            rpm: None,
            tpm: None,
            models: None,
            burst: None,
            cache_group: None,
        }
    }
}

/// Fields of a tenant to change (`PATCH`): a field left `None` is kept; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantUpdate {
    /// New spend limit.
    pub budget: Option<Option<NanoUsd>>,
    /// New budget period.
    pub budget_period: Option<BudgetPeriod>,
    /// New requests per minute.
    pub rpm: Option<Option<u32>>,
    /// New tokens per minute.
    pub tpm: Option<Option<u32>>,
    /// New model list.
    pub models: Option<Option<Vec<String>>>,
}

impl TenantUpdate {
    /// `tenant` with this update applied.
    pub fn apply(&self, mut tenant: TenantRecord) -> TenantRecord {
        if let Some(b) = self.budget {
            tenant.budget = b;
        }
        if let Some(p) = self.budget_period {
            tenant.budget_period = p;
        }
        if let Some(r) = self.rpm {
            tenant.rpm = r;
        }
        if let Some(t) = self.tpm {
            tenant.tpm = t;
        }
        if let Some(m) = &self.models {
            tenant.models.clone_from(m);
        }
        tenant
    }
}

/// An API key: a digest, the tenant it belongs to, and how it narrows the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Identifier (`key_…`), safe to log and to show.
    pub id: String,
    /// The tenant that pays for it.
    pub tenant: String,
    /// The key this one was delegated from; revoking the parent revokes it.
    pub parent: Option<String>,
    /// A label for people.
    pub name: String,
    /// SHA-256 of the secret.
    pub digest: KeyDigest,
    /// Its own spend limit, inside its tenant's (and its parent's), in the tenant's budget period.
    pub budget: Option<NanoUsd>,
    /// Public models it may use, inside its tenant's (and its parent's); theirs when unset.
    pub models: Option<Vec<String>>,
    /// When it stops working.
    pub expires_at: Option<Timestamp>,
    /// Its own requests per minute.
    pub rpm: Option<u32>,
    /// Its own tokens per minute.
    pub tpm: Option<u32>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

impl KeyRecord {
    /// Whether it authenticates at `now`: not revoked and not expired.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// Every tenant and key a store holds, for building a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessSnapshot {
    /// The tenants.
    pub tenants: Vec<TenantRecord>,
    /// The keys, revoked ones included (a directory leaves them out).
    pub keys: Vec<KeyRecord>,
}

/// Tenants and keys, kept durably.
///
/// Contract (checked by `chitty_testkit::access` for every implementation):
/// - `create_tenant` fails with [`Error::Conflict`] when the id exists; `update_tenant` and `tenant` see it.
/// - `create_key` fails with [`Error::Conflict`] when the id or the digest exists, and with
///   [`Error::NotFound`] when the tenant (or the parent key) does not; a parent must belong to the same
///   tenant and be live.
/// - `revoke_key` revokes the key and every key delegated from it, transitively, and returns their ids;
///   revoking a revoked key revokes nothing new and is not an error; an unknown id is [`Error::NotFound`].
/// - `snapshot` returns every tenant and key, revoked keys included.
#[async_trait]
pub trait AccessStore: Send + Sync + fmt::Debug + 'static {
    /// Adds a tenant.
    async fn create_tenant(&self, tenant: TenantRecord) -> Result<TenantRecord>;

    /// Changes a tenant's fields and returns the result.
    async fn update_tenant(&self, id: &str, update: &TenantUpdate) -> Result<TenantRecord>;

    /// One tenant.
    async fn tenant(&self, id: &str) -> Result<Option<TenantRecord>>;

    /// Adds a key (its digest; the secret never reaches the store).
    async fn create_key(&self, key: KeyRecord) -> Result<KeyRecord>;

    /// One key, revoked or not.
    async fn key(&self, id: &str) -> Result<Option<KeyRecord>>;

    /// Revokes a key and its delegated keys at `now`; returns the ids newly revoked.
    async fn revoke_key(&self, id: &str, now: Timestamp) -> Result<Vec<String>>;

    /// Every tenant and key.
    async fn snapshot(&self) -> Result<AccessSnapshot>;

    /// Whether the backend answers (readiness checks); in-process stores always do.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

/// Checks an identifier of a tenant or key: 1 to 64 ASCII letters, digits, `-`, `_` or `.`. They go into
/// metric labels, Redis keys (inside `{…}` hash tags) and URL paths, so nothing else is allowed.
pub fn validate_id(what: &'static str, id: &str) -> Result<()> {
    let ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_request(format!("`{what}` must be 1 to 64 letters, digits, `-`, `_` or `.`"), Some(what)))
    }
}

/// Whether a model list allows `model` (`None` allows everything; a trailing `*` matches a prefix).
pub fn list_allows(models: Option<&[String]>, model: &str) -> bool {
    models.is_none_or(|list| {
        list.iter().any(|a| match a.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => a == model,
        })
    })
}

/// Whether every model `child` allows is allowed by `parent` (patterns compared as patterns).
fn list_within(child: Option<&[String]>, parent: Option<&[String]>) -> bool {
    let Some(parent) = parent else { return true };
    let Some(child) = child else { return false };
    child.iter().all(|c| match c.strip_suffix('*') {
        // A child prefix is covered by an equal or shorter parent prefix.
        Some(prefix) => parent.iter().any(|p| p.strip_suffix('*').is_some_and(|pp| prefix.starts_with(pp))),
        None => list_allows(Some(parent), c),
    })
}

/// Checks that a key delegated from `parent` stays inside it: models a subset of the parent's, a budget no
/// larger, an expiry no later. A field left unset inherits the parent's limit (the gateway checks the whole
/// chain on every request), so only an explicit widening is refused. The error names the field at fault.
pub fn check_delegation(parent: &KeyRecord, child: &KeyRecord, now: Timestamp) -> Result<()> {
    if !parent.is_live(now) {
        return Err(Error::invalid_request(format!("key `{}` is revoked or expired", parent.id), Some("id")));
    }
    if child.models.is_some() && !list_within(child.models.as_deref(), parent.models.as_deref()) {
        return Err(Error::invalid_request("`models` must be a subset of the parent key's models", Some("models")));
    }
    if let (Some(limit), Some(budget)) = (parent.budget, child.budget)
        && budget > limit
    {
        return Err(Error::invalid_request(
            format!("`budget_usd` must be at most the parent key's {}", limit.decimal()),
            Some("budget_usd"),
        ));
    }
    if let (Some(limit), Some(expiry)) = (parent.expires_at, child.expires_at)
        && expiry > limit
    {
        return Err(Error::invalid_request("`expires_at` must be no later than the parent key's", Some("expires_at")));
    }
    Ok(())
}

/// Checks that a key stays inside its tenant: a budget no larger than the tenant's, models within the tenant's.
pub fn check_key_in_tenant(tenant: &TenantRecord, key: &KeyRecord) -> Result<()> {
    if let (Some(limit), Some(b)) = (tenant.budget, key.budget)
        && b > limit
    {
        return Err(Error::invalid_request(
            format!("`budget_usd` must be at most the tenant's {}", limit.decimal()),
            Some("budget_usd"),
        ));
    }
    if key.models.is_some() && !list_within(key.models.as_deref(), tenant.models.as_deref()) {
        return Err(Error::invalid_request("`models` must be a subset of the tenant's models", Some("models")));
    }
    Ok(())
}

/// The ids of `root` and every key delegated from it, transitively (for stores that revoke in memory).
pub fn descendants(keys: &[KeyRecord], root: &str) -> Vec<String> {
    let mut out = vec![root.to_owned()];
    let mut seen: HashSet<&str> = HashSet::from([root]);
    let mut i = 0;
    while i < out.len() {
        let current = out[i].clone();
        for k in keys.iter().filter(|k| k.parent.as_deref() == Some(current.as_str())) {
            if seen.insert(&k.id) {
                out.push(k.id.clone());
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> Timestamp {
        let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
        Timestamp(u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap())
    }

    #[test]
    fn periods_start_on_utc_calendar_boundaries() {
        let now = at("2026-12-06T10:00:00Z");
        let day = BudgetPeriod::Daily.window(now);
        assert_eq!((day.start, day.end), (at("2026-12-06T00:00:00Z"), Some(at("2026-12-07T00:00:00Z"))));
        let week = BudgetPeriod::Weekly.window(now);
        assert_eq!((week.start, week.end), (at("2026-11-30T00:00:00Z"), Some(at("2026-12-07T00:00:00Z"))));
        let month = BudgetPeriod::Monthly.window(now);
        assert_eq!((month.start, month.end), (at("2026-12-01T00:00:00Z"), Some(at("2027-01-01T00:00:00Z"))));
        // Boundaries: the last millisecond of a period and the first of the next.
        let feb = BudgetPeriod::Monthly.window(at("2028-02-29T23:59:59.999Z"));
        assert_eq!((feb.start, feb.end), (at("2028-02-01T00:00:00Z"), Some(at("2028-03-01T00:00:00Z"))));
        assert_eq!(BudgetPeriod::Monthly.window(at("2028-03-01T00:00:00Z")).start, at("2028-03-01T00:00:00Z"));
        let sunday = BudgetPeriod::Weekly.window(at("2026-12-06T23:59:59.999Z"));
        assert_eq!(sunday.start, at("2026-11-30T00:00:00Z"));
        assert_eq!(BudgetPeriod::Weekly.window(at("2026-12-07T00:00:00Z")).start, at("2026-12-07T00:00:00Z"));
    }

    #[test]
    fn monthly_windows_match_the_calendar_for_every_month_of_four_centuries() {
        for year in 1970..2370u64 {
            for month in 1..=12u64 {
                let first = days_from_civil(year, month);
                assert_eq!(year_month(first), (year, month));
                if first > 0 {
                    assert_eq!(year_month(first - 1).1, if month == 1 { 12 } else { month - 1 }, "{year}-{month}");
                }
            }
        }
    }

    fn key(id: &str, parent: Option<&str>) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            tenant: "t".into(),
            parent: parent.map(Into::into),
            name: id.into(),
            digest: KeyDigest::of(id),
            budget: None,
            models: None,
            expires_at: None,
            rpm: None,
            tpm: None,
            created_at: Timestamp(0),
            revoked_at: None,
        }
    }

    #[test]
    fn delegation_stays_inside_the_parent() {
        let now = Timestamp(1_000);
        let mut parent = key("p", None);
        parent.models = Some(vec!["gpt-4o".into(), "claude-*".into()]);
        parent.budget = Some(NanoUsd::from_usd(10));
        parent.expires_at = Some(Timestamp(5_000));
        let mut child = key("c", Some("p"));
        child.models = Some(vec!["claude-3-*".into()]);
        child.budget = Some(NanoUsd::from_usd(10));
        child.expires_at = Some(Timestamp(5_000));
        check_delegation(&parent, &child, now).unwrap();

        let field = |c: &KeyRecord| match check_delegation(&parent, c, now) {
            Err(Error::InvalidRequest { param, .. }) => param,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let mut wide = child.clone();
        wide.models = Some(vec!["gpt-4o-mini".into()]);
        assert_eq!(field(&wide).as_deref(), Some("models"));
        wide.models = Some(vec!["claude-*".into(), "o1".into()]);
        assert_eq!(field(&wide).as_deref(), Some("models"));
        let mut rich = child.clone();
        rich.budget = Some(NanoUsd::from_usd(11));
        assert_eq!(field(&rich).as_deref(), Some("budget_usd"));
        let mut late = child.clone();
        late.expires_at = Some(Timestamp(5_001));
        assert_eq!(field(&late).as_deref(), Some("expires_at"));
        // Unset fields inherit the parent's limits, which the gateway checks along the chain.
        let inherit = KeyRecord { models: None, budget: None, expires_at: None, ..child.clone() };
        check_delegation(&parent, &inherit, now).unwrap();
        let mut revoked = parent.clone();
        revoked.revoked_at = Some(Timestamp(1));
        assert!(check_delegation(&revoked, &child, now).is_err());
    }

    #[test]
    fn descendants_are_found_transitively_and_once() {
        let keys = vec![key("a", None), key("b", Some("a")), key("c", Some("b")), key("d", Some("a")), key("e", None)];
        let mut ids = descendants(&keys, "a");
        ids.sort();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(descendants(&keys, "e"), ["e"]);
    }

    #[test]
    fn ids_are_restricted_to_safe_characters() {
        assert!(validate_id("id", "acme-prod_1.eu").is_ok());
        for bad in ["", "a{b}", "a b", "ü", &"x".repeat(65)] {
            assert!(validate_id("id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digests_debug_without_the_whole_value() {
        let d = KeyDigest::of("sk-secret");
        assert_eq!(KeyDigest::from_hex(&d.to_hex()), Some(d));
        assert!(!format!("{d:?}").contains(&d.to_hex()));
    }
}
