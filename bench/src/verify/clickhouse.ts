import type { ClickHouseClient } from '@clickhouse/client';
import { dateTimeLit, ident, lit } from '@meterd/core/clickhouse';
import type { KeyTracker } from '../load/tracker.js';

/**
 * What ClickHouse holds of one run's keys, against what the server acknowledged.
 * - lost: acknowledged keys missing from the table;
 * - stray: keys in the table the server refused (stored though it said it was not);
 * - doubled: idempotency triples stored under more than one event id (dedupe let a retry through);
 * - replayCopies: extra raw rows of one event (a spool replay), which ReplacingMergeTree collapses
 *   and FINAL hides: reported, not a failure.
 * Counts are compared with sum(n) of the key indexes too, so a loss and a stray cannot cancel out.
 */
export interface Verification {
  table: string;
  acknowledged: number;
  unansweredSent: number;
  unansweredStored: number;
  distinctInTable: number;
  rowsFinal: number;
  rawRows: number;
  lost: number;
  stray: number;
  doubled: number;
  replayCopies: number;
  ok: boolean;
  note?: string;
}

const num = (v: unknown) => Number(v);

async function one<T>(ch: ClickHouseClient, query: string): Promise<T> {
  const rs = await ch.query({ query, format: 'JSONEachRow' });
  return (await rs.json<T>())[0]!;
}

/**
 * `occurredAt` (the run's one occurred_at, when every tracked event carries it) narrows each query
 * to that second, which the time-first sort key prunes to: without it, each query scans the whole
 * table, history included (minutes and a timeout with a 50 M --preload).
 */
export async function verifyKeys(
  ch: ClickHouseClient,
  table: string,
  tracker: KeyTracker,
  occurredAt?: string,
): Promise<Verification> {
  const t = ident(table);
  const at =
    occurredAt === undefined ? '' : ` AND occurred_at = toDateTime(${dateTimeLit(Date.parse(occurredAt))}, 'UTC')`;
  const like = `${lit(`${tracker.tag}-%`)}${at}`;
  await settle(ch, `SELECT count() AS c FROM ${t} WHERE idempotency_key LIKE ${like}`);
  const offset = tracker.tag.length + 2;
  const nExpr = `toUInt64(substring(idempotency_key, ${offset}, 20))`;
  const head = await one<{ raw: string; distinct: string; s: string }>(
    ch,
    `SELECT count() AS raw, uniqExact(workspace_id, event_type, idempotency_key) AS distinct, sum(${nExpr}) AS s FROM ${t} WHERE idempotency_key LIKE ${like}`,
  );
  const raw = num(head.raw);
  const distinct = num(head.distinct);
  let keySum = num(head.s);
  let doubled = 0;
  if (raw > distinct) {
    // Copies exist: sum each triple once, and find triples stored under several event ids.
    const g = await one<{ s: string; doubled: string }>(
      ch,
      `SELECT sum(n) AS s, countIf(ids > 1) AS doubled FROM (SELECT any(${nExpr}) AS n, uniqExact(event_id) AS ids FROM ${t} ` +
        `WHERE idempotency_key LIKE ${like} GROUP BY workspace_id, event_type, idempotency_key)`,
    );
    keySum = num(g.s);
    doubled = num(g.doubled);
  }
  const fin = await one<{ c: string }>(ch, `SELECT count() AS c FROM ${t} FINAL WHERE idempotency_key LIKE ${like}`);

  const acked = tracker.acked();
  const unanswered = tracker.unanswered();
  let presentCount = 0;
  let presentSum = 0;
  for (let i = 0; i < unanswered.length; i += 2_000) {
    const chunk = unanswered.slice(i, i + 2_000);
    const r = await one<{ c: string; s: string }>(
      ch,
      `SELECT count() AS c, sum(n) AS s FROM (SELECT DISTINCT ${nExpr} AS n FROM ${t} WHERE idempotency_key IN (${chunk.map((n) => lit(tracker.key(n))).join(',')})${at})`,
    );
    presentCount += num(r.c);
    presentSum += num(r.s);
  }
  const expectedCount = acked.count + presentCount;
  const expectedSum = acked.sum + presentSum;
  let lost = Math.max(0, expectedCount - distinct);
  let stray = Math.max(0, distinct - expectedCount);
  let note: string | undefined;
  if (lost === 0 && stray === 0 && keySum !== expectedSum) {
    lost = 1;
    stray = 1;
    note =
      'counts match but the key sums differ: at least one acknowledged event is missing and one refused event is stored';
  }
  const rowsFinal = num(fin.c);
  if (rowsFinal !== distinct)
    note = `${note ? note + '; ' : ''}count() FINAL (${rowsFinal}) differs from the distinct triples (${distinct})`;
  return {
    table,
    acknowledged: acked.count,
    unansweredSent: unanswered.length,
    unansweredStored: presentCount,
    distinctInTable: distinct,
    rowsFinal,
    rawRows: raw,
    lost,
    stray,
    doubled,
    replayCopies: raw - distinct,
    ok: lost === 0 && stray === 0 && doubled === 0 && rowsFinal === distinct,
    ...(note === undefined ? {} : { note }),
  };
}

/**
 * Waits until the row count stops moving: an insert the server sent just before it stopped can
 * still be committing in ClickHouse, and counting in the middle of it would report a phantom loss.
 */
async function settle(ch: ClickHouseClient, countQuery: string, maxMs = 15_000): Promise<void> {
  const until = Date.now() + maxMs;
  let last = -1;
  for (;;) {
    const c = num((await one<{ c: string }>(ch, countQuery)).c);
    if (c === last || Date.now() > until) return;
    last = c;
    await new Promise((r) => setTimeout(r, 400));
  }
}
