import type { FastifyInstance } from 'fastify';
import { quotaKey } from '@meterd/core/contracts';
import { currencyExponents } from '@meterd/core/money';
import { PLAN_QUOTAS, periodOf } from '@meterd/core/plans';
import { hidden, type DashCtx } from './context.js';
import { scrapeIngest } from './ingest-metrics.js';
import {
  chartRange,
  granularityQuery,
  hasAnyEvent,
  readFreshness,
  readMonthTotals,
  readSeries,
  type ChartGranularity,
} from './rollups.js';

/** A section that failed is reported as such; the rest of the page still renders. */
async function part<T>(d: DashCtx, what: string, fn: () => Promise<T>): Promise<T | { unavailable: string }> {
  try {
    return await fn();
  } catch (err) {
    d.log.warn({ err }, `dashboard: ${what} failed`);
    return { unavailable: `${what} is unavailable right now` };
  }
}

function monthStart(now: number): number {
  const d = new Date(now);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** The quota counter ingest keeps (md:{ws}:q:YYYYMM): exact, and updated with every 202. */
async function eventsUsed(d: DashCtx, workspaceId: string, now: number): Promise<number> {
  return Number((await d.redis.get(quotaKey(d.cfg.REDIS_KEY_PREFIX, workspaceId, periodOf(now)))) ?? 0);
}

export function overviewRoutes(app: FastifyInstance, d: DashCtx): void {
  app.get<{ Querystring: { granularity?: ChartGranularity } }>(
    '/dashboard/api/overview',
    {
      schema: {
        ...hidden,
        querystring: granularityQuery,
      },
      preHandler: d.guard,
    },
    async (req) => {
      const ws = req.dash!.workspace;
      const g = req.query.granularity ?? 'hour';
      const now = Date.now();
      const range = chartRange(g, now);
      const [series, totals, asOf, used, ingest] = await Promise.all([
        part(d, 'the chart', () => readSeries(d.ch, ws.id, g, range.from, range.to)),
        part(d, "this month's totals", () => readMonthTotals(d.ch, ws.id, monthStart(now))),
        part(d, 'rollup freshness', () => readFreshness(d.ch, ws.id, d.cfg.AGGREGATOR_SHARDS)),
        part(d, 'the quota counter', () => eventsUsed(d, ws.id, now)),
        scrapeIngest(d.cfg.INGEST_URL.origin),
      ]);
      // ISO 4217 minor units of every currency shown (amounts are whole minor units: JPY 0, KWD 3),
      // and of USD, the contract's default currency, which an empty chart shows.
      const currencies = new Set([
        'USD',
        ...[...(Array.isArray(series) ? series : []), ...(Array.isArray(totals) ? totals : [])].map((r) => r.currency),
      ]);
      return {
        now,
        granularity: g,
        currency_exponents: currencyExponents(currencies),
        range,
        series,
        month_totals: totals,
        usage: { period: periodOf(now), used, limit: PLAN_QUOTAS[ws.plan].eventsPerPeriod, plan: ws.plan },
        freshness:
          typeof asOf === 'object' && asOf !== null
            ? asOf
            : { as_of: asOf, lag_ms: asOf === null ? null : Math.max(0, now - asOf) },
        ingest,
      };
    },
  );

  app.get<{ Querystring: { shopify?: string } }>(
    '/dashboard/api/onboarding',
    {
      schema: {
        ...hidden,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { shopify: { type: 'string', maxLength: 20 }, workspace: { type: 'string', maxLength: 100 } },
        },
      },
      preHandler: d.guard,
    },
    async (req) => {
      const ws = req.dash!.workspace;
      const now = Date.now();
      const { keys, provisions, shopify } = d.services;
      const [liveKeys, provision, shop, used, stored] = await Promise.all([
        keys.liveCount(ws.id),
        provisions.latest(ws.id, 'acp-handler'),
        shopify.latestShop(ws.id),
        eventsUsed(d, ws.id, now).catch(() => 0),
        // The quota counter restarts each month: an event stored earlier still counts as the first one.
        hasAnyEvent(d.ch, ws.id).catch(() => false),
      ]);
      const provisioned = provision?.status === 'running';
      return {
        workspace_id: ws.id,
        meter_url: d.cfg.PUBLIC_BASE_URL.toString(),
        shopify: { connected: shop !== null, shop_domain: shop, just_connected: req.query.shopify === 'connected' },
        steps: [
          { id: 'api_key', done: liveKeys > 0, live_keys: liveKeys },
          { id: 'provision', done: provisioned, provision },
          // docs/api.md (Shopify connect): after Shopify's OAuth the merchant lands here "with step 3 unlocked".
          {
            id: 'first_event',
            done: used > 0 || stored,
            unlocked: provisioned || shop !== null || req.query.shopify === 'connected',
          },
        ],
      };
    },
  );
}
