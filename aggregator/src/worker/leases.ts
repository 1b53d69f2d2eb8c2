import pg from 'pg';

/** Which workspace shards this process may work on right now. */
export interface ShardLeases {
  /** Keeps held leases alive and may take one more; returns the shards held afterwards. */
  refresh(): Promise<ReadonlySet<number>>;
  /** Asks Postgres which of the held shards this process still holds (none if it cannot tell). */
  verify(): Promise<ReadonlySet<number>>;
  /** The next rollup version, from one sequence shared by every replica. */
  nextVersion(): Promise<bigint>;
  close(): Promise<void>;
}

/** Advisory-lock namespace of aggregator shards ('AGGR'); the second key is the shard number. */
const LOCK_CLASS = 0x41474752;

/**
 * Shard leases as Postgres session advisory locks on one dedicated connection. The lock lives as
 * long as the connection: a process that dies (kill -9 included) or loses Postgres releases every
 * shard at once, and another replica takes them on its next refresh. A process gives up its shards
 * the moment its connection reports an error, before anyone else can hold them. Every refresh takes
 * all free shards, so a dead replica's shards move within one poll; replicas started together split
 * them by whoever asks first, and a replica holding none is a hot standby (no rebalancing yet).
 */
export class PgAdvisoryLeases implements ShardLeases {
  private client: pg.Client | null = null;
  private readonly held = new Set<number>();
  private connecting: Promise<pg.Client> | null = null;

  constructor(
    private readonly url: URL,
    private readonly shards: number,
  ) {}

  async refresh(): Promise<ReadonlySet<number>> {
    let c: pg.Client;
    try {
      c = await this.connect();
      // One round trip whether or not anything is free: a standby replica polls this constantly.
      const { rows } = await c.query<{ s: number }>(
        `SELECT s FROM generate_series(0, $2::int - 1) AS s
          WHERE NOT (s = ANY($3::int[])) AND pg_try_advisory_lock($1::int, s)`,
        [LOCK_CLASS, this.shards, [...this.held]],
      );
      for (const r of rows) this.held.add(Number(r.s));
    } catch {
      this.drop();
    }
    return this.held;
  }

  /**
   * The shards whose advisory lock the lease connection still holds, read from pg_locks just before
   * rollups are written: a process that lost its connection (and so its leases) after refresh()
   * writes nothing, instead of a snapshot its successor may already have superseded.
   */
  async verify(): Promise<ReadonlySet<number>> {
    if (this.client === null || this.held.size === 0) return new Set();
    try {
      const { rows } = await this.client.query<{ s: number }>(
        `SELECT objid::int AS s FROM pg_locks
          WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND classid::bigint = $1::bigint AND objsubid = 2`,
        [LOCK_CLASS],
      );
      const still = new Set(rows.map((r) => Number(r.s)).filter((s) => this.held.has(s)));
      for (const s of this.held) if (!still.has(s)) this.held.delete(s);
      return still;
    } catch {
      this.drop();
      return new Set();
    }
  }

  async nextVersion(): Promise<bigint> {
    const c = await this.connect();
    const { rows } = await c.query<{ v: string }>(`SELECT nextval('rollup_version_seq')::text AS v`);
    return BigInt(rows[0]!.v);
  }

  async close(): Promise<void> {
    const c = this.client;
    this.drop();
    if (c !== null) await c.end().catch(() => {});
  }

  private connect(): Promise<pg.Client> {
    if (this.client !== null) return Promise.resolve(this.client);
    this.connecting ??= (async () => {
      const c = new pg.Client({ connectionString: this.url.toString(), connectionTimeoutMillis: 5_000 });
      c.on('error', () => this.drop());
      try {
        await c.connect();
      } catch (err) {
        this.connecting = null;
        throw err;
      }
      this.client = c;
      this.connecting = null;
      return c;
    })();
    return this.connecting;
  }

  /** Forget every lease: the connection that held them is gone or going. */
  private drop(): void {
    this.held.clear();
    const c = this.client;
    this.client = null;
    if (c !== null) void c.end().catch(() => {});
  }
}
