//! The admission step: the caller's requests- and tokens-per-minute limits (the tenant's, and those of its
//! key and the key's parents), checked together by the [`RateLimiter`](crate::ratelimit::RateLimiter).
//! Tokens are charged at their bound (prompt plus output cap) and the unused part given back at settlement.

use super::Gateway;
use super::tenant::RequestContext;
use crate::access::KeyRecord;
use crate::error::{Error, Result};
use crate::ratelimit::{Gcra, LimitCheck, LimitKind, RateDecision, RateLimitStatus};

/// The tenant's own scope.
const TENANT_SCOPE: &str = "t";

/// What admission charged, to report and to correct at settlement.
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// The tightest limits, for the `x-ratelimit-*` headers; none when no limit applies.
    pub(super) status: Option<RateLimitStatus>,
    /// Token limits charged `tokens` each, to refund what the request did not use.
    token_scopes: Vec<(String, Gcra)>,
    tokens: u64,
}

/// A scope's limits: requests with a burst of a sixth of a minute (or the configured one), tokens with a
/// burst of a whole minute.
fn limits(
    scope: &str,
    rpm: Option<u32>,
    tpm: Option<u32>,
    burst: Option<u32>,
    tokens: u64,
) -> [Option<LimitCheck<'_>>; 2] {
    let requests = rpm.map(|rpm| LimitCheck {
        scope,
        limit: Gcra { kind: LimitKind::Requests, per_minute: rpm, burst: burst.unwrap_or((rpm / 6).max(1)) },
        cost: 1,
    });
    let token_limit = tpm.map(|tpm| LimitCheck {
        scope,
        limit: Gcra { kind: LimitKind::Tokens, per_minute: tpm, burst: tpm },
        cost: tokens,
    });
    [requests, token_limit]
}

impl Gateway {
    /// Admits the request against every limit of its caller, charging `tokens` (the request's bound) to the
    /// token limits; a refusal is [`Error::RateLimited`] with the limits' state, and charges nothing.
    pub(super) async fn admit(&self, ctx: &RequestContext, tokens: u64) -> Result<Admission> {
        let tenant = ctx.tenant.record();
        let limited_keys: Vec<(String, &KeyRecord)> = ctx
            .key
            .as_ref()
            .map(|k| {
                k.chain()
                    .iter()
                    .filter(|k| k.rpm.is_some() || k.tpm.is_some())
                    .map(|k| (format!("k:{}", k.id), k))
                    .collect()
            })
            .unwrap_or_default();
        let mut checks: Vec<LimitCheck<'_>> = Vec::new();
        checks.extend(limits(TENANT_SCOPE, tenant.rpm, tenant.tpm, tenant.burst, tokens).into_iter().flatten());
        for (scope, key) in &limited_keys {
            checks.extend(limits(scope, key.rpm, key.tpm, None, tokens).into_iter().flatten());
        }
        if checks.is_empty() {
            return Ok(Admission::default());
        }
        match self.inner.limiter.acquire(ctx.tenant.id(), &checks, self.now()).await? {
            RateDecision::Admitted(status) => Ok(Admission {
                status: Some(status),
                token_scopes: checks
                    .iter()
                    .filter(|c| c.limit.kind == LimitKind::Tokens)
                    .map(|c| (c.scope.to_owned(), c.limit))
                    .collect(),
                tokens,
            }),
            RateDecision::Refused { retry_after, status } => {
                Err(Error::RateLimited { retry_after, status: Box::new(status) })
            }
        }
    }

    /// Gives back the tokens admission charged but the request did not use (`used` of them were).
    pub(super) async fn refund_tokens(&self, tenant: &str, admission: &Admission, used: u64) {
        let unused = admission.tokens.saturating_sub(used);
        if unused == 0 {
            return;
        }
        for (scope, limit) in &admission.token_scopes {
            if let Err(e) = self.inner.limiter.refund(tenant, scope, *limit, unused, self.now()).await {
                // The limit stays charged at the bound: stricter than needed, never looser.
                tracing::warn!(error = %e, tenant, scope, "refunding unused tokens to a rate limit failed");
            }
        }
    }
}
