import { quotaKey } from '@meterd/core/contracts';
import { type Logger } from '@meterd/core/log';
import { PLAN_QUOTAS, periodOf, type Plan } from '@meterd/core/plans';
import { inTransaction, type Pool, type Redis } from '@meterd/core/store';
import { emitEvent } from '../webhooks/outbox.js';
import { Watch } from '../watch.js';

export const THRESHOLDS = [80, 100] as const;

/**
 * Emits meter.quota.warning when a workspace's event counter (kept by ingest in Redis,
 * core's `quotaKey`) crosses 80 % and 100 % of its plan. The (workspace,
 * period, threshold) row inserted in the event's transaction makes each warning fire once, even
 * with several replicas checking at the same time.
 */
export class QuotaWatch extends Watch {
  constructor(
    private readonly pool: Pool,
    private readonly redis: Redis,
    private readonly prefix: string,
    log: Logger,
  ) {
    super(log, 'quota check failed');
  }

  /** One pass over every workspace with a finite plan; returns the warnings emitted. */
  protected async pass(now: number): Promise<number> {
    const period = periodOf(now);
    let emitted = 0;
    let after = '';
    for (;;) {
      const { rows } = await this.pool.query<{ id: string; plan: Plan }>(
        `SELECT id, plan FROM workspaces WHERE plan <> 'enterprise' AND id > $1 ORDER BY id LIMIT 500`,
        [after],
      );
      if (rows.length === 0) break;
      after = rows[rows.length - 1]!.id;
      // One GET per workspace, not one MGET: on a Redis Cluster each workspace's counter is in
      // its own hash slot, and MGET across slots fails (CROSSSLOT). Auto-pipelining still sends
      // a page's GETs in one write per node.
      const used = await Promise.all(rows.map((w) => this.redis.get(quotaKey(this.prefix, w.id, period))));
      for (let i = 0; i < rows.length; i++) {
        const limit = PLAN_QUOTAS[rows[i]!.plan].eventsPerPeriod;
        const n = Number(used[i] ?? 0);
        if (limit === null || n === 0) continue;
        for (const t of THRESHOLDS)
          if (n * 100 >= limit * t) emitted += await this.warn(rows[i]!.id, rows[i]!.plan, period, t, n, limit);
      }
    }
    return emitted;
  }

  private warn(
    workspaceId: string,
    plan: Plan,
    period: string,
    threshold: number,
    used: number,
    limit: number,
  ): Promise<number> {
    return inTransaction(this.pool, async (c) => {
      const { rowCount } = await c.query(
        'INSERT INTO quota_warnings (workspace_id, period, threshold) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
        [workspaceId, period, threshold],
      );
      if (rowCount === 0) return 0;
      await emitEvent(c, workspaceId, 'meter.quota.warning', {
        period,
        threshold_percent: threshold,
        events_used: used,
        events_limit: limit,
        plan,
      });
      return 1;
    });
  }
}
