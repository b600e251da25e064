//! The [`BudgetStore`] trait: spend that is reserved before a call and settled after it, against nested
//! budgets (a tenant's, and each key's inside it) that start again from zero each budget period.
//!
//! The store keeps spend, not limits: each reservation names the accounts it must fit in and their limits,
//! which the gateway reads from its copy of the access store. So a limit changed through the admin API holds
//! on the next request, and a store that lost its data never turns every limit into zero.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::money::NanoUsd;
use crate::time::Timestamp;

/// The name of a tenant's own account among its [`BudgetAccount`]s; keys' accounts are named by key id.
pub const TENANT_ACCOUNT: &str = "";

/// One budget a reservation must fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetAccount<'a> {
    /// [`TENANT_ACCOUNT`] for the tenant's own budget, else the key id whose budget this is.
    pub name: &'a str,
    /// The most the account may spend in the period (`NanoUsd(u64::MAX)` for no limit).
    pub limit: NanoUsd,
}

/// A request to set money aside for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest<'a> {
    /// Tenant identifier: every account below is the tenant's, and they change together atomically.
    pub tenant: &'a str,
    /// The budgets that must all cover the reservation: the tenant's, and those of the key and its parents.
    pub accounts: &'a [BudgetAccount<'a>],
    /// When the tenant's current budget period began (`Timestamp(0)` for a lifetime budget). Spend is kept
    /// per period, so a new period starts at zero; a reservation settles into the period it was made in.
    pub period: Timestamp,
    /// The public model, for the spend report by model.
    pub model: &'a str,
    /// The key id, for the spend report by key.
    pub key: Option<&'a str>,
    /// The least the call can cost; if this much is not available, the reservation fails.
    pub min: NanoUsd,
    /// The most the call can cost; the store grants `min(max, the smallest account's remaining)`.
    pub max: NanoUsd,
    /// How long the reservation holds before the store reclaims it (a crashed caller cannot hold budget for ever).
    pub lease: Duration,
    /// The current time.
    pub now: Timestamp,
}

/// Money set aside for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Store-assigned identifier.
    pub id: String,
    /// Tenant identifier.
    pub tenant: String,
    /// Amount granted, between the request's `min` and `max`.
    pub amount: NanoUsd,
    /// When the store may reclaim it.
    pub expires_at: Timestamp,
}

/// What settling a reservation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settlement {
    /// Amount charged: the actual cost, or the reservation when the actual cost was higher.
    pub charged: NanoUsd,
    /// Amount returned to the budget (`reserved − charged`, or zero).
    pub refunded: NanoUsd,
    /// Actual cost above the reservation, which was not charged (zero when the reservation covered it).
    pub excess: NanoUsd,
}

impl Settlement {
    /// Settles `actual` against a reservation of `reserved`: charges at most the reservation, so that spend can
    /// never pass the limit the reservation was granted under.
    pub fn capped(reserved: NanoUsd, actual: NanoUsd) -> Settlement {
        let charged = actual.min(reserved);
        Settlement { charged, refunded: reserved.saturating_sub(charged), excess: actual.saturating_sub(charged) }
    }
}

/// One account's spend in a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountSpend {
    /// Settled spend.
    pub spent: NanoUsd,
    /// Held by live reservations made in the period.
    pub reserved: NanoUsd,
}

/// A tenant's spend in one period.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spend {
    /// Each account's spend ([`TENANT_ACCOUNT`] is the tenant's own), for accounts that reserved anything.
    pub accounts: BTreeMap<String, AccountSpend>,
    /// Settled spend by public model.
    pub by_model: BTreeMap<String, NanoUsd>,
    /// Settled spend by key id (every key that spent, with or without a budget of its own).
    pub by_key: BTreeMap<String, NanoUsd>,
}

impl Spend {
    /// The account's spend (zero when it never reserved in the period).
    pub fn account(&self, name: &str) -> AccountSpend {
        self.accounts.get(name).copied().unwrap_or_default()
    }

    /// The tenant's own account.
    pub fn tenant(&self) -> AccountSpend {
        self.account(TENANT_ACCOUNT)
    }
}

/// An account's budget at one instant: its limit (from the access store) and its spend (from the budget store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    /// Total the account may spend in the period.
    pub limit: NanoUsd,
    /// Settled spend.
    pub spent: NanoUsd,
    /// Held by live reservations.
    pub reserved: NanoUsd,
}

