import type { ClickHouseClient } from '@clickhouse/client';
import { billedMeters, readMeterUsage, stripeBillingProblem, type MeterDefinition } from '@meterd/core/meters';
import type { Pool } from '@meterd/core/store';
import type { WindowSize } from './source.js';

/** One closed window of one group of a billed meter (and currency, for a meter over gmv_cents). */
export interface MeterTotal {
  meter: MeterDefinition;
  workspace_id: string;
  /** ISO 4217 code for a meter over gmv_cents, '' otherwise. */
  currency: string;
  window_start: number;
  /** The group_by properties' values, in group_by order ('' where an event lacked one). */
  group: string[];
  total: bigint;
}

export interface MeterTotals {
  totals: MeterTotal[];
  /** Meters with a stripe_event_name that Stripe cannot bill exactly (defined before the check): not read. */
  refused: Array<{ meter: MeterDefinition; reason: string }>;
}

/**
 * Where billing-sync reads the user-defined meters it bills: the live meters with a
 * stripe_event_name, of the given workspaces, per closed window and group. The seam beside
 * UsageSource: the window closing rule (the source's as-of) stays the planner's.
 */
export interface MeterUsageSource {
  totals(fromS: number, toS: number, window: WindowSize, workspaces: ReadonlySet<string>): Promise<MeterTotals>;
}

/** Meter reads in flight at once: each is one ClickHouse query over the meter's closed hours. */
const PARALLEL_READS = 4;

/**
 * Reads the definitions from Postgres and each meter's closed hours from `meter_hourly` through
 * core's readMeterUsage (closedOnly: only hours every aggregator shard has recomputed exactly, on
 * top of the planner's own closed mark). A pass costs one query per billed meter over the look-back.
 */
export class ClickHouseMeterUsage implements MeterUsageSource {
  constructor(
    private readonly pool: Pool,
    private readonly ch: ClickHouseClient,
  ) {}

  async totals(fromS: number, toS: number, window: WindowSize, workspaces: ReadonlySet<string>): Promise<MeterTotals> {
    const out: MeterTotals = { totals: [], refused: [] };
    const todo: MeterDefinition[] = [];
    for (const meter of await billedMeters(this.pool)) {
      if (!workspaces.has(meter.workspace_id)) continue;
      const problem = stripeBillingProblem(meter);
      if (problem === undefined) todo.push(meter);
      else out.refused.push({ meter, reason: problem.message });
    }
    const lane = async (): Promise<void> => {
      for (let meter = todo.shift(); meter !== undefined; meter = todo.shift()) {
        const rows = await readMeterUsage(this.ch, {
          meter,
          bucketId: meter.workspace_id,
          fromMs: fromS * 1000,
          toMs: toS * 1000,
          window,
          tz: 'UTC',
          groupBy: meter.group_by,
          filter: {},
          closedOnly: true,
        });
        for (const r of rows)
          out.totals.push({
            meter,
            workspace_id: meter.workspace_id,
            currency: r.currency ?? '',
            window_start: r.startMs / 1000,
            group: meter.group_by.map((k) => r.group[k] ?? ''),
            total: BigInt(r.value),
          });
      }
    };
    await Promise.all(Array.from({ length: PARALLEL_READS }, lane));
    return out;
  }
}
