-- Replicas coordinate through rows, not session state, so every service works through PgBouncer in
-- transaction mode (docs/operations-postgres.md).

-- billing-sync claims pending rows by a lease instead of holding FOR UPDATE locks in a transaction
-- left open across Stripe calls. A claim is a token and an expiry; an expired claim (its holder died
-- or stalled) is taken again, and the re-send is deduplicated by Stripe on the row's identifier.
ALTER TABLE billing_pushes ADD COLUMN claimed_by text, ADD COLUMN lease_until timestamptz;

-- Aggregator replicas: each renews its heartbeat; the live ones split the shards evenly by rank.
CREATE TABLE aggregator_replicas (
  replica_id  text PRIMARY KEY,
  alive_until timestamptz NOT NULL
);

-- One row per aggregator shard. `epoch` grows each time the shard changes hands: a holder checks
-- it (with the owner and expiry) right before writing, and the rollup version it writes under was
-- drawn before that check, so a successor's writes always carry a higher version.
CREATE TABLE aggregator_shard_leases (
  shard       int PRIMARY KEY,
  owner       text,
  epoch       bigint NOT NULL DEFAULT 0,
  lease_until timestamptz NOT NULL DEFAULT '-infinity'
);

-- A pending provision is deployed by the replica that created it; `deploy_lease_until` tells a
-- control API starting meanwhile (resume) to leave it alone until the lease runs out, so K replicas
-- never deploy one provision at the same time. NULL (rows from before): free to resume.
ALTER TABLE provisions ADD COLUMN deploy_lease_until timestamptz;
