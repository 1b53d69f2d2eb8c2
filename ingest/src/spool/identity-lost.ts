import { ClickHouseQueryError, clusterSettings, type ClickHouseEnv } from '@meterd/core/clickhouse';
import { dedupeKey, dedupeShippedKey, quotaKey } from '@meterd/core/contracts';
import { MeterdError } from '@meterd/core/errors';
import type { StoredEvent } from '@meterd/core/event';
import { periodOf } from '@meterd/core/plans';
import { scanEveryPrimary, type Pool, type Redis } from '@meterd/core/store';
import type { StoredRows } from '../dedupe/deduper.js';
import { PENDING } from '../dedupe/deduper.js';
import { compactRow, expandRow } from '../rows.js';
import type { SpoolRecord } from './identity.js';

/**
 * `npm run spool:lost -- --instance <name>`: accounts for a lost spool volume of one ingest
 * instance (docs/deploy.md "A lost spool volume").
 *
 * What was lost: rows the instance acknowledged that never reached ClickHouse. The rows were on the
 * volume only, but their idempotency keys are in Redis: a committed hot key holds its row (event id,
 * amounts, received second) for DEDUPE_HOT_SECONDS. So the lost rows are exactly the committed hot
 * keys that (a) were received in the instance's unshipped window, from its threads' last "shipped
 * through" mark to its last heartbeat (dedupe/shipped.ts; widened by the pending-claim TTL on both
 * sides, since a row is marked by when it was claimed, not when it was acknowledged) and (b) are
 * not in ClickHouse. Keys received in that window by other instances are told apart by waiting
 * until every live instance has shipped through its end. A key that has left the hot tier cannot be
 * listed (the tier holds a hash): `complete` says whether the whole window was still hot.
 *
 * Then each lost key is released (deleted if it still holds the lost row, and its quota unit given
 * back), so the client's retry is stored instead of answered `duplicate: true`, and the instance's
 * row in `ingest_spools` becomes `lost`, with the report, which clears ingest's start-up refusal.
 * Running it again prints the same report and releases only what an interrupted run left.
 */
export type LostKey = StoredEvent;

export interface LostReport {
  instance: string;
  spool_id: string;
  accounted_at: string;
  /** Earliest "shipped through" of the instance's threads: everything acknowledged before is in ClickHouse. */
  shipped_through: string | null;
  last_heartbeat: string | null;
  /** Every key of the window was still in Redis's hot tier, so the list is the whole loss. */
  complete: boolean;
  lost: number;
  workspaces: Record<string, { lost: number; keys: LostKey[] }>;
}

export interface LostVolumeDeps {
  pool: Pool;
  redis: Redis;
  /** Where shipped rows are looked up (dedupe/clickhouse.ts ClickHouseStoredRows). */
  stored: StoredRows;
  prefix: string;
  hotSeconds: number;
  pendingTtlMs: number;
  /** How long to wait for other live instances to ship through the window's end. */
  waitMs: number;
  /**
   * Other instances that are down with their spool still `open`, which the operator says lost their
   * volume too (or shipped everything): without this the accounting refuses while any is down.
   */
  ignoreDown?: readonly string[];
  now?: () => number;
}

export class LostVolumeError extends MeterdError {}

/**
 * Settings of the ClickHouse client that looks the lost keys up, over the cluster ones. On a
 * cluster a shard may have more replicas than CLICKHOUSE_INSERT_QUORUM: ingest moved its spool
 * checkpoint once the quorum held an insert, and a replica outside it may not have fetched the
 * part yet. A read from that replica would take a stored event for lost, release its key, and its
 * retry would be stored twice. With select_sequential_consistency=1 a replica answers only if it
 * holds every quorum-acknowledged insert, else the query fails and the command is run again. On
 * one server there is no replica to lag, and the setting is left out.
 */
