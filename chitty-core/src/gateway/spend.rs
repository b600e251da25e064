//! The budget steps: reserve the worst case before the call on every budget the request must fit in (the
//! tenant's and those of its key and the key's parents), settle the real cost after it (never more than the
//! reservation), release what a failed call did not use.

use std::time::Duration;

use super::Gateway;
use super::config::ModelConfig;
use super::pipeline::RequestInfo;
use super::tenant::RequestContext;
use crate::budget::{BudgetAccount, Reservation, ReserveRequest, Settlement, TENANT_ACCOUNT};
use crate::error::Result;
use crate::events::Event;
use crate::money::NanoUsd;

/// A request's hold on its tenant's budget, and the output cap the gateway chose to fit it, if it chose one.
pub(super) struct BudgetHold {
    pub(super) reservation: Option<Reservation>,
    pub(super) cap_set: Option<u32>,
}

impl BudgetHold {
    /// The amount reserved (zero without a budget).
    pub(super) fn reserved(&self) -> NanoUsd {
        self.reservation.as_ref().map_or(NanoUsd::ZERO, |r| r.amount)
    }
}

impl Gateway {
    /// Reserves what `generations` outputs of at most `cap` tokens (or the model's maximum, when the client
    /// set no cap) can cost, on the tenant's account and on each budgeted key of the caller's chain; with no
    /// cap and a limited budget, picks the largest cap the reservation pays for. With a budget store every
    /// request reserves (unlimited accounts included), so spend is reported by model and key for every tenant.
    pub(super) async fn reserve(
        &self,
        ctx: &RequestContext,
        model: &ModelConfig,
        prompt: u64,
        cap: Option<u32>,
        generations: u32,
    ) -> Result<BudgetHold> {
        let Some(store) = &self.inner.budgets else {
            return Ok(BudgetHold { reservation: None, cap_set: None });
        };
        let tenant = &ctx.tenant;
        let mut accounts = Vec::with_capacity(1);
        accounts.push(BudgetAccount { name: TENANT_ACCOUNT, limit: tenant.budget().unwrap_or(NanoUsd(u64::MAX)) });
        if let Some(key) = &ctx.key {
            for k in key.chain() {
                if let Some(limit) = k.budget {
                    accounts.push(BudgetAccount { name: &k.id, limit });
                }
            }
        }
        let limited = tenant.budget().is_some() || accounts.len() > 1;
        let price = &model.price;
        let n64 = u64::from(generations.max(1));
        let (min, max) = match cap {
            Some(c) => {
                let cost = price.cost(prompt, u64::from(c) * n64);
                (cost, cost)
            }
            None => (
                price.cost(prompt, u64::from(self.inner.defaults.min_output_tokens) * n64),
                price.cost(prompt, u64::from(model.max_output_tokens) * n64),
            ),
        };
        let now = self.now();
        let reservation = store
            .reserve(ReserveRequest {
                tenant: tenant.id(),
                accounts: &accounts,
                period: tenant.budget_period().window(now).start,
                model: &model.name,
                key: ctx.key_id(),
                min,
                max,
                lease: Duration::from_secs(self.inner.defaults.lease_secs),
                now,
            })
            .await?;
        let cap_set = match (cap, limited) {
            (None, true) => {
                let per_choice = price.affordable_output_tokens(reservation.amount, prompt) / n64;
                Some(u32::try_from(per_choice).unwrap_or(u32::MAX).min(model.max_output_tokens))
            }
            _ => None,
        };
        Ok(BudgetHold { reservation: Some(reservation), cap_set })
    }

    /// Settles `cost` and reports what was charged. The store charges no more than was reserved, so spend can
    /// never pass a limit; a cost above the reservation (an upstream billing more than the worst case the
    /// request allowed) is also reported as [`Event::BudgetExcess`].
    pub(super) async fn settle(
        &self,
        info: &RequestInfo,
        provider: &str,
        reservation: Option<&Reservation>,
        cost: NanoUsd,
    ) -> NanoUsd {
        let (Some(store), Some(r)) = (&self.inner.budgets, reservation) else { return cost };
        // The store charges at most the reservation (its contract, checked by the conformance suite).
        let settlement = match store.settle(r, cost, self.now()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, tenant = %r.tenant, reservation = %r.id, "budget settle failed");
                Settlement::capped(r.amount, cost)
            }
        };
        if settlement.excess > NanoUsd::ZERO {
            tracing::warn!(
                tenant = %r.tenant, model = %info.model, provider, reserved = r.amount.0, reported = cost.0,
                "upstream usage cost more than the reservation; charged the reservation"
            );
            self.emit(Event::BudgetExcess {
                tenant: info.tenant.id().to_owned(),
                model: info.model.clone(),
                provider: provider.to_owned(),
                reserved: r.amount,
                reported: cost,
            })
            .await;
        }
        settlement.charged
    }

    /// Gives back a reservation whose call failed.
    pub(super) async fn release(&self, reservation: Option<&Reservation>) {
        if let (Some(store), Some(r)) = (&self.inner.budgets, reservation)
            && let Err(e) = store.release(r, self.now()).await
        {
            tracing::error!(error = %e, tenant = %r.tenant, reservation = %r.id, "budget release failed");
        }
    }
}
