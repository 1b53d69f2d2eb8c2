import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { PG_TABLES } from '@meterd/core/contracts';
import { inTransaction, type Pool } from '@meterd/core/store';

/** Which workspace shards this process may work on right now. */
export interface ShardLeases {
  /** Renews this replica's heartbeat and leases, takes or gives back shards toward its fair share; returns the shards held. */
  refresh(): Promise<ReadonlySet<number>>;
  /** Renews the held leases and returns those still held under the same epoch (none if it cannot tell). */
  verify(): Promise<ReadonlySet<number>>;
  /** The next rollup version, from one sequence shared by every replica. */
  nextVersion(): Promise<bigint>;
  close(): Promise<void>;
}

/** The shards replica number `rank` (0-based, by id) of `live` ones should hold: an even split. */
export function fairShare(shards: number, live: number, rank: number): number {
  const n = Math.max(1, live);
  return Math.floor(shards / n) + (rank < shards % n ? 1 : 0);
}

export interface LeaseOptions {
  shards: number;
  /** How long a heartbeat and a lease last without renewal (AGGREGATOR_LEASE_TTL_MS). */
  ttlMs: number;
  /** Defaults to host:pid:random, unique per process. */
  replicaId?: string;
}

/**
 * Shard leases as rows in Postgres (008_replica_leases.sql), so they work through PgBouncer in
 * transaction mode: nothing lives in a session. Each replica renews a heartbeat; the live replicas,
 * ordered by id, split the shards evenly (fairShare), so a joining replica gets its share as the
 * others give back their surplus on their next refresh, and a replica that dies (kill -9 included)
 * stops renewing: its heartbeat and leases expire after ttlMs and the others take its shards.
 *
 * Fencing: every change of hands bumps the shard's epoch. Right before writing, verify() renews the
 * leases only where owner, epoch and expiry still match. The rollup version the cycle writes under
 * was drawn from rollup_version_seq before that check, and a successor can only take the shard
 * after the lease expired, so it draws a higher version: a holder paused past its lease that wakes
 * up and writes anyway loses to its successor in every table it writes (rollups replace by version,
 * aggregator_state by the version it stores in updated_ms, state.ts).
 */
export class PgTableLeases implements ShardLeases {
  /** shard → epoch under which this replica holds it. */
  private readonly held = new Map<number, bigint>();
  private readonly id: string;
  private seeded = false;
  private lastRefresh = -Infinity;

