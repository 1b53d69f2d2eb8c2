import type { Logger } from '@meterd/core/log';
import { Loop } from '@meterd/core/loop';
import type { Gauge } from '@meterd/core/metrics';
import { redisPrimaries, type Pool, type Redis } from '@meterd/core/store';

/** How often the gauges are refreshed: a scrape interval's worth, well under any alert's `for`. */
export const OPS_GAUGES_MS = 15_000;

/**
 * State that alerts need and no event counts: webhook endpoints disabled after failing deliveries (a
 * customer silently stops receiving events), and Redis memory against its maxmemory (past it, Redis
 * refuses writes under noeviction, or evicts dedupe and quota keys under any other policy). Read on a
 * timer, so /metrics answers from memory; every replica reports the same values (use max() in rules).
 */
export class OpsGauges {
  private loop: Loop | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly redis: Redis,
    private readonly gauges: { disabledEndpoints: Gauge; redisUsed: Gauge; redisMax: Gauge },
    private readonly log: Logger,
  ) {}

  start(intervalMs = OPS_GAUGES_MS): void {
    this.loop = new Loop(() => this.refresh(), {
      intervalMs,
      onError: (err) => this.log.warn({ err }, 'refreshing the operational gauges failed'),
    }).start(0);
  }

  async stop(): Promise<void> {
    await this.loop?.stop();
  }

  async refresh(): Promise<void> {
    const { rows } = await this.pool.query<{ n: string }>(
      `SELECT count(*) AS n FROM webhook_endpoints WHERE status = 'disabled'`,
    );
    this.gauges.disabledEndpoints.set(Number(rows[0]!.n));
    // On a Redis Cluster each primary fills on its own and refuses writes to its slots once full:
    // report the primary nearest to its limit (the one server otherwise).
    const nodes = await Promise.all(
      redisPrimaries(this.redis).map(async (node) => {
        const info = await node.info('memory');
        return { used: infoField(info, 'used_memory'), max: infoField(info, 'maxmemory') };
      }),
    );
    if (nodes.length === 0) throw new Error('no Redis primary is known yet (the cluster client has no slot map)');
    const fullest = nodes.reduce((a, b) =>
      fillRatio(b) > fillRatio(a) || (fillRatio(b) === fillRatio(a) && b.used > a.used) ? b : a,
    );
    this.gauges.redisUsed.set(fullest.used);
    this.gauges.redisMax.set(fullest.max);
  }
}

/** How full a node is: 0 without a maxmemory (then the most used node is reported). */
function fillRatio(n: { used: number; max: number }): number {
  return n.max === 0 ? 0 : n.used / n.max;
}

function infoField(info: string, name: string): number {
  const m = new RegExp(`^${name}:(\\d+)\\r?$`, 'm').exec(info);
  if (m === null) throw new Error(`Redis INFO memory has no ${name}`);
  return Number(m[1]);
}
