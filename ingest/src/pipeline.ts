import { randomBytes } from 'node:crypto';
import { type ErrorCode } from '@meterd/core/errors';
import { type MeterEvent, type StoredEvent } from '@meterd/core/event';
import { newEventId } from '@meterd/core/ids';
import { type Logger } from '@meterd/core/log';
import { periodOf } from '@meterd/core/plans';
import {
  CLAIMED,
  DedupeEpochError,
  OVER_QUOTA,
  PENDING,
  STORED,
  type ClaimResult,
  type Deduper,
  type EpochRecovery,
  type ShippedOriginals,
  type StoredRows,
} from './dedupe/deduper.js';
import type { Spool } from './spool/writer.js';
import type { IngestMetrics } from './metrics.js';
import { compactRow, expandRow, spoolLine, toRow } from './rows.js';

export type EventResult =
  | { kind: 'stored'; row: StoredEvent }
  | { kind: 'duplicate'; row: StoredEvent }
  | { kind: 'rejected'; code: ErrorCode; message: string };

export interface SubmitResult {
  results: EventResult[];
  /** Events counted this period after this request; NaN when Redis could not say. */
  used: number;
}

/** All events of one submit belong to `workspaceId` (the handler rejects the rest before). */
export interface Submit {
  workspaceId: string;
  limit: number | null;
  events: MeterEvent[];
  done: (r: SubmitResult) => void;
}

interface Slot {
  submit: Submit;
  i: number;
}
interface Group {
  workspaceId: string;
  limit: number | null;
  keys: string[];
  /** first occurrence of each key in this tick, parallel to keys */
  firsts: Slot[];
  /** later occurrences of a key in the same tick: answered like the first, as duplicates */
  follows: { slot: Slot; first: number }[];
  index: Map<string, number>;
  submits: Submit[];
  used: number;
  newRows: (StoredEvent | undefined)[];
  /** The keys' hashes, parallel to keys: computed once, for the claim and the commit. */
  hashes: Buffer;
}

const IN_USE: EventResult = {
  kind: 'rejected',
  code: 'idempotency_key_in_use',
  message: 'an event with this idempotency key is being stored; retry shortly',
};
const OVER: EventResult = {
  kind: 'rejected',
  code: 'plan_quota_exceeded',
  message: 'the workspace has used every event its plan allows this period',
};
/** The tier remembers the key, ClickHouse not yet: its original may still be in a spool. */
const UNSHIPPED: EventResult = {
  kind: 'rejected',
  code: 'idempotency_key_in_use',
  message: 'an event with this idempotency key may still be on its way to storage; retry shortly',
};
const NO_HASHES = Buffer.alloc(0);
/** A key settled before the claim's answer is read (its duplicate answer came from ClickHouse). */
const DONE = '\u0000';

const UNAVAILABLE: EventResult = {
  kind: 'rejected',
  code: 'service_unavailable',
  message: 'the event could not be stored; nothing was recorded, retry with backoff',
};

/** A failed commit's retries back off from 50 ms to 2 s, well inside the claims' pending TTL at first. */
const COMMIT_RETRY_FIRST_MS = 50;
const COMMIT_RETRY_MAX_MS = 2_000;

/** One group's commit, kept for its retries. */
interface PendingCommit {
  workspaceId: string;
  period: string;
  keys: string[];
  rows: string[];
  token: string;
  hours: number[];
  hashes: Buffer;
}

/**
 * The accept path, batched per event-loop tick: every request of a tick is grouped by workspace,
 * each workspace's idempotency keys are claimed (and reserved against its quota) in one Redis call,
 * each group's new rows go to the spool as soon as its claim is settled (the spool gathers the
 * groups of one moment into one write + fdatasync), and only then do its requests get their answer.
 * A group that waits for ClickHouse never holds the others: their pending claims would expire
 * meanwhile and a retry be stored twice. After the spool write the keys are committed with their
 * rows (retried until Redis takes them); if the write failed they are released, so a retry is stored
 * instead of being taken for a duplicate.
 */
