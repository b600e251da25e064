-- Each tenant's settled spend per budget period, saved every few seconds by a budget store that may lose its
-- data (Redis), which re-seeds a missing period from here. Money is nano-USD; u64 totals need numeric(20).
CREATE TABLE IF NOT EXISTS chitty_spend (
    tenant_id       text NOT NULL,
    period_start_ms bigint NOT NULL,
    total_nano_usd  numeric(20, 0) NOT NULL CHECK (total_nano_usd >= 0),
    spend           jsonb NOT NULL,
    saved_at_ms     bigint NOT NULL,
    PRIMARY KEY (tenant_id, period_start_ms)
);
