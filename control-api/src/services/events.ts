import { ClickHouseQueryError, dateTimeLit, lit, type createClickHouse } from '@meterd/core/clickhouse';
import { CH_TABLES } from '@meterd/core/contracts';
import { ApiError } from '@meterd/core/errors';
import { readRejections, REJECTIONS_PER_WORKSPACE, type Redis, type Rejected } from '@meterd/core/store';

type ClickHouseClient = ReturnType<typeof createClickHouse>;

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;
/** The default look-back without `from`: Stripe's meter event window, the age limit of what ingest accepts. */
export const DEFAULT_RANGE_MS = 35 * DAY_MS;
/** The widest range one listing may walk (`from` to `to`). */
export const MAX_RANGE_MS = 366 * DAY_MS;

export interface StoredEvent {
  id: string;
  event_type: string;
  idempotency_key: string;
  quantity: number;
  gmv_cents: number;
  currency: string;
  occurred_at: string;
  received_at: string;
}

export interface EventQuery {
  eventType?: string;
  idempotencyKey?: string;
  /** Epoch ms, inclusive. */
  from: number;
  /** Epoch ms, inclusive. */
  to: number;
  cursor?: Cursor;
  limit: number;
}

/** Where the last page ended: the sort key of its last event (occurred_at in whole seconds). */
export interface Cursor {
  t: number;
  e: string;
  k: string;
}

export function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}

/** Between 1970 and a day from now: what ClickHouse's DateTime can hold and an event may claim. */
const inRange = (ms: number) => Number.isFinite(ms) && ms >= 0 && ms <= Date.now() + DAY_MS;

/** An RFC 3339 time as epoch ms; one that is no real date (month 13) or out of range is a 400 naming `field`. */
export function parseTime(s: string, field: string): number {
  const ms = Date.parse(s);
  if (!inRange(ms))
    throw new ApiError('invalid_field', `${field} must be a real date between 1970 and tomorrow`, field);
  return ms;
}

/** A cursor this server wrote; anything else is a 400 naming `cursor`. */
export function decodeCursor(s: string): Cursor {
  try {
    const c = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as Cursor;
    if (Number.isSafeInteger(c.t) && inRange(c.t * 1000) && typeof c.e === 'string' && typeof c.k === 'string')
      return c;
  } catch {
    // Not base64url JSON: refused below like any other malformed cursor.
  }
  throw new ApiError('invalid_field', 'cursor is not a cursor this API returned', 'cursor');
}

interface Row {
  event_type: string;
  idempotency_key: string;
  id: string;
  q: string;
  g: string;
  c: string;
  o: string;
  r: string;
}

const iso = (s: string) => `${s.replace(' ', 'T')}Z`;

/**
 * The event explorer: a workspace's stored events newest first, and its recent rejections.
 *
 * `events` is sorted by (workspace_id, hour, event_type, idempotency_key) (ClickHouse migration
 * 004), so a read bounded to a workspace and a range of hours touches those hours' granules only.
 * A page walks back from the cursor in hour-aligned windows that double in size (1 h, 2 h, 4 h…)
 * until it has `limit` events or reaches `from`: its cost follows the events it returns and the
 * empty hours it crosses, never the workspace's whole history. Copies of one idempotency key
 * within an hour (a replayed spool segment) show once, as the copy every reader counts (the highest
 * `ver`); a retry stored in another hour after Redis forgot its key would show in both hours.
 */
export class EventService {
  constructor(
    private readonly ch: ClickHouseClient,
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  async list(workspaceId: string, q: EventQuery): Promise<{ data: StoredEvent[]; next_cursor: string | null }> {
    const out: StoredEvent[] = [];
    let hi = q.cursor === undefined ? q.to : Math.min(q.to, q.cursor.t * 1000);
    let span = HOUR_MS;
    let last: Row | undefined;
    while (out.length < q.limit && hi >= q.from) {
      const lo = Math.max(q.from, Math.floor(hi / HOUR_MS) * HOUR_MS - span + HOUR_MS);
      const rows = await this.window(workspaceId, q, lo, hi, q.limit - out.length + 1);
      for (const r of rows) {
        if (out.length === q.limit) {
          // One more exists beyond this page: the cursor is the last event shown.
          return { data: out, next_cursor: encodeCursor(cursorOf(last!)) };
        }
        out.push(view(r));
        last = r;
      }
      hi = lo - 1000;
      span = Math.min(span * 2, 32 * 24 * HOUR_MS);
    }
    // The page is full only if the range may hold more: the next page then starts below its last event.
    return {
      data: out,
      next_cursor: out.length === q.limit && last !== undefined && hi >= q.from ? encodeCursor(cursorOf(last)) : null,
    };
  }

  private async window(workspaceId: string, q: EventQuery, lo: number, hi: number, limit: number): Promise<Row[]> {
    const where = [
      `workspace_id = ${lit(workspaceId)}`,
      // The hour bounds are the sort key's own expression, so the index prunes by them.
      `toStartOfHour(occurred_at) >= toStartOfHour(toDateTime(${dateTimeLit(lo)}, 'UTC'))`,
      `toStartOfHour(occurred_at) <= toStartOfHour(toDateTime(${dateTimeLit(hi)}, 'UTC'))`,
      `occurred_at >= toDateTime(${dateTimeLit(lo)}, 'UTC')`,
      `occurred_at <= toDateTime(${dateTimeLit(hi)}, 'UTC')`,
    ];
    if (q.eventType !== undefined) where.push(`event_type = ${lit(q.eventType)}`);
    if (q.idempotencyKey !== undefined) where.push(`idempotency_key = ${lit(q.idempotencyKey)}`);
    const c = q.cursor;
    const after =
      c === undefined
        ? ''
        : `HAVING o < toDateTime(${dateTimeLit(c.t * 1000)}, 'UTC') OR (o = toDateTime(${dateTimeLit(c.t * 1000)}, 'UTC') AND (event_type < ${lit(c.e)} OR (event_type = ${lit(c.e)} AND idempotency_key < ${lit(c.k)})))`;
    const query = `SELECT event_type, idempotency_key, argMax(event_id, ver) AS id, toString(argMax(quantity, ver)) AS q,
        toString(argMax(gmv_cents, ver)) AS g, argMax(currency, ver) AS c, argMax(occurred_at, ver) AS o, argMax(received_at, ver) AS r
      FROM ${CH_TABLES.events} WHERE ${where.join(' AND ')}
      GROUP BY event_type, idempotency_key ${after}
      ORDER BY o DESC, event_type DESC, idempotency_key DESC LIMIT ${limit}`;
    try {
      return await (await this.ch.query({ query, format: 'JSONEachRow' })).json<Row>();
    } catch (err) {
      throw new ClickHouseQueryError('listing events for the explorer', err);
    }
  }

  /** Events ingest refused for the workspace in the last 7 days, newest first (at most 1,000 kept). */
  async rejections(workspaceId: string, limit: number): Promise<Rejected[]> {
    return readRejections(this.redis, this.prefix, workspaceId, Math.min(limit, REJECTIONS_PER_WORKSPACE));
  }
}

function view(r: Row): StoredEvent {
  return {
    id: r.id,
    event_type: r.event_type,
    idempotency_key: r.idempotency_key,
    quantity: Number(r.q),
    gmv_cents: Number(r.g),
    currency: r.c,
    occurred_at: iso(r.o),
    received_at: iso(r.r),
  };
}

function cursorOf(r: Row): Cursor {
  return { t: Date.parse(iso(r.o)) / 1000, e: r.event_type, k: r.idempotency_key };
}
