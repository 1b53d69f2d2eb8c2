import { randomBytes } from 'node:crypto';
import { type Counter } from '@meterd/core/metrics';
import type { Logger } from '@meterd/core/log';
import type { StoredEvent } from '@meterd/core/event';
import type { ClickHouseStoredRows } from './clickhouse.js';
import type { EpochRecovery, ShippedEverywhere, StoredRowQuery } from './deduper.js';
import { GENERATION_REFRESH_MS, type RedisDeduper } from './redis.js';

export interface RecoveryOptions {
  windowSeconds: number;
  /** Whether every live ingest thread has shipped what it acknowledged on claims before a time (ShippedMarks). */
  shipped: ShippedEverywhere;
  /** How long a recovery waits for the other threads to ship before it fails (and backs off). */
  shipWaitMs?: number;
  /** How long a recovery waits for a place among the PARALLEL ones (its claim then answers 503). */
  drainMs: number;
  log: Logger;
  /** Quota counters raised from ClickHouse after Redis lost its data (alerted on: a loss happened). */
  rebuilds?: Counter;
  /** Recoveries that failed and will be retried after a backoff (the workspace gets 503 meanwhile). */
  failures?: Counter;
  /**
   * Lifetime of a tier rebuild's `:r:` mark, renewed while the rebuild makes progress: how long
   * after its process died a workspace is recovered again (REBUILD_MARK_SECONDS; tests shorten it).
   */
  rebuildMarkSeconds?: number;
}

/** Rows per tier insert while rebuilding. */
const CHUNK = 1_000;
const DAY_MS = 86_400_000;
/** Backoff after a failed recovery of a workspace: its claims answer 503 meanwhile, without a query. */
const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 60_000;
/** Recoveries at once: after a loss every active workspace needs one, each a ClickHouse query. */
const PARALLEL = 4;
/**
 * How long a workspace that may be new waits for the threads' times to show the registry is older
 * than anything unshipped: they are read once a second, and a registry is young for seconds.
 */
const NEW_WAIT_MS = 3_000;
/** Default of shipWaitMs: past the 30 s after which a silent thread is taken for dead. */
const SHIP_WAIT_MS = 60_000;
/**
 * Default of rebuildMarkSeconds: ten times the scans' 60 s timeout, so a rebuild renews its mark
 * many times before one slow step could let it lapse.
 */
const REBUILD_MARK_SECONDS = 600;

/**
 * What ingest does for a workspace Redis holds no marker of: Redis (or the cluster node holding the
 * workspace's slot) lost its data, or the workspace is new (docs/redis.md).
 *
 * 0. New or lost? The registry (another slot) lists every workspace whose marker was ever
 *    written. One not listed, of a registry older than every live thread's unshipped rows, with
 *    nothing in ClickHouse in the window, is new: marked complete, done.
 * 1. Otherwise wait until every live ingest thread, of every process, has shipped what it
 *    acknowledged on claims sent before this moment: then every event acknowledged on a claim
 *    from before the loss is in ClickHouse (no claim of the workspace succeeds meanwhile: it has
 *    no marker). Claims wait for this at most DEDUPE_PENDING_TTL_MS / 2, then answer 503; the
 *    recovery goes on for their retries.
 * 2. Raise the period's quota counter to the events ClickHouse holds for it, before any quota
 *    decision is trusted again. A workspace ClickHouse has nothing of is done here.
 * 3. Mark the workspace `<gen>:r:<token>`: claims go through again, and every key a claim calls new
 *    is also looked up in ClickHouse by its triple, so a retry of an event stored before the loss,
 *    by any thread, is answered as a duplicate, not stored twice.
 * 4. Rebuild the compact tier from ClickHouse a day of occurred hours at a time, then mark
 *    the workspace `<gen>` (only over its own token): claims trust Redis alone again.
 *
 * Steps 2 and 4 read ranges of the events sort key through `scans`, a client with a longer
 * timeout than the hot path's lookups; a workspace whose recovery failed waits a growing backoff
 * before the next try, so retries of its requests do not relaunch the scans.
 */
