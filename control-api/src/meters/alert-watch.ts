import { type Logger } from '@meterd/core/log';
import { METER_COLUMNS, meterFromRow, type MeterDefinition } from '@meterd/core/meters';
import { PLAN_QUOTAS, type Plan } from '@meterd/core/plans';
import { inTransaction, type Pool } from '@meterd/core/store';
import type { AlertPeriod, ThresholdKind } from '../services/alerts.js';
import { Watch } from '../watch.js';
import { emitEvent } from '../webhooks/outbox.js';
import type { MeterUsageReader } from './usage-reader.js';

/** Alerts read per page; each is one usage read. */
const PAGE = 200;
/** Usage reads in flight at once: bounds the load one check puts on ClickHouse. */
const READS_IN_FLIGHT = 4;

interface AlertRow {
  id: string;
  workspace_id: string;
  meter_id: string;
  threshold_kind: ThresholdKind;
  threshold: string;
  period: AlertPeriod;
  group_value: Record<string, string> | null;
  plan: Plan;
}

/** The UTC day or calendar month `now` falls in, as [start, end) epoch ms. */
export function periodBounds(period: AlertPeriod, now: number): { startMs: number; endMs: number } {
  const d = new Date(now);
  const [y, m, day] = [d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()];
  return period === 'day'
    ? { startMs: Date.UTC(y, m, day), endMs: Date.UTC(y, m, day + 1) }
    : { startMs: Date.UTC(y, m, 1), endMs: Date.UTC(y, m + 1, 1) };
}

/**
 * The threshold in the meter's unit: an absolute one as is, a quota_percent one as that percent of
 * the plan's monthly event quota; null when the plan has none (it can never be crossed).
 */
function limitOf(a: AlertRow): number | null {
  if (a.threshold_kind === 'absolute') return Number(a.threshold);
  const quota = PLAN_QUOTAS[a.plan].eventsPerPeriod;
  return quota === null ? null : (quota * Number(a.threshold)) / 100;
}

/**
 * Fires `meter.threshold.reached` when a live alert's meter reaches its threshold in the current
 * UTC day or month (docs/meters.md). The firing row (alert, period start, threshold) is inserted in
 * the event's transaction and its primary key refuses a second one, so each alert fires once per
 * period and threshold however many replicas check at the same time; the value is compared with
 * the threshold in Postgres `numeric`, exactly, since a meter's value may pass 2^53.
 */
export class AlertWatch extends Watch {
  constructor(
    private readonly pool: Pool,
    private readonly read: MeterUsageReader,
    log: Logger,
  ) {
    super(log, 'meter alert check failed');
  }

  /** One pass over every live alert; returns the alerts that fired. */
  protected async pass(now: number): Promise<number> {
    let fired = 0;
    let after = '';
    for (;;) {
      const { rows } = await this.pool.query<AlertRow>(
        `SELECT a.id, a.workspace_id, a.meter_id, a.threshold_kind, a.threshold::text AS threshold, a.period,
                a.group_value, w.plan
           FROM meter_alerts a
           JOIN meters m ON m.id = a.meter_id AND m.deleted_at IS NULL
           JOIN workspaces w ON w.id = a.workspace_id AND w.deleted_at IS NULL
          WHERE a.deleted_at IS NULL AND a.id > $1
          ORDER BY a.id LIMIT $2`,
        [after, PAGE],
      );
      if (rows.length === 0) break;
      after = rows[rows.length - 1]!.id;
      const meters = await this.meters([...new Set(rows.map((r) => r.meter_id))]);
      for (let i = 0; i < rows.length; i += READS_IN_FLIGHT) {
        const done = await Promise.all(
          rows.slice(i, i + READS_IN_FLIGHT).map((a) => {
            // Gone between the two reads (its workspace purged): nothing to check any more.
            const meter = meters.get(a.meter_id);
            return meter === undefined ? Promise.resolve(false) : this.evaluate(a, meter, now);
          }),
        );
        fired += done.filter(Boolean).length;
      }
    }
    return fired;
  }

  private async meters(ids: string[]): Promise<Map<string, MeterDefinition>> {
    const { rows } = await this.pool.query<Parameters<typeof meterFromRow>[0]>(
      `SELECT ${METER_COLUMNS} FROM meters WHERE id = ANY ($1)`,
      [ids],
    );
    return new Map(rows.map((r) => [r.id, meterFromRow(r)]));
  }

  /** Whether this alert fired now. A failed read skips it until the next check, logged. */
  private async evaluate(a: AlertRow, meter: MeterDefinition, now: number): Promise<boolean> {
    const limit = limitOf(a);
    if (limit === null) return false;
    const { startMs, endMs } = periodBounds(a.period, now);
    const filter = a.group_value ?? {};
    let value: string;
    try {
      const rows = await this.read({
        meter,
        bucketId: a.workspace_id,
        fromMs: startMs,
        toMs: endMs,
        window: a.period,
        tz: 'UTC',
        groupBy: Object.keys(filter),
        filter,
        closedOnly: false,
      });
      // Grouped by exactly the filtered keys, the period has one row, or one per currency for a
      // gmv_cents meter (amounts in different currencies are never added): the alert watches each
      // currency's total and fires on the first to reach the threshold (docs/meters.md).
      value = '0';
      for (const r of rows) if (r.startMs === startMs && BigInt(r.value) > BigInt(value)) value = r.value;
    } catch (err) {
      this.log.warn({ err, alert: a.id, meter: meter.slug }, 'reading a meter for its alert failed');
      return false;
    }
    // Rounding to a double is monotonic, so this never skips a value the exact comparison would fire.
    if (Number(value) < limit) return false;
    return inTransaction(this.pool, async (c) => {
      const { rowCount } = await c.query(
        `INSERT INTO meter_alert_firings (alert_id, period_start, threshold, value)
         SELECT $1, $2, $3, $4 WHERE $4::numeric >= $5::numeric
         ON CONFLICT DO NOTHING`,
        [a.id, new Date(startMs), a.threshold, value, limit],
      );
      if (rowCount === 0) return false;
      await emitEvent(c, a.workspace_id, 'meter.threshold.reached', {
        alert: { id: a.id, threshold_kind: a.threshold_kind, threshold: Number(a.threshold), period: a.period },
        meter: { id: meter.id, slug: meter.slug },
        period: { start: new Date(startMs).toISOString(), end: new Date(endMs).toISOString() },
        threshold: limit,
        value,
        group: a.group_value,
      });
      return true;
    });
  }
}