impl Balance {
    /// `limit` with `spend`.
    pub fn new(limit: NanoUsd, spend: AccountSpend) -> Balance {
        Balance { limit, spent: spend.spent, reserved: spend.reserved }
    }

    /// What can still be reserved: `limit − spent − reserved`.
    pub fn remaining(&self) -> NanoUsd {
        self.limit.saturating_sub(self.spent).saturating_sub(self.reserved)
    }
}

/// A durable copy of each period's settled spend, from which a budget store that lost its data (a Redis
/// restarted without persistence, a flushed database) is re-seeded instead of starting again from zero.
///
/// A budget store with an archive saves the ledgers it changed every few seconds and, the first time it
/// meets a period's ledger that is missing, seeds it from [`SpendArchive::load_spend`] before admitting
/// anything against it. What settled after the last save is what such a loss can still forget.
#[async_trait]
pub trait SpendArchive: Send + Sync + Debug + 'static {
    /// Saves `spend`'s settled amounts (reservations are not kept) as the tenant's spend in the period that
    /// began at `period`. A snapshot whose total is below the saved one (an older snapshot arriving late from
    /// another replica) is ignored, so the saved spend never goes back.
    async fn save_spend(&self, tenant: &str, period: Timestamp, spend: &Spend) -> Result<()>;

    /// The last saved spend of the tenant in that period, if any.
    async fn load_spend(&self, tenant: &str, period: Timestamp) -> Result<Option<Spend>>;
}

impl Spend {
    /// Settled spend over every model: the total a [`SpendArchive`] compares snapshots by.
    pub fn settled_total(&self) -> NanoUsd {
        self.by_model.values().fold(NanoUsd::ZERO, |total, amount| total.saturating_add(*amount))
    }

    /// This spend without its reservations, which die with the budget store that held them.
    pub fn without_reservations(&self) -> Spend {
        let accounts = self
            .accounts
            .iter()
            .map(|(name, account)| (name.clone(), AccountSpend { spent: account.spent, reserved: NanoUsd::ZERO }))
            .collect();
        Spend { accounts, by_model: self.by_model.clone(), by_key: self.by_key.clone() }
    }
}

/// Spend per tenant, account and period.
///
/// Contract (checked by `chitty_testkit::budget` for every implementation):
/// - `reserve` is atomic over all of the request's accounts: it grants `min(max, r)`, where `r` is the
///   smallest `limit − spent − reserved` among them in the request's period, if that is at least `min`, and
///   adds the grant to each account's reserved; else it fails with [`crate::Error::BudgetExhausted`] and
///   changes nothing. Concurrent reservations never together take an account past its limit.
/// - `settle` charges `actual`, but never more than the reservation (see [`Settlement::capped`]), to every
///   account it was reserved on, in the period it was reserved in, and frees the reservation; the charge
///   also counts towards the request's model and key in [`Spend::by_model`] and [`Spend::by_key`]. Settling
///   or releasing an unknown or already-finished reservation fails with
///   [`crate::Error::ReservationNotFound`] and charges nothing, so a retry can never double-charge.
/// - Reservations whose lease expired (by the `now` passed to any later call) are reclaimed.
/// - A backend that cannot be reached fails with [`crate::Error::BackendUnavailable`], which the gateway
///   answers 503 with `Retry-After`.
#[async_trait]
pub trait BudgetStore: Send + Sync + Debug + 'static {
    /// Sets money aside for one call on every account of the request.
    async fn reserve(&self, request: ReserveRequest<'_>) -> Result<Reservation>;

    /// Charges `actual` (at most the reservation) for a finished call and refunds the rest of its reservation.
    async fn settle(&self, reservation: &Reservation, actual: NanoUsd, now: Timestamp) -> Result<Settlement>;

    /// Frees a reservation without charging (the call failed before costing anything).
    async fn release(&self, reservation: &Reservation, now: Timestamp) -> Result<()>;

    /// The tenant's spend in the period that began at `period`.
    async fn spend(&self, tenant: &str, period: Timestamp, now: Timestamp) -> Result<Spend>;

    /// Whether the backend answers (readiness checks); in-process stores always do.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