export class Pipeline {
  private queue: Submit[] = [];
  private scheduled = false;
  /** Claim tokens are `P:<process-unique prefix>:<tick>`: unique without a random draw per tick. */
  private readonly tokenPrefix = `${PENDING}${randomBytes(6).toString('hex')}:`;
  private tick = 0;

  constructor(
    private readonly deduper: Deduper,
    private readonly stored: StoredRows,
    private readonly recovery: EpochRecovery,
    private readonly shipped: ShippedOriginals,
    private readonly spool: Spool,
    private readonly metrics: IngestMetrics,
    private readonly log: Logger,
    /** A claim answered later than this is not trusted: its pending keys may have expired already. */
    private readonly maxClaimMs: number,
  ) {}

  /**
   * Adaptive batching: at most one batch is claiming at a time. Requests that arrive while its
   * Redis call is out wait for it and then go together, so under load a batch grows to whatever
   * arrived during one round trip, and at low load a request waits for nothing but the next tick.
   * (The bench profile showed ioredis command encoding as the largest CPU item when every tick of
   * ~3 events paid its own claim and commit calls.)
   */
  private claiming = false;
  /** Commits waiting for their next attempt, by the timer that will make it (see commit). */
  private readonly retries = new Map<NodeJS.Timeout, PendingCommit>();
  private closed = false;

  submit(s: Submit): void {
    this.queue.push(s);
    this.schedule();
  }

  private schedule(): void {
    if (!this.scheduled && !this.claiming && this.queue.length > 0) {
      this.scheduled = true;
      setImmediate(() => this.run());
    }
  }

  private run(): void {
    const submits = this.queue;
    this.queue = [];
    this.scheduled = false;
    this.claiming = true;
    const now = Date.now();
    const period = periodOf(now);
    const token = this.tokenPrefix + this.tick++;
    const groups = new Map<string, Group>();
    for (const s of submits) {
      let g = groups.get(s.workspaceId);
      if (g === undefined) {
        g = {
          workspaceId: s.workspaceId,
          limit: s.limit,
          keys: [],
          firsts: [],
          follows: [],
          index: new Map(),
          submits: [],
          used: NaN,
          newRows: [],
          hashes: NO_HASHES,
        };
        groups.set(s.workspaceId, g);
      }
      g.submits.push(s);
      for (let i = 0; i < s.events.length; i++) {
        const e = s.events[i]!;
        const key = e.event_type + ':' + e.idempotency_key;
        const first = g.index.get(key);
        if (first === undefined) {
          g.index.set(key, g.keys.length);
          g.keys.push(key);
          g.firsts.push({ submit: s, i });
        } else {
          g.follows.push({ slot: { submit: s, i }, first });
        }
      }
    }
    const results = new Map<Submit, EventResult[]>();
    for (const s of submits) results.set(s, new Array<EventResult>(s.events.length));
    // The next batch may claim once every group has Redis's answer: a group that goes on to wait
    // for ClickHouse (or a recovery) holds neither it nor the other groups' stores.
    let waiting = groups.size;
    const claimed = (): void => {
      if (--waiting > 0) return;
      this.claiming = false;
      this.schedule();
    };
    for (const g of groups.values()) {
      let answered = false;
      const redisAnswered = (): void => {
        if (answered) return;
        answered = true;
        claimed();
      };
      this.claimGroup(g, period, token, now, results, redisAnswered).then(
        () => {
          redisAnswered();
          this.store(g, results, period, token, now);
        },
        (err: unknown) => {
          redisAnswered();
          this.unavailable(g, results, period, token, err);
        },
      );
    }
  }

