#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { createClickHouse, createPool } from '@meterd/core';
import { loadBillingConfig } from './config.js';
import { reconcile } from './reconcile.js';
import { createStripe } from './stripe/client.js';
import { createUsageSource } from './usage/select.js';
import { WINDOW_SECONDS } from './usage/source.js';

/**
 * `node billing-sync/dist/src/reconcile-cli.js --from 2026-04-01T00:00:00Z --to 2026-05-01T00:00:00Z [--workspace ws_…]`
 * Compares Stripe's meter event summaries with ClickHouse totals per customer and meter over the
 * period, prints each difference, and exits 1 when there is any (2 on a usage error).
 * Defaults: from the start of the current month to the end of the last closed window.
 */
async function main(): Promise<number> {
  const { values } = parseArgs({ options: { from: { type: 'string' }, to: { type: 'string' }, workspace: { type: 'string' } } });
  const cfg = loadBillingConfig();
  if (cfg.STRIPE_SECRET_KEY === '') { console.error('reconcile: STRIPE_SECRET_KEY is required'); return 2; }
  const size = WINDOW_SECONDS[cfg.BILLING_WINDOW];
  const now = new Date();
  const from = values.from ? Date.parse(values.from) / 1000 : Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) / 1000;
  const explicitTo = values.to ? Date.parse(values.to) / 1000 : undefined;
  if (!Number.isInteger(from) || (explicitTo !== undefined && !Number.isInteger(explicitTo)) || from % size !== 0 || (explicitTo ?? 0) % size !== 0) {
    console.error(`reconcile: --from and --to must be ${cfg.BILLING_WINDOW}-aligned UTC instants with from < to`);
    return 2;
  }
  const pool = createPool(cfg.DATABASE_URL, 2);
  const ch = createClickHouse({ url: cfg.CLICKHOUSE_URL, database: cfg.CLICKHOUSE_DATABASE, user: cfg.CLICKHOUSE_USER, password: cfg.CLICKHOUSE_PASSWORD });
  try {
    const source = await createUsageSource(cfg, ch);
    // By default up to the last window billing itself would have closed (same as-of rule as the planner).
    const nowS = Math.floor(now.getTime() / 1000);
    const asOf = (await source.asOf(nowS)) ?? 0;
    const to = explicitTo ?? Math.floor((Math.min(nowS, asOf) - cfg.BILLING_CLOSE_DELAY_SECONDS) / size) * size;
    if (to <= from) {
      console.error(`reconcile: nothing to compare: the period ends (${new Date(to * 1000).toISOString()}) before it starts`);
      return 2;
    }
    const { rows } = await pool.query<{ id: string; stripe_customer_id: string }>(
      `SELECT id, stripe_customer_id FROM workspaces WHERE stripe_customer_id IS NOT NULL AND ($1::text IS NULL OR id = $1)`, [values.workspace ?? null]);
    const report = await reconcile(createStripe(cfg), source, cfg, new Map(rows.map((r) => [r.id, r.stripe_customer_id])), from, to);
    const period = `${new Date(from * 1000).toISOString()}..${new Date(to * 1000).toISOString()}`;
    for (const d of report.differences) {
      console.log(`MISMATCH ${d.workspace_id} ${d.stripe_customer_id} ${d.event_type} ${period} stripe=${d.stripe} clickhouse=${d.clickhouse} diff=${d.stripe - d.clickhouse}`);
    }
    console.log(`compared ${report.compared} customer×meter totals for ${period}: ${report.differences.length} difference(s)`);
    return report.differences.length === 0 ? 0 : 1;
  } finally {
    await ch.close();
    await pool.end();
  }
}

main().then((code) => process.exit(code), (err) => { console.error(`reconcile: ${(err as Error).message}`); process.exit(2); });
