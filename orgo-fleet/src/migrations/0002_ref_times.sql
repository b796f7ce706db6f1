-- Version 2: when each ref was last set. Leases of computers (`leases/...`)
-- are set again by the host that runs them while it is alive; those not
-- set for longer than a time to live belong to a host that is gone, and
-- `PgRegistry::expire_refs` removes them.
ALTER TABLE orgo_refs ADD COLUMN set_at timestamptz NOT NULL DEFAULT now();
