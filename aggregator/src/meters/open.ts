import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError, lit, toClickHouseDateTime } from '@meterd/core/clickhouse';
import { CH_TABLES } from '@meterd/core/contracts';
import { byteCompare } from '@meterd/core/meters';
import { timeRangesSql, windowsIn, workspacesIn } from '../rollups/sql.js';
import type { MeterWindow } from './recompute.js';

/** A new batch record of an open hour: the batch and the attempt it records. */
export interface OpenBatch extends MeterWindow {
  batchId: string;
  attempt: number;
}

/** One key of an hour (meter × currency × group values), summed over the batches folded in. */
interface Acc {
  meterId: string;
  currency: string;
  groupValues: string[];
  events: bigint;
  valuesN: bigint;
  valueSum: bigint;
  valueMax: bigint;
  /** (latest_at seconds, latest_key, latest_value) of the greatest usable value; null: none yet. */
  latest: [number, string, bigint] | null;
  uniq: Set<string>;
  skipped: bigint;
}

/** An open hour as this process folded it: which attempt of which batch is in it, and the sums. */
interface HourFold {
  batches: Map<string, number>;
  keys: Map<string, Acc>;
}

interface PartialRow {
  workspace_id: string;
  w: number | string;
  meter_id: string;
  batch_id: string;
  attempt: number | string;
  currency: string;
  group_values: string[];
  events: string;
  values_n: string;
  value_sum: string;
  value_max: string;
  la: number | string;
  latest_key: string;
  latest_value: string;
  uniq_values: string[];
  skipped: string;
}

const hourKey = (w: MeterWindow): string => `${w.workspaceId}|${w.start}`;
const rowKey = (r: PartialRow): string => JSON.stringify([r.meter_id, r.currency, r.group_values]);

/**
 * The open hours of the meters, folded incrementally: an hour this process already folded takes only
 * the partials of its new batches (those of this cycle's new records), added to the sums it keeps,
 * and its touched keys are written; an hour it has not folded yet (a new hour, a shard just taken, a
 * process start, a cycle that failed) is folded from all its partials once, as before. So a cycle's
 * meter work follows the batches shipped since the last cycle, not the batches of the hour so far:
 * with the bench's 10 meters the whole-hour fold read every partial's distinct values again each
 * cycle (bench/micro/agg-meters.ts). Exact like the whole fold, which stays the rule: an hour is the
 * sum of its batches' latest attempts. A batch's partials are written before its record, so a whole
 * fold may take a batch whose record comes later: the attempt folded is kept per batch, and a record
 * of that attempt adds nothing. A record of another attempt (a replay) folds the hour whole again.
 * The state is only an optimisation of this process: `clear()` after a failed cycle or a change of
 * the shards held, `forget()` when an hour closes (the exact recompute takes over).
 */
export class OpenMeterFolds {
  private readonly hours = new Map<string, HourFold>();

  clear(): void {
    this.hours.clear();
  }

  forget(windows: readonly MeterWindow[]): void {
    for (const w of windows) this.hours.delete(hourKey(w));
  }

  /** Hours folded and kept (tests, metrics). */
  get size(): number {
    return this.hours.size;
  }