export function lostLookupSettings(cfg: ClickHouseEnv): ReturnType<typeof clusterSettings> {
  const cluster = clusterSettings(cfg);
  if (cfg.CLICKHOUSE_CLUSTER === undefined || cfg.CLICKHOUSE_CLUSTER === '') return cluster;
  return { ...cluster, select_sequential_consistency: '1' };
}

/** Another thread whose heartbeat is younger than this runs (dedupe/shipped.ts STALE_MS). */
const LIVE_MS = 30_000;
/**
 * The lost instance's threads beat every second: ten missed beats and it is taken to be gone (its
 * replacement was refused at start, so the process that wrote the lost volume has ended).
 */
const GONE_MS = 10_000;
const SCAN_COUNT = 1_000;
const CHUNK = 500;

// KEYS: the quota counter, then hot keys; ARGV: the lost row each key must still hold.
const RELEASE_LOST = `
local freed = 0
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i - 1] then
    redis.call('DEL', KEYS[i])
    freed = freed + 1
  end
end
if freed > 0 and redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECRBY', KEYS[1], freed) end
return freed`;

export async function accountLostVolume(
  d: LostVolumeDeps,
  instance: string,
): Promise<{ report: LostReport; releasedNow: number }> {
  const now = d.now ?? Date.now;
  const { rows } = await d.pool.query<SpoolRecord>('SELECT * FROM ingest_spools WHERE instance = $1', [instance]);
  const rec = rows[0];
  if (rec === undefined)
    throw new LostVolumeError(
      'METERD_INGEST_SPOOL_UNKNOWN_INSTANCE',
      `no spool is recorded for ingest instance ${instance} (ingest_spools)`,
    );
  if (rec.state === 'closed')
    throw new LostVolumeError(
      'METERD_INGEST_SPOOL_CLOSED',
      `instance ${instance}'s spool ${rec.spool_id} was closed with everything shipped: nothing was lost, and ingest starts on a new volume without this command`,
    );
  let report = rec.lost_report as LostReport | null;
  if (rec.state === 'open') {
    await refuseWhileOthersDown(d, instance, now);
    report = await findLost(d, rec, now);
    const done = await d.pool.query(
      `UPDATE ingest_spools SET state = 'lost', lost_report = $3, updated_at = now()
       WHERE instance = $1 AND spool_id = $2 AND state = 'open'`,
      [instance, rec.spool_id, JSON.stringify(report)],
    );
    // Another run got there first: its report is the one kept, and the one released.
    if (done.rowCount !== 1) return accountLostVolume(d, instance);
  }
  const releasedNow = await release(d, report!);
  return { report: report!, releasedNow };
}

/**
 * Refuses while another instance is down with its spool `open` (no live thread, not drained): its
 * acknowledged, unshipped rows are in the same Redis and not in ClickHouse either, so they would be
 * taken for this volume's and released, and stored twice once that instance comes back and ships
 * them. Start it first (its rows ship), or name it in `ignoreDown` when its volume is lost too.
 */
async function refuseWhileOthersDown(d: LostVolumeDeps, instance: string, now: () => number): Promise<void> {
  const { rows } = await d.pool.query<{ instance: string }>(
    `SELECT instance FROM ingest_spools WHERE state = 'open' AND instance <> $1`,
    [instance],
  );
  if (rows.length === 0) return;
  const marks = await d.redis.hgetall(dedupeShippedKey(d.prefix));
  const t = now();
  const live = new Set<string>();
  for (const [id, v] of Object.entries(marks)) {
    const heartbeat = Number(v.split(':', 2)[1]);
    if (t - heartbeat <= LIVE_MS) live.add(id.slice(0, id.indexOf(':')));
  }
  const ignore = new Set(d.ignoreDown ?? []);
  const down = rows.map((r) => r.instance).filter((i) => !live.has(i) && !ignore.has(i));
  if (down.length > 0)
    throw new LostVolumeError(
      'METERD_INGEST_SPOOL_OTHER_DOWN',
      `ingest instance(s) ${down.join(', ')} are down with rows possibly unshipped: start them on their volumes first (their rows ship), or pass --ignore-down ${down.join(',')} if their volumes are lost too`,
      { retryable: true },
    );
}