export class DedupeRecovery implements EpochRecovery {
  private readonly inFlight = new Map<string, Promise<void>>();
  private closed = false;
  private running = 0;
  private readonly queue: (() => void)[] = [];
  /** Workspaces whose last recovery failed: when, and how many times in a row. */
  private readonly failed = new Map<string, { at: number; times: number }>();

  constructor(
    private readonly deduper: RedisDeduper,
    private readonly rows: ClickHouseStoredRows,
    private readonly scans: ClickHouseStoredRows,
    private readonly o: RecoveryOptions,
  ) {}

  /** Steps 1–3, once at a time per workspace; the tier rebuild (4) goes on in the background. */
  recover(workspaceId: string, nowMs: number): Promise<void> {
    let p = this.inFlight.get(workspaceId);
    if (p !== undefined) return p;
    const f = this.failed.get(workspaceId);
    if (f !== undefined) {
      const wait = f.at + Math.min(BACKOFF_MIN_MS * 2 ** (f.times - 1), BACKOFF_MAX_MS) - Date.now();
      if (wait > 0) return Promise.reject(new Error(`recovery failed recently; next try in ${wait} ms`));
    }
    p = this.run(workspaceId, nowMs).then(
      () => {
        this.failed.delete(workspaceId);
        this.inFlight.delete(workspaceId);
      },
      (err: unknown) => {
        this.o.failures?.inc();
        this.failed.set(workspaceId, { at: Date.now(), times: (f?.times ?? 0) + 1 });
        this.inFlight.delete(workspaceId);
        throw err;
      },
    );
    this.inFlight.set(workspaceId, p);
    return p;
  }

  /** Exact lookups while the tier is rebuilt: each key's stored row, or undefined. */
  stored(workspaceId: string, items: StoredRowQuery[], nowMs: number): Promise<(StoredEvent | undefined)[]> {
    return this.rows.findAnyHour(workspaceId, items, nowMs - this.o.windowSeconds * 1000 - 3_600_000);
  }

  close(): void {
    this.closed = true;
  }

  private async run(workspaceId: string, nowMs: number): Promise<void> {
    const noticed = Date.now();
    const reg = await this.deduper.registryState(workspaceId);
    const d = new Date(nowMs);
    const monthStart = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
    const since = nowMs - this.o.windowSeconds * 1000 - DAY_MS;
    // An event received from `since` on occurred at most a window before it.
    const occurredFrom = Math.min(monthStart, since) - this.o.windowSeconds * 1000 - 3_600_000;
    // Not listed in a registry born before everything still unshipped anywhere: the workspace had
    // no marker when any claim after the registry's birth was sent (a claim that carried an older
    // generation, read at most GENERATION_REFRESH_MS before, registers it first), and events of
    // claims sent before are in ClickHouse. So if ClickHouse has none, it is new: no wait, one
    // LIMIT 1 query.
    if (!reg.listed && (await this.shippedWithin(reg.birthMs + GENERATION_REFRESH_MS, NEW_WAIT_MS))) {
      if (!(await this.inTurn(() => this.scans.hasAny(workspaceId, occurredFrom)))) {
        await this.deduper.markFresh(workspaceId);
        return;
      }
    }
    await this.allShipped(noticed);
    await this.inTurn(() => this.recoverNow(workspaceId, nowMs, monthStart, since, occurredFrom));
  }