  constructor(
    private readonly pool: Pool,
    private readonly opts: LeaseOptions,
  ) {
    this.id = opts.replicaId ?? `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  }

  get replicaId(): string {
    return this.id;
  }

  async refresh(): Promise<ReadonlySet<number>> {
    // The heartbeat and the split need renewing a few times per TTL, not on every 200 ms poll;
    // verify() renews the leases themselves each cycle that writes.
    const now = performance.now();
    if (now - this.lastRefresh < this.opts.ttlMs / 5) return this.shardSet();
    try {
      await this.rebalance();
      this.lastRefresh = now;
    } catch (err) {
      // Postgres unreachable: nothing can be proven held, so nothing is written this cycle.
      this.held.clear();
      throw err;
    }
    return this.shardSet();
  }

  async verify(): Promise<ReadonlySet<number>> {
    if (this.held.size === 0) return new Set();
    const shards = [...this.held.keys()];
    try {
      const { rows } = await this.pool.query<{ shard: number }>(
        `UPDATE ${PG_TABLES.aggregatorShardLeases} l SET lease_until = now() + make_interval(secs => $2::float8 / 1000)
           FROM unnest($3::int[], $4::bigint[]) AS h(shard, epoch)
          WHERE l.shard = h.shard AND l.epoch = h.epoch AND l.owner = $1 AND l.lease_until > now()
          RETURNING l.shard`,
        [this.id, this.opts.ttlMs, shards, shards.map((s) => String(this.held.get(s)))],
      );
      const still = new Set(rows.map((r) => Number(r.shard)));
      for (const s of shards) if (!still.has(s)) this.held.delete(s);
      return still;
    } catch {
      this.held.clear();
      return new Set();
    }
  }

  async nextVersion(): Promise<bigint> {
    const { rows } = await this.pool.query<{ v: string }>(`SELECT nextval('rollup_version_seq')::text AS v`);
    return BigInt(rows[0]!.v);
  }

  /** Gives every shard back and leaves the replica set, so the others take over without waiting out the TTL. */
  async close(): Promise<void> {
    this.held.clear();
    await inTransaction(this.pool, async (c) => {
      await c.query(
        `UPDATE ${PG_TABLES.aggregatorShardLeases} SET owner = NULL, lease_until = '-infinity' WHERE owner = $1`,
        [this.id],
      );
      await c.query(`DELETE FROM ${PG_TABLES.aggregatorReplicas} WHERE replica_id = $1`, [this.id]);
    }).catch(() => {});
  }

  private shardSet(): ReadonlySet<number> {
    return new Set(this.held.keys());
  }

  private async rebalance(): Promise<void> {
    const { shards, ttlMs } = this.opts;
    await inTransaction(this.pool, async (c) => {
      if (!this.seeded) {
        await c.query(
          `INSERT INTO ${PG_TABLES.aggregatorShardLeases} (shard) SELECT generate_series(0, $1::int - 1) ON CONFLICT DO NOTHING`,
          [shards],
        );
      }
      await c.query(
        `INSERT INTO ${PG_TABLES.aggregatorReplicas} (replica_id, alive_until) VALUES ($1, now() + make_interval(secs => $2::float8 / 1000))
         ON CONFLICT (replica_id) DO UPDATE SET alive_until = EXCLUDED.alive_until`,
        [this.id, ttlMs],
      );
      const live = await c.query<{ replica_id: string }>(
        `SELECT replica_id FROM ${PG_TABLES.aggregatorReplicas} WHERE alive_until > now() ORDER BY replica_id`,
      );
      const rank = live.rows.findIndex((r) => r.replica_id === this.id);
      const quota = fairShare(shards, live.rows.length, rank);
      // Leases still valid are renewed; one that expired meanwhile may have a new owner: it is lost.
      const mine = await c.query<{ shard: number; epoch: string }>(
        `UPDATE ${PG_TABLES.aggregatorShardLeases} SET lease_until = now() + make_interval(secs => $2::float8 / 1000)
          WHERE owner = $1 AND lease_until > now() AND shard < $3 RETURNING shard, epoch::text`,
        [this.id, ttlMs, shards],
      );
      this.held.clear();
      for (const r of mine.rows) this.held.set(Number(r.shard), BigInt(r.epoch));
      if (this.held.size > quota) {
        // The surplus goes back at once (highest shards first), for a replica below its share to take.
        const surplus = [...this.held.keys()].sort((a, b) => b - a).slice(0, this.held.size - quota);
        await c.query(
          `UPDATE ${PG_TABLES.aggregatorShardLeases} SET owner = NULL, lease_until = '-infinity' WHERE owner = $1 AND shard = ANY($2::int[])`,
          [this.id, surplus],
        );
        for (const s of surplus) this.held.delete(s);
      } else if (this.held.size < quota) {
        const taken = await c.query<{ shard: number; epoch: string }>(
          `UPDATE ${PG_TABLES.aggregatorShardLeases} SET owner = $1, epoch = epoch + 1,
                  lease_until = now() + make_interval(secs => $2::float8 / 1000)
            WHERE shard IN (SELECT shard FROM ${PG_TABLES.aggregatorShardLeases}
                             WHERE shard < $3 AND lease_until <= now() ORDER BY shard LIMIT $4 FOR UPDATE SKIP LOCKED)
            RETURNING shard, epoch::text`,
          [this.id, ttlMs, shards, quota - this.held.size],
        );
        for (const r of taken.rows) this.held.set(Number(r.shard), BigInt(r.epoch));
      }
      // Heartbeats long expired are someone's past: dropped so the table stays small.
      await c.query(`DELETE FROM ${PG_TABLES.aggregatorReplicas} WHERE alive_until < now() - interval '1 hour'`);
    });
    this.seeded = true;
  }
}