async function findLost(d: LostVolumeDeps, rec: SpoolRecord, now: () => number): Promise<LostReport> {
  const window = await unshippedWindow(d, rec, now);
  const byWorkspace = new Map<string, LostKey[]>();
  const candidates = new Map<string, LostKey[]>();
  let batch: LostKey[] = [];
  const flush = async (): Promise<void> => {
    for (const r of batch) {
      let list = candidates.get(r.workspace_id);
      if (list === undefined) candidates.set(r.workspace_id, (list = []));
      list.push(r);
    }
    batch = [];
    for (const [ws, list] of candidates) {
      if (list.length < CHUNK) continue;
      await keepUnstored(d, ws, list.splice(0), byWorkspace);
    }
  };
  const match = `${d.prefix}:{*}:d:*`;
  // The values are read through the client, which routes each key to its slot's node.
  await scanEveryPrimary(d.redis, match, SCAN_COUNT, async (keys) => {
    const values = await Promise.all(keys.map((k) => d.redis.get(k)));
    for (let i = 0; i < keys.length; i++) {
      const row = hotRow(d.prefix, keys[i]!, values[i] ?? null);
      if (row !== undefined && row.received_at_ms >= window.from && row.received_at_ms <= window.to) batch.push(row);
    }
    await flush();
  });
  for (const [ws, list] of candidates) if (list.length > 0) await keepUnstored(d, ws, list, byWorkspace);

  const workspaces: LostReport['workspaces'] = {};
  let lost = 0;
  for (const ws of [...byWorkspace.keys()].sort()) {
    const keys = byWorkspace.get(ws)!.sort((a, b) => a.received_at_ms - b.received_at_ms || cmp(a.id, b.id));
    workspaces[ws] = { lost: keys.length, keys };
    lost += keys.length;
  }
  return {
    instance: rec.instance,
    spool_id: rec.spool_id,
    accounted_at: new Date(now()).toISOString(),
    shipped_through: window.through === undefined ? null : new Date(window.through).toISOString(),
    last_heartbeat: window.beat === undefined ? null : new Date(window.beat).toISOString(),
    complete: window.complete,
    lost,
    workspaces,
  };
}

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Adds to `out` the rows of `list` that ClickHouse does not hold. */
async function keepUnstored(d: LostVolumeDeps, ws: string, list: LostKey[], out: Map<string, LostKey[]>) {
  for (let i = 0; i < list.length; i += CHUNK) {
    const part = list.slice(i, i + CHUNK);
    const found = await d.stored
      .find(
        ws,
        part.map((r) => ({
          eventType: r.event_type,
          idempotencyKey: r.idempotency_key,
          hours: [Math.floor(r.occurred_at_ms / 3_600_000)],
        })),
      )
      .catch((err: unknown) => {
        // Retryable (exit 3): on a cluster, a replica missing a quorum insert refuses the read.
        throw new ClickHouseQueryError('looking the lost keys up in ClickHouse', err);
      });
    for (let j = 0; j < part.length; j++) {
      if (found[j] !== undefined) continue;
      let lost = out.get(ws);
      if (lost === undefined) out.set(ws, (lost = []));
      lost.push(part[j]!);
    }
  }
}

/** A committed hot key's row (`<prefix>:{<ws>}:d:<event_type>:<key>` holding the compact row), else undefined. */
function hotRow(prefix: string, key: string, value: string | null): LostKey | undefined {
  if (value === null || value.startsWith(PENDING)) return undefined;
  const open = prefix.length + 2;
  const close = key.indexOf('}:d:', open);
  if (close === -1) return undefined;
  const rest = key.slice(close + 4);
  const colon = rest.indexOf(':');
  if (colon === -1) return undefined;
  return expandRow(key.slice(open, close), rest.slice(0, colon), rest.slice(colon + 1), value);
}

interface Window {
  from: number;
  to: number;
  through?: number;
  beat?: number;
  complete: boolean;
}

