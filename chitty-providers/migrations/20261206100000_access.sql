-- Tenants and API keys for the gateway's access store. Times are milliseconds since the Unix epoch, as in
-- chitty-core's Timestamp; money is nano-USD. Key secrets are never stored, only their SHA-256 digests.
CREATE TABLE IF NOT EXISTS chitty_tenants (
    id              text PRIMARY KEY,
    budget_nano_usd bigint CHECK (budget_nano_usd >= 0),
    budget_period   text NOT NULL DEFAULT 'never' CHECK (budget_period IN ('never', 'daily', 'weekly', 'monthly')),
    rpm             bigint CHECK (rpm >= 0),
    tpm             bigint CHECK (tpm >= 0),
    models          jsonb,
    burst           bigint CHECK (burst >= 0),
    cache_group     text
);

CREATE TABLE IF NOT EXISTS chitty_api_keys (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES chitty_tenants (id),
    parent_id       text REFERENCES chitty_api_keys (id),
    name            text NOT NULL,
    key_sha256      bytea NOT NULL UNIQUE CHECK (length(key_sha256) = 32),
    budget_nano_usd bigint CHECK (budget_nano_usd >= 0),
    models          jsonb,
    expires_at_ms   bigint,
    rpm             bigint CHECK (rpm >= 0),
    tpm             bigint CHECK (tpm >= 0),
    created_at_ms   bigint NOT NULL,
    revoked_at_ms   bigint
);

CREATE INDEX IF NOT EXISTS chitty_api_keys_parent ON chitty_api_keys (parent_id);

-- Every change to either table tells listening gateways to reload, whoever made it (the admin API or SQL).
CREATE OR REPLACE FUNCTION chitty_access_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chitty_access', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS chitty_tenants_notify ON chitty_tenants;
CREATE TRIGGER chitty_tenants_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON chitty_tenants
    FOR EACH STATEMENT EXECUTE FUNCTION chitty_access_notify();
DROP TRIGGER IF EXISTS chitty_api_keys_notify ON chitty_api_keys;
CREATE TRIGGER chitty_api_keys_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON chitty_api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION chitty_access_notify();