  /** Brings these open hours up to date with `records` (this cycle's new records of them) and writes them with `version`. */
  async fold(
    ch: ClickHouseClient,
    hours: readonly MeterWindow[],
    records: readonly OpenBatch[],
    version: bigint,
  ): Promise<void> {
    if (hours.length === 0) return;
    const wanted = new Set(hours.map(hourKey));
    const newBatches = new Map<string, Map<string, number>>();
    for (const r of records) {
      const k = hourKey(r);
      if (!wanted.has(k)) continue;
      let m = newBatches.get(k);
      if (m === undefined) newBatches.set(k, (m = new Map()));
      m.set(r.batchId, Math.max(m.get(r.batchId) ?? -1, r.attempt));
    }
    const whole: MeterWindow[] = [];
    const partly: { hour: MeterWindow; batches: string[] }[] = [];
    for (const h of hours) {
      const k = hourKey(h);
      const f = this.hours.get(k);
      const fresh = newBatches.get(k) ?? new Map<string, number>();
      if (f === undefined || [...fresh].some(([b, a]) => f.batches.has(b) && f.batches.get(b) !== a)) {
        this.hours.delete(k);
        whole.push(h);
        continue;
      }
      const todo = [...fresh].filter(([b]) => !f.batches.has(b)).map(([b]) => b);
      if (todo.length > 0) partly.push({ hour: h, batches: todo });
    }
    const rows: Record<string, unknown>[] = [];
    if (whole.length > 0) {
      const folds = new Map<string, HourFold>(whole.map((h) => [hourKey(h), { batches: new Map(), keys: new Map() }]));
      for (const p of await readPartials(ch, whole, undefined)) {
        const f = folds.get(hourOf(p))!;
        f.batches.set(p.batch_id, Math.max(f.batches.get(p.batch_id) ?? -1, Number(p.attempt)));
        add(f, p);
      }
      // Keys written before whose batches no longer hold them (a replay's partials differ) read 0.
      for (const z of await currentKeys(ch, whole)) {
        const f = folds.get(hourOf(z))!;
        const k = JSON.stringify([z.meter_id, z.currency, z.group_values]);
        if (!f.keys.has(k)) f.keys.set(k, emptyAcc(z.meter_id, z.currency, z.group_values));
      }
      for (const [k, f] of folds) {
        // A batch recorded without a partial in the hour (no event of its meters) is in it as well.
        for (const [b, a] of newBatches.get(k) ?? []) if (!f.batches.has(b)) f.batches.set(b, a);
        for (const acc of f.keys.values()) rows.push(outputRow(k, acc, version));
        this.hours.set(k, f);
      }
    }
    if (partly.length > 0) {
      const ids = new Set(partly.flatMap((p) => p.batches));
      const read = await readPartials(
        ch,
        partly.map((x) => x.hour),
        ids,
      );
      const touched = new Map<string, Set<string>>();
      const attempts = new Map<string, number>();
      for (const p of read) {
        const k = hourOf(p);
        // An id read for another hour of this fold may also have a (not new) batch here: skip it.
        if (!(newBatches.get(k)?.has(p.batch_id) ?? false)) continue;
        const f = this.hours.get(k)!;
        if (f.batches.has(p.batch_id)) continue;
        const ak = `${k}|${p.batch_id}`;
        attempts.set(ak, Math.max(attempts.get(ak) ?? -1, Number(p.attempt)));
        let t = touched.get(k);
        if (t === undefined) touched.set(k, (t = new Set()));
        t.add(add(f, p));
      }
      for (const { hour, batches } of partly) {
        const k = hourKey(hour);
        const f = this.hours.get(k)!;
        for (const b of batches) f.batches.set(b, attempts.get(`${k}|${b}`) ?? newBatches.get(k)!.get(b)!);
        for (const key of touched.get(k) ?? []) rows.push(outputRow(k, f.keys.get(key)!, version));
      }
    }
    if (rows.length === 0) return;
    try {
      await ch.insert({ table: CH_TABLES.meterHourly, values: rows, format: 'JSONEachRow' });
    } catch (err) {
      // The sums kept may now be ahead of the table: the next cycle folds every hour whole again.
      this.hours.clear();
      throw new ClickHouseQueryError(`writing ${rows.length} rows of ${hours.length} open meter hours`, err);
    }
  }
}

const hourOf = (r: { workspace_id: string; w: number | string }): string => `${r.workspace_id}|${Number(r.w) * 1000}`;

function emptyAcc(meterId: string, currency: string, groupValues: string[]): Acc {
  return {
    meterId,
    currency,
    groupValues,
    events: 0n,
    valuesN: 0n,
    valueSum: 0n,
    valueMax: 0n,
    latest: null,
    uniq: new Set(),
    skipped: 0n,
  };
}