  private unavailable(g: Group, results: Map<Submit, EventResult[]>, period: string, token: string, err: unknown) {
    this.log.warn({ err, workspace_id: g.workspaceId }, 'claiming idempotency keys in Redis failed');
    for (const slot of g.firsts) results.get(slot.submit)![slot.i] = UNAVAILABLE;
    // The script may have run even though its answer was lost: free whatever it claimed.
    this.release(g.workspaceId, period, g.keys, token);
    this.finish(g, results);
  }

  /**
   * Claims a group's keys and settles what Redis said of each. Keys the compact tier remembers
   * (`S:`) get their original row from ClickHouse; one that is not there was a hash collision, so
   * the key is claimed again past the tier and stored, unless its original may still be in a spool
   * (a ClickHouse backlog longer than the hot window): then it is answered 409 (docs/redis.md).
   */
  private async claimGroup(
    g: Group,
    period: string,
    token: string,
    now: number,
    results: Map<Submit, EventResult[]>,
    /** Called before the group waits on anything but Redis. */
    slow: () => void,
  ): Promise<void> {
    g.hashes = this.deduper.hashes(g.keys);
    const req = { workspaceId: g.workspaceId, limit: g.limit, period, keys: g.keys, token, hashes: g.hashes };
    let claim: ClaimResult;
    try {
      claim = await this.deduper.claim(req);
    } catch (err) {
      if (!(err instanceof DedupeEpochError)) throw err;
      slow();
      // Past maxClaimMs the request is answered 503 anyway; the recovery goes on for its retry.
      await settledBy(this.recovery.recover(g.workspaceId, now), now + this.maxClaimMs);
      claim = await this.deduper.claim(req);
    }
    const { states, used } = claim;
    g.used = used;
    if (claim.rebuilding === true) {
      slow();
      await this.settleRebuilding(g, states, period, token, now, results);
    }
    let older: number[] | undefined;
    for (let k = 0; k < states.length; k++) if (states[k]!.startsWith(STORED)) (older ??= []).push(k);
    if (older !== undefined) {
      slow();
      const items = older.map((k) => {
        const e = g.firsts[k]!.submit.events[g.firsts[k]!.i]!;
        return {
          eventType: e.event_type,
          idempotencyKey: e.idempotency_key,
          hours: states[k]!.slice(2).split(',').map(Number),
        };
      });
      // Asked before the lookup: an original that ships while it runs must not pass for a collision.
      const collisionOnly = this.shipped.olderThanHotShipped();
      const rows = await this.stored.find(g.workspaceId, items).catch((err: unknown) => this.lookupFailed(g, err));
      const again: number[] = [];
      for (let j = 0; j < older.length; j++) {
        const k = older[j]!;
        const row = rows?.[j];
        if (rows === undefined) this.answer(g, k, states, results, UNAVAILABLE);
        else if (row === undefined) {
          if (collisionOnly) again.push(k);
          else this.answer(g, k, states, results, UNSHIPPED);
        } else this.answer(g, k, states, results, { kind: 'duplicate', row });
      }
      if (again.length > 0) {
        const re = await this.deduper.claim({
          ...req,
          keys: again.map((k) => g.keys[k]!),
          hashes: pick(g.hashes, again),
          skipTier: true,
        });
        g.used = re.used;
        for (let j = 0; j < again.length; j++) states[again[j]!] = re.states[j]!;
      }
    }
    for (let k = 0; k < states.length; k++) {
      const st = states[k]!;
      const slot = g.firsts[k]!;
      const out = results.get(slot.submit)!;
      if (st === CLAIMED) {
        const row = toRow(slot.submit.events[slot.i]!, newEventId(), now);
        g.newRows[k] = row;
      } else if (st === DONE) {
        continue;
      } else if (st.startsWith(PENDING)) {
        out[slot.i] = IN_USE;
      } else if (st === OVER_QUOTA) {
        out[slot.i] = OVER;
      } else {
        const e = slot.submit.events[slot.i]!;
        out[slot.i] = { kind: 'duplicate', row: expandRow(g.workspaceId, e.event_type, e.idempotency_key, st) };
      }
    }
  }

