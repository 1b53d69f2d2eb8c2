import type { ClickHouseClient } from '@clickhouse/client';
import { dateTimeLit, lit } from '@meterd/core/clickhouse';
import { METER_INTEGER_PATTERN, readMeterUsage, type MeterDefinition } from '@meterd/core/meters';

const HOUR = 3_600_000;
const POLL_MS = 200;

/** One meter's rollup (readMeterUsage, hourly, per group) against the same figure from the raw events. */
export interface MeterCheck {
  slug: string;
  aggregation: MeterDefinition['aggregation'];
  groupBy: string[];
  /** Rows (hour × currency × group) the raw events give. */
  rows: number;
  ok: boolean;
  /** The first row that differs, `hour|currency|group → value` from the rollup vs the events. */
  firstDifference?: { rollup: string | undefined; events: string | undefined };
}

export interface MeterVerification {
  ok: boolean;
  meters: MeterCheck[];
  /** From the verification's start until every meter matched (or the wait ran out). */
  waitedMs: number;
  note?: string;
}

/**
 * The meters' rollups, exactly, against the raw events of the bench workspace: for each meter and
 * hour (and currency and group), the value the usage API reads (core's readMeterUsage over
 * `meter_hourly`: the shipper's partials folded for the open hour, the exact recompute once it
 * closed) must equal the value computed here from `events`. Waits (polling) until they match or
 * `waitMs` passes: the aggregator folds the last ships shortly after the spool drained.
 *
 * The reference is written independently of the aggregator's SQL and of ingest's partials (a
 * second opinion, not a copy): each (event_type, idempotency_key) once (the bench resends a key
 * with the same body, so any copy is the winner), docs/meters.md's rules spelled out directly.
 */
export async function verifyMeters(
  ch: ClickHouseClient,
  workspaceId: string,
  meters: readonly MeterDefinition[],
  fromMs: number,
  waitMs = 60_000,
): Promise<MeterVerification> {
  const started = Date.now();
  const range = { fromMs: Math.floor(fromMs / HOUR) * HOUR - HOUR, toMs: Math.ceil((Date.now() + HOUR) / HOUR) * HOUR };
  const pass = async (): Promise<MeterCheck[]> => {
    const out: MeterCheck[] = [];
    for (const m of meters) out.push(await checkMeter(ch, workspaceId, m, range));
    return out;
  };
  let checks = await pass();
  while (!checks.every((c) => c.ok) && Date.now() - started < waitMs) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    checks = await pass();
  }
  const ok = checks.every((c) => c.ok);
  return {
    ok,
    meters: checks,
    waitedMs: Date.now() - started,
    ...(ok ? {} : { note: `${checks.filter((c) => !c.ok).length} meters still differ after ${waitMs} ms` }),
  };
}

async function checkMeter(
  ch: ClickHouseClient,
  workspaceId: string,
  m: MeterDefinition,
  range: { fromMs: number; toMs: number },
): Promise<MeterCheck> {
  const rollup = (
    await readMeterUsage(ch, {
      meter: m,
      bucketId: workspaceId,
      ...range,
      window: 'hour',
      tz: 'UTC',
      groupBy: m.group_by,
      filter: {},
      closedOnly: false,
    })
  ).map((r) =>
    rowKey(
      r.startMs,
      r.currency ?? '',
      m.group_by.map((k) => r.group[k] ?? ''),
      r.value,
    ),
  );
  const events = await referenceRows(ch, workspaceId, m, range);
  const first = firstDifference(rollup, events);
  return {
    slug: m.slug,
    aggregation: m.aggregation,
    groupBy: m.group_by,
    rows: events.length,
    ok: first === undefined,
    ...(first === undefined ? {} : { firstDifference: first }),
  };
}

const rowKey = (hourMs: number, currency: string, group: readonly string[], value: string): string =>
  `${new Date(hourMs).toISOString().slice(0, 13)}h|${currency}|${group.join(',')} → ${value}`;

/** Both sides sorted; the first position where they differ (a missing row shows as undefined). */
export function firstDifference(
  rollup: readonly string[],
  events: readonly string[],
): { rollup: string | undefined; events: string | undefined } | undefined {
  const a = [...rollup].sort();
  const b = [...events].sort();
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return { rollup: a[i], events: b[i] };
  return undefined;
}

/** The meter's rows computed from `events` (see verifyMeters). */
async function referenceRows(
  ch: ClickHouseClient,
  workspaceId: string,
  m: MeterDefinition,
  range: { fromMs: number; toMs: number },
): Promise<string[]> {
  const f = m.value_field;
  const prop = (k: string): string => `pv[indexOf(pk, ${lit(k)})]`;
  const raw =
    f === null ? "''" : f === 'quantity' ? 'toString(q)' : f === 'gmv_cents' ? 'toString(gc)' : prop(f.slice(11));
  const has = f === null || !f.startsWith('properties.') ? '1' : `indexOf(pk, ${lit(f.slice(11))}) > 0`;
  const ok = `(${has} AND match(${raw}, ${lit(METER_INTEGER_PATTERN)}))`;
  const num = `toInt64OrZero(${raw})`;
  const [value, keep] = {
    count: ['toString(count())', '1'],
    sum: [`toString(sumIf(${num}, ${ok}))`, '1'],
    max: [`toString(maxIf(${num}, ${ok}))`, `countIf(${ok}) > 0`],
    latest: [
      `toString(tupleElement(maxIf(tuple(o, concat(event_type, '\\n', idempotency_key), ${num}), ${ok}), 3))`,
      `countIf(${ok}) > 0`,
    ],
    unique_count: [`toString(uniqExactIf(${raw}, ${has}))`, `countIf(${has}) > 0`],
  }[m.aggregation];
  const cur = f === 'gmv_cents' ? 'c' : "''";
  const g = m.group_by.length === 0 ? 'emptyArrayString()' : `[${m.group_by.map(prop).join(', ')}]`;
  const query = `SELECT h, cur, g, v FROM (
      SELECT toUInt32(toStartOfHour(o)) AS h, ${cur} AS cur, ${g} AS g, ${value} AS v, ${keep} AS keep
      FROM (
        SELECT event_type, idempotency_key, quantity AS q, gmv_cents AS gc, currency AS c, occurred_at AS o,
          prop_keys AS pk, prop_values AS pv
        FROM events
        WHERE workspace_id = ${lit(workspaceId)} AND event_type IN (${m.event_types.map((t) => lit(t)).join(', ')})
          AND occurred_at >= toDateTime(${dateTimeLit(range.fromMs)}, 'UTC') AND occurred_at < toDateTime(${dateTimeLit(range.toMs)}, 'UTC')
        LIMIT 1 BY event_type, idempotency_key
      )
      GROUP BY h, cur, g
    ) WHERE keep`;
  const rows = await (
    await ch.query({ query, format: 'JSONEachRow' })
  ).json<{ h: number | string; cur: string; g: string[]; v: string }>();
  return rows.map((r) => rowKey(Number(r.h) * 1000, r.cur, r.g, r.v));
}
