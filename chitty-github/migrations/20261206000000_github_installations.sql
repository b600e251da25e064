-- The App's installations, kept in sync from installation and installation_repositories events.
-- Times a person reads are timestamptz; the *_ms columns are the ordering state (see the installations
-- module docs): GitHub's time for the last applied change, then when its delivery was received, in
-- milliseconds since the epoch.
CREATE TABLE github_installations (
    installation_id       bigint PRIMARY KEY,
    account_login         text NOT NULL,
    account_id            bigint NOT NULL,
    account_type          text,
    app_id                bigint,
    repository_selection  text,
    permissions           jsonb NOT NULL DEFAULT '{}',
    events                text[] NOT NULL DEFAULT '{}',
    suspended_at          timestamptz,
    suspended_by          text,
    created_at            timestamptz,
    updated_at            timestamptz,
    -- Set once the App is uninstalled: the row stays as a tombstone, so a late event cannot revive it.
    deleted_at            timestamptz,
    snapshot_occurred_ms  bigint NOT NULL,
    snapshot_received_ms  bigint NOT NULL,
    deleted_occurred_ms   bigint,
    deleted_received_ms   bigint,
    recorded_at           timestamptz NOT NULL DEFAULT now()
);

-- Removed repositories stay (present = false) with the order of their removal, so a late event listing
-- them does not bring them back.
CREATE TABLE github_installation_repositories (
    installation_id  bigint NOT NULL REFERENCES github_installations ON DELETE CASCADE,
    repository_id    bigint NOT NULL,
    name             text NOT NULL,
    full_name        text NOT NULL,
    private          boolean NOT NULL,
    present          boolean NOT NULL,
    occurred_ms      bigint NOT NULL,
    received_ms      bigint NOT NULL,
    PRIMARY KEY (installation_id, repository_id)
);

CREATE INDEX github_installation_repositories_by_repository
    ON github_installation_repositories (repository_id) WHERE present;

-- The deliveries (X-GitHub-Delivery, kept by GitHub on redelivery) applied to each installation, so a
-- redelivery is applied once. Installation events are few, so all are kept.
CREATE TABLE github_installation_deliveries (
    installation_id  bigint NOT NULL REFERENCES github_installations ON DELETE CASCADE,
    delivery_id      text NOT NULL,
    occurred_ms      bigint NOT NULL,
    received_ms      bigint NOT NULL,
    applied_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (installation_id, delivery_id)
);
