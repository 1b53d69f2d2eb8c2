import { MeterdError } from '@meterd/core/errors';
import type { StoredEvent } from '@meterd/core/event';

/**
 * The dedupe seam. `claim` marks idempotency keys as pending (short TTL) and reserves them against
 * the quota in one atomic step; after the events are durable `commit` stores each key's original
 * row for the dedupe window and counts it on the period's counter; if storing failed, `release`
 * frees the keys and their reservation, so a retry is stored rather than reported as a duplicate
 * of nothing (README, guarantee 3). A reservation neither committed nor released lapses with its
 * claim: the counter holds exactly the events made durable (docs/redis.md, "Counting quota").
 */
export interface ClaimRequest {
  workspaceId: string;
  /** Events allowed this period; null = unlimited. */
  limit: number | null;
  period: string;
  /** `event_type:idempotency_key`, distinct within the request. */
  keys: string[];
  /**
   * Marks these claims as this request's own (`P:<unique>`): commit and release act only on keys
   * still holding it, so a claim that expired and was re-claimed by a retry is never overwritten
   * or freed by the first request.
   */
  token: string;
  /**
   * Claims without consulting the compact tier: for keys the tier reported stored (`S:`) whose row
   * ClickHouse does not hold, i.e. a hash collision. The hot keys and quota still apply.
   */
  skipTier?: boolean;
  /** The keys' hashes from `hashes(keys)`, when the caller has them already (commit needs them too). */
  hashes?: Buffer;
}

/**
 * Per key: '' = claimed now; 'P:…' = claimed by an earlier request, not yet stored; 'Q' = over
 * quota; 'S:<hours>' = stored earlier, its row is in ClickHouse at one of these occurred hours
 * (comma-separated, hours since the epoch) unless the tier's hash collided; else the committed row.
 */
export interface ClaimResult {
  states: string[];
  /** The workspace's event count this period after this claim: committed, plus live reservations. */
  used: number;
  /**
   * The workspace's tier is being rebuilt after Redis lost its data: a key claimed now may still
   * be stored already, and ClickHouse must be asked (docs/redis.md).
   */
  rebuilding?: boolean;
}

export interface Deduper {
  /** The keys' 16-byte hashes end to end, computed once per tick for both claim and commit. */
  hashes(keys: string[]): Buffer;
  claim(req: ClaimRequest): Promise<ClaimResult>;
  /**
   * `period`: the claim's (YYYYMM), whose counter the stored keys count on;
   * `hours`: hours since the epoch of each row's occurred_at (read from the rows when absent);
   * `hashes`: the keys' hashes (computed when absent).
   */
  commit(
    workspaceId: string,
    period: string,
    keys: string[],
    rows: string[],
    token: string,
    hours?: number[],
    hashes?: Buffer,
  ): Promise<void>;
  release(workspaceId: string, period: string, keys: string[], token: string): Promise<void>;
  /**
   * Stores rows for keys that have no value or only a pending claim: at start-up, for events that
   * were durable in the spool when a crash came before their commit. Never overwrites a stored row.
   */
  recommit(workspaceId: string, period: string, keys: string[], rows: string[]): Promise<void>;
  /** The workspace's committed event count this period, read only (for answers that never reach a claim). */
  used(workspaceId: string, period: string): Promise<number>;
}

/** Prefix of a pending claim's value. Committed values start with the event id (`evt_`). */
export const PENDING = 'P:';
export const OVER_QUOTA = 'Q';
export const CLAIMED = '';
/** Prefix of a key the compact tier remembers: `S:<occurred hours>`. */
export const STORED = 'S:';

/** The original row of keys the compact tier remembers, from where the shipped events are. */
export interface StoredRows {
  /** Per item, its winning row in the events table at one of its occurred hours, or undefined. */
  find(workspaceId: string, items: StoredRowQuery[]): Promise<(StoredEvent | undefined)[]>;
}

export interface StoredRowQuery {
  eventType: string;
  idempotencyKey: string;
  /** Hours since the epoch the row's occurred_at may be in. */
  hours: number[];
}

/**
 * Redis holds no marker of the workspace's dedupe state: Redis (or the cluster node holding the
 * workspace's slot) lost its data, or never saw this workspace. Its counters must be rebuilt before
 * a claim is trusted.
 */
export class DedupeEpochError extends MeterdError {
  constructor(readonly workspaceId: string) {
    super('METERD_INGEST_REDIS_EPOCH', `Redis holds no dedupe state of this epoch for workspace ${workspaceId}`, {
      retryable: true,
    });
  }
}

/** What ingest does when Redis's state of a workspace is of another epoch (dedupe/recovery.ts). */
export interface EpochRecovery {
  /** Rebuilds what quota decisions need; the claim may be retried once this resolves. */
  recover(workspaceId: string, nowMs: number): Promise<void>;
  /** Exact lookups by triple while the workspace's tier is rebuilt. */
  stored(workspaceId: string, items: StoredRowQuery[], nowMs: number): Promise<(StoredEvent | undefined)[]>;
}

/**
 * Whether a key the compact tier remembers, whose hot row has expired, must have its original in
 * ClickHouse by now: only then is a lookup that misses a hash collision, not an original still in
 * some ingest's spool (dedupe/shipped.ts).
 */
export interface ShippedOriginals {
  /** True when every event any ingest acknowledged more than DEDUPE_HOT_SECONDS ago is in ClickHouse. */
  olderThanHotShipped(): boolean;
}

/** Whether every live ingest thread has shipped what it acknowledged before a time (dedupe/shipped.ts). */
export interface ShippedEverywhere {
  allShippedThrough(t: number): boolean;
}