  /**
   * Redis lost its data and the workspace's tier is not rebuilt yet: a key it calls new may have
   * been stored before the loss. ClickHouse is asked about each (the spool had drained into it
   * before claims resumed); a stored one gives its claim back and answers as a duplicate.
   */
  private async settleRebuilding(
    g: Group,
    states: string[],
    period: string,
    token: string,
    now: number,
    results: Map<Submit, EventResult[]>,
  ): Promise<void> {
    const fresh: number[] = [];
    for (let k = 0; k < states.length; k++) if (states[k] === CLAIMED) fresh.push(k);
    if (fresh.length === 0) return;
    const items = fresh.map((k) => {
      const e = g.firsts[k]!.submit.events[g.firsts[k]!.i]!;
      return { eventType: e.event_type, idempotencyKey: e.idempotency_key, hours: [] };
    });
    const rows = await this.recovery
      .stored(g.workspaceId, items, now)
      .catch((err: unknown) => this.lookupFailed(g, err));
    const taken: string[] = [];
    for (let j = 0; j < fresh.length; j++) {
      const row = rows?.[j];
      if (rows !== undefined && row === undefined) continue;
      const k = fresh[j]!;
      this.answer(g, k, states, results, row === undefined ? UNAVAILABLE : { kind: 'duplicate', row });
      taken.push(g.keys[k]!);
    }
    if (taken.length > 0) {
      g.used -= taken.length;
      await this.deduper.release(g.workspaceId, period, taken, token);
    }
  }

  /**
   * ClickHouse could not be asked: only the keys that needed it are answered 503. The group's new
   * events are still accepted, the spool holding them until ClickHouse is back (README).
   */
  private lookupFailed(g: Group, err: unknown): undefined {
    this.log.warn({ err, workspace_id: g.workspaceId }, 'looking idempotency keys up in ClickHouse failed');
    return undefined;
  }

  /** Settles key `k` of the group before its claim's answer is read. */
  private answer(g: Group, k: number, states: string[], results: Map<Submit, EventResult[]>, r: EventResult): void {
    const slot = g.firsts[k]!;
    results.get(slot.submit)![slot.i] = r;
    states[k] = DONE;
  }

  private release(workspaceId: string, period: string, keys: string[], token: string): void {
    this.deduper.release(workspaceId, period, keys, token).catch((e: unknown) => {
      // The claims stay pending until their short TTL frees them: retries get 409, then succeed.
      this.log.warn({ err: e, workspace_id: workspaceId }, 'releasing idempotency claims failed');
    });
  }

  /**
   * Appends one group's new rows (the spool gathers the appends of one moment into one write and
   * fdatasync). Its claims were taken at `now` at the latest: past maxClaimMs they may have expired
   * and been re-claimed by a retry, so the group is answered 503 rather than stored twice.
   */
  private store(g: Group, results: Map<Submit, EventResult[]>, period: string, token: string, now: number): void {
    const late = Date.now() - now;
    if (late > this.maxClaimMs)
      return this.unavailable(g, results, period, token, new Error(`claim settled after ${late} ms`));
    let data = '';
    let rows = 0;
    for (const r of g.newRows)
      if (r !== undefined) {
        data += spoolLine(r);
        rows++;
      }
    if (rows === 0) return this.finish(g, results);
    this.spool.append(data, rows, (err) => {
      const keys: string[] = [];
      const compact: string[] = [];
      const hours: number[] = [];
      const stored: number[] = [];
      for (let k = 0; k < g.newRows.length; k++) {
        const row = g.newRows[k];
        if (row === undefined) continue;
        const slot = g.firsts[k]!;
        results.get(slot.submit)![slot.i] = err ? UNAVAILABLE : { kind: 'stored', row };
        stored.push(k);
        keys.push(g.keys[k]!);
        compact.push(compactRow(row));
        hours.push(Math.floor(row.occurred_at_ms / 3_600_000));
      }
      if (err) {
        this.release(g.workspaceId, period, keys, token);
      } else {
        const hashes = keys.length === g.keys.length ? g.hashes : pick(g.hashes, stored);
        this.commit({ workspaceId: g.workspaceId, period, keys, rows: compact, token, hours, hashes }, 0);
      }
      if (err) this.log.error({ err }, 'spool append failed; answering 503');
      this.finish(g, results);
    });
  }