/** Adds one partial row to its hour's key, as writeSql's aggregation does (sum, maxIf, maxIf of the tuple, union). */
function add(f: HourFold, p: PartialRow): string {
  const k = rowKey(p);
  let acc = f.keys.get(k);
  if (acc === undefined) f.keys.set(k, (acc = emptyAcc(p.meter_id, p.currency, p.group_values)));
  // ClickHouse's sum of UInt64 / Int64 wraps at 64 bits: so do these.
  acc.events = BigInt.asUintN(64, acc.events + BigInt(p.events));
  const vn = BigInt(p.values_n);
  acc.valueSum = BigInt.asIntN(64, acc.valueSum + BigInt(p.value_sum));
  acc.skipped = BigInt.asUintN(64, acc.skipped + BigInt(p.skipped));
  if (vn > 0n) {
    const had = acc.latest !== null;
    acc.valuesN = BigInt.asUintN(64, acc.valuesN + vn);
    const max = BigInt(p.value_max);
    if (!had || max > acc.valueMax) acc.valueMax = max;
    const l: [number, string, bigint] = [Number(p.la), p.latest_key, BigInt(p.latest_value)];
    const c = acc.latest;
    if (
      c === null ||
      l[0] > c[0] ||
      (l[0] === c[0] && (byteCompare(l[1], c[1]) > 0 || (byteCompare(l[1], c[1]) === 0 && l[2] > c[2])))
    )
      acc.latest = l;
  }
  for (const u of p.uniq_values) acc.uniq.add(u);
  return k;
}

function outputRow(hour: string, a: Acc, version: bigint): Record<string, unknown> {
  const sep = hour.lastIndexOf('|');
  const now = Date.now();
  return {
    workspace_id: hour.slice(0, sep),
    meter_id: a.meterId,
    window_start: toClickHouseDateTime(Number(hour.slice(sep + 1))),
    currency: a.currency,
    group_values: a.groupValues,
    events: a.events.toString(),
    values_n: a.valuesN.toString(),
    value_sum: a.valueSum.toString(),
    value_max: a.valueMax.toString(),
    latest_at: toClickHouseDateTime((a.latest?.[0] ?? 0) * 1000),
    latest_key: a.latest?.[1] ?? '',
    latest_value: (a.latest?.[2] ?? 0n).toString(),
    uniq_values: [...a.uniq],
    skipped: a.skipped.toString(),
    version: version.toString(),
    computed_at: toClickHouseDateTime(now),
  };
}

/**
 * The partials of these hours (of these batches only, when given), of each batch × key its latest
 * attempt (the table's version; one row of equal copies). Deduplicated here rather than with FINAL,
 * which would read every column of the hours' rows to merge them: `batch_id IN` goes to PREWHERE.
 */
async function readPartials(
  ch: ClickHouseClient,
  hours: readonly MeterWindow[],
  batches: ReadonlySet<string> | undefined,
): Promise<PartialRow[]> {
  const only = batches === undefined ? '' : ` AND batch_id IN (${[...batches].map((b) => lit(b)).join(', ')})`;
  const query = `SELECT workspace_id, toUInt32(window_start) AS w, meter_id, batch_id, attempt, currency, group_values,
      events, values_n, value_sum, value_max, toUInt32(latest_at) AS la, latest_key, latest_value, uniq_values, skipped
    FROM ${CH_TABLES.meterBatches}
    WHERE ${workspacesIn(hours.map((h) => h.workspaceId))} AND ${timeRangesSql('window_start', 'hour', hours)}
      AND ${windowsIn('window_start', hours)}${only}`;
  let rows: PartialRow[];
  try {
    rows = await (await ch.query({ query, format: 'JSONEachRow' })).json<PartialRow>();
  } catch (err) {
    throw new ClickHouseQueryError(`reading the meter partials of ${hours.length} open hours`, err);
  }
  const latest = new Map<string, PartialRow>();
  for (const r of rows) {
    const k = `${hourOf(r)}|${r.batch_id}|${rowKey(r)}`;
    const had = latest.get(k);
    if (had === undefined || Number(r.attempt) > Number(had.attempt)) latest.set(k, r);
  }
  return [...latest.values()];
}

/** The keys the table holds for these hours. */
async function currentKeys(
  ch: ClickHouseClient,
  hours: readonly MeterWindow[],
): Promise<{ workspace_id: string; w: number | string; meter_id: string; currency: string; group_values: string[] }[]> {
  const query = `SELECT DISTINCT workspace_id, toUInt32(window_start) AS w, meter_id, currency, group_values
    FROM ${CH_TABLES.meterHourly}
    WHERE ${workspacesIn(hours.map((h) => h.workspaceId))} AND ${timeRangesSql('window_start', 'hour', hours)}
      AND ${windowsIn('window_start', hours)}`;
  try {
    return await (await ch.query({ query, format: 'JSONEachRow' })).json();
  } catch (err) {
    throw new ClickHouseQueryError(`reading the meter keys of ${hours.length} open hours`, err);
  }
}