/**
 * The instance's unshipped window from its threads' marks, once every other live thread has
 * shipped through its end (so a key of the window not in ClickHouse can only be the lost
 * instance's). Without marks (none published, or forgotten a day after the last heartbeat) the
 * window is everything still hot, and the report says it is not complete.
 */
async function unshippedWindow(d: LostVolumeDeps, rec: SpoolRecord, now: () => number): Promise<Window> {
  const { instance } = rec;
  // Fields of earlier runs (killed, their rows shipped by a successor on the same volume) would only
  // widen the window: the last run's threads beat after its start registered the spool.
  const lastRun = rec.updated_at.getTime();
  const key = dedupeShippedKey(d.prefix);
  const deadline = now() + d.waitMs;
  let goneAt: number | undefined;
  for (;;) {
    const marks = await d.redis.hgetall(key);
    const mine: { shipped: number; heartbeat: number }[] = [];
    let others = Infinity;
    const t = now();
    for (const [id, v] of Object.entries(marks)) {
      // `<shipped>:<heartbeat>:<settled>` (dedupe/shipped.ts).
      const [shipped, heartbeat] = v.split(':', 2).map(Number) as [number, number];
      if (id.startsWith(`${instance}:`)) mine.push({ shipped, heartbeat });
      else if (t - heartbeat <= LIVE_MS) others = Math.min(others, shipped);
    }
    const last = mine.filter((m) => m.heartbeat >= lastRun);
    let through = Infinity;
    let beat = -Infinity;
    for (const m of last.length > 0 ? last : mine) {
      through = Math.min(through, m.shipped);
      beat = Math.max(beat, m.heartbeat);
    }
    if (t - beat <= GONE_MS) {
      if (t >= deadline)
        throw new LostVolumeError(
          'METERD_INGEST_SPOOL_INSTANCE_ALIVE',
          `ingest instance ${instance} is running (a thread beat ${t - beat} ms ago): its spool is not lost`,
        );
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    const known = beat > -Infinity;
    const from = known ? through - d.pendingTtlMs : 0;
    // The window ends when the instance was first seen gone, not at its last heartbeat: a busy
    // event loop beats late, and a key it received after that beat would be left out (and its
    // retries answered duplicate for good). Fixed once, so the other instances can ship past it.
    goneAt ??= t;
    const to = known ? Math.max(beat + d.pendingTtlMs, goneAt) : goneAt;
    if (others >= to) {
      return {
        from,
        to,
        ...(known ? { through, beat } : {}),
        complete: known && from >= t - d.hotSeconds * 1000,
      };
    }
    if (now() >= deadline)
      throw new LostVolumeError(
        'METERD_INGEST_SPOOL_NOT_SETTLED',
        `another ingest has not shipped through ${new Date(to).toISOString()} yet (its ClickHouse backlog): its unshipped keys could not be told from ${instance}'s. Run the command again once its spool has drained.`,
        { retryable: true },
      );
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Releases the report's keys that still hold their lost row; returns how many it released now. */
async function release(d: LostVolumeDeps, report: LostReport): Promise<number> {
  let freed = 0;
  for (const [ws, { keys }] of Object.entries(report.workspaces)) {
    const byPeriod = new Map<string, LostKey[]>();
    for (const r of keys) {
      const p = periodOf(r.received_at_ms);
      let list = byPeriod.get(p);
      if (list === undefined) byPeriod.set(p, (list = []));
      list.push(r);
    }
    for (const [period, list] of byPeriod)
      for (let i = 0; i < list.length; i += CHUNK) {
        const part = list.slice(i, i + CHUNK);
        freed += (await d.redis.eval(
          RELEASE_LOST,
          1 + part.length,
          quotaKey(d.prefix, ws, period),
          ...part.map((r) => dedupeKey(d.prefix, ws, `${r.event_type}:${r.idempotency_key}`)),
          ...part.map((r) => compactRow(r)),
        )) as number;
      }
  }
  return freed;
}