  /**
   * Commits stored events' keys, retrying with backoff until Redis takes them. The events are
   * durable and answered: until the commit lands their keys are only pending claims, uncounted on
   * the quota, and once those expire a client's retry would be stored again. The commit is
   * idempotent (by its token; a key another request re-claimed meanwhile is left to it), so a retry
   * that repeats one that landed unseen changes nothing.
   */
  private commit(c: PendingCommit, attempt: number): void {
    this.send(c).catch((err: unknown) => {
      this.metrics.dedupeCommitFailures.inc();
      if (attempt === 0)
        this.log.warn({ err, workspace_id: c.workspaceId }, 'committing idempotency keys failed; retrying');
      if (this.closed) return this.commitLost(c, err);
      const timer = setTimeout(
        () => {
          this.retries.delete(timer);
          this.commit(c, attempt + 1);
        },
        Math.min(COMMIT_RETRY_MAX_MS, COMMIT_RETRY_FIRST_MS * 2 ** attempt),
      );
      this.retries.set(timer, c);
    });
  }

  private send(c: PendingCommit): Promise<void> {
    return this.deduper.commit(c.workspaceId, c.period, c.keys, c.rows, c.token, c.hours, c.hashes);
  }

  private commitLost(c: PendingCommit, err: unknown): void {
    // Unshipped rows are committed again at the next start (recommitUnshipped); shipped ones keep
    // only their pending claims until those expire.
    this.log.error(
      { err, workspace_id: c.workspaceId, events: c.keys.length },
      'idempotency keys left uncommitted at close',
    );
  }

  /**
   * Once no request is in flight: every commit still waiting for a retry gets one last attempt now,
   * and nothing is scheduled after it.
   */
  async close(): Promise<void> {
    this.closed = true;
    const waiting = [...this.retries.values()];
    for (const timer of this.retries.keys()) clearTimeout(timer);
    this.retries.clear();
    await Promise.all(waiting.map((c) => this.send(c).catch((err: unknown) => this.commitLost(c, err))));
  }

  private finish(g: Group, results: Map<Submit, EventResult[]>): void {
    for (const { slot, first } of g.follows) {
      const head = g.firsts[first]!;
      const r = results.get(head.submit)![head.i]!;
      results.get(slot.submit)![slot.i] = r.kind === 'stored' ? { kind: 'duplicate', row: r.row } : r;
    }
    for (const s of g.submits) {
      const out = results.get(s)!;
      let accepted = 0;
      let dup = 0;
      for (const r of out) {
        if (r.kind === 'stored') accepted++;
        else if (r.kind === 'duplicate') dup++;
        else this.metrics.rejected[r.code]!.inc();
      }
      this.metrics.accepted.inc(accepted);
      this.metrics.duplicate.inc(dup);
      s.done({ results: out, used: g.used });
    }
  }
}

/** The 16-byte hashes of the keys at `idx`, end to end. */
function pick(hashes: Buffer, idx: number[]): Buffer {
  const out = Buffer.allocUnsafe(16 * idx.length);
  for (let j = 0; j < idx.length; j++) hashes.copy(out, 16 * j, 16 * idx[j]!, 16 * idx[j]! + 16);
  return out;
}

/** `p`, or a rejection at `atMs` if it has not settled by then (`p` itself goes on). */
function settledBy(p: Promise<void>, atMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('recovery still running')), Math.max(0, atMs - Date.now()));
    p.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}
