//! The [`BudgetStore`] trait: per-tenant spend that is reserved before a call and settled after it.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::money::NanoUsd;
use crate::time::Timestamp;

/// A request to set money aside for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest<'a> {
    /// Tenant identifier.
    pub tenant: &'a str,
    /// The least the call can cost; if this much is not available, the reservation fails.
    pub min: NanoUsd,
    /// The most the call can cost; the store grants `min(max, remaining)`.
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

/// A tenant's budget at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    /// Total the tenant may spend.
    pub limit: NanoUsd,
    /// Settled spend.
    pub spent: NanoUsd,
    /// Held by live reservations.
    pub reserved: NanoUsd,
}

impl Balance {
    /// What can still be reserved: `limit − spent − reserved`.
    pub fn remaining(&self) -> NanoUsd {
        self.limit.saturating_sub(self.spent).saturating_sub(self.reserved)
    }
}

/// Per-tenant spend.
///
/// Contract (checked by `chitty_testkit::budget` for every implementation):
/// - `reserve` is atomic: it grants `min(max, remaining)` if that is at least `min`, else fails with
///   [`crate::Error::BudgetExhausted`]; concurrent reservations never together exceed the limit.
/// - `settle` charges `actual`, but never more than the reservation (see [`Settlement::capped`]), and frees
///   the reservation: spend can never pass the limit, whatever an upstream reports. Settling or releasing an
///   unknown or already-finished reservation fails with [`crate::Error::ReservationNotFound`] and charges
///   nothing, so a retry can never double-charge.
/// - Reservations whose lease expired (by the `now` passed to any later call) are reclaimed.
/// - A tenant with no limit set has a limit of zero.
#[async_trait]
pub trait BudgetStore: Send + Sync + Debug + 'static {
    /// Sets a tenant's limit, keeping its spend and live reservations.
    async fn set_limit(&self, tenant: &str, limit: NanoUsd) -> Result<()>;

    /// Sets money aside for one call.
    async fn reserve(&self, request: ReserveRequest<'_>) -> Result<Reservation>;

    /// Charges `actual` (at most the reservation) for a finished call and refunds the rest of its reservation.
    async fn settle(&self, reservation: &Reservation, actual: NanoUsd, now: Timestamp) -> Result<Settlement>;

    /// Frees a reservation without charging (the call failed before costing anything).
    async fn release(&self, reservation: &Reservation, now: Timestamp) -> Result<()>;

    /// The tenant's budget now.
    async fn balance(&self, tenant: &str, now: Timestamp) -> Result<Balance>;

    /// Whether the backend answers (readiness checks); in-process stores always do.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