  /** Whether every live thread ships past `t` within `ms` (at a thread's start: its first read of the others). */
  private async shippedWithin(t: number, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.o.shipped.allShippedThrough(t)) {
      if (this.closed || Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
    return true;
  }

  /**
   * Waits until every live ingest thread has shipped what it acknowledged on claims sent before `t`:
   * every claim that ran on the state Redis lost.
   */
  private async allShipped(t: number): Promise<void> {
    const wait = this.o.shipWaitMs ?? SHIP_WAIT_MS;
    const deadline = Date.now() + wait;
    while (!this.o.shipped.allShippedThrough(t)) {
      if (this.closed) throw new Error('ingest is closing');
      if (Date.now() > deadline)
        throw new Error(`ingest threads have not shipped their spools to ClickHouse within ${wait} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Runs `f` as one of the PARALLEL recoveries (their ClickHouse scans). */
  private async inTurn<T>(f: () => Promise<T>): Promise<T> {
    if (this.running >= PARALLEL) await this.turn();
    this.running++;
    try {
      return await f();
    } finally {
      this.running--;
      this.queue.shift()?.();
    }
  }

  /** A place among the PARALLEL recoveries, waited for at most drainMs: the claim behind it answers 503. */
  private turn(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const go = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.queue.splice(this.queue.indexOf(go), 1);
        reject(new Error(`no recovery slot within ${this.o.drainMs} ms`));
      }, this.o.drainMs);
      this.queue.push(go);
    });
  }

  private async recoverNow(
    workspaceId: string,
    nowMs: number,
    monthStart: number,
    since: number,
    occurredFrom: number,
  ): Promise<void> {
    if (!(await this.scans.hasAny(workspaceId, occurredFrom))) {
      // Nothing in ClickHouse, and every thread has shipped: nothing to count or rebuild.
      await this.deduper.markFresh(workspaceId);
      return;
    }
    const d = new Date(nowMs);
    const period = `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
    const used = await this.scans.periodCount(workspaceId, monthStart, this.o.windowSeconds);
    await this.deduper.quotaAtLeast(workspaceId, period, used);
    this.o.rebuilds?.inc();
    const token = randomBytes(6).toString('hex');
    // The `:r:` mark lapses if this process dies mid-rebuild: another ingest then recovers again.
    await this.deduper.markRebuilding(workspaceId, token, this.markSeconds);
    this.o.log.warn(
      { workspace_id: workspaceId, events_this_period: used },
      'Redis holds no dedupe state for the workspace: counters rebuilt from ClickHouse, rebuilding its dedupe tier',
    );
    const rebuildFrom = since - this.o.windowSeconds * 1000 - 3_600_000;
    void this.rebuild(workspaceId, nowMs, since, rebuildFrom, token).catch((err: unknown) =>
      // The mark is no longer renewed: it lapses and the next claim starts over; until then lookups stay exact.
      this.o.log.error({ err, workspace_id: workspaceId }, 'rebuilding the dedupe tier from ClickHouse failed'),
    );
  }

  private async rebuild(
    workspaceId: string,
    nowMs: number,
    since: number,
    occurredFrom: number,
    token: string,
  ): Promise<void> {
    // A rebuild longer than the mark's lifetime (a large workspace, a slow ClickHouse) would
    // otherwise lose its mark and start over, serving 503 meanwhile: after each step, the mark is
    // renewed once a third of its lifetime has passed. A closed recovery stops, and so do renewals.
    const renewMs = (this.markSeconds * 1000) / 3;
    let renewedAt = Date.now();
    const renewed = async (): Promise<boolean> => {
      if (Date.now() - renewedAt < renewMs) return true;
      renewedAt = Date.now();
      return this.deduper.renewRebuilding(workspaceId, token, this.markSeconds);
    };
    for (let from = occurredFrom; from < nowMs + DAY_MS; from += DAY_MS) {
      if (this.closed) return;
      const { keys, hours } = await this.scans.storedKeys(workspaceId, from, from + DAY_MS, since);
      for (let i = 0; i < keys.length; i += CHUNK) {
        if (this.closed) return;
        await this.deduper.tierInsert(workspaceId, keys.slice(i, i + CHUNK), hours.slice(i, i + CHUNK));
        if (!(await renewed())) return this.replaced(workspaceId);
      }
      if (!(await renewed())) return this.replaced(workspaceId);
    }
    if (await this.deduper.markRebuilt(workspaceId, token))
      this.o.log.info({ workspace_id: workspaceId }, 'dedupe tier rebuilt from ClickHouse');
    else this.replaced(workspaceId);
  }

  private replaced(workspaceId: string): void {
    this.o.log.warn({ workspace_id: workspaceId }, 'dedupe tier rebuild stopped: its mark was replaced meanwhile');
  }

  private get markSeconds(): number {
    return this.o.rebuildMarkSeconds ?? REBUILD_MARK_SECONDS;
  }
}
