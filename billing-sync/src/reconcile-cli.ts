#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { createClickHouse, createPool } from '@meterd/core';
import { loadBillingConfig } from './config.js';
import { reconcile } from './reconcile.js';
import { createStripe } from './stripe/client.js';
import { ClickHouseRawUsage } from './usage/clickhouse-raw.js';
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
  const to = values.to ? Date.parse(values.to) / 1000 : Math.floor((now.getTime() / 1000 - cfg.BILLING_CLOSE_DELAY_SECONDS) / size) * size;
  if (!Number.isInteger(from) || !Number.isInteger(to) || from % size !== 0 || to % size !== 0 || to <= from) {
    console.error(`reconcile: --from and --to must be ${cfg.BILLING_WINDOW}-aligned UTC instants with from < to`);
    return 2;
  }
  const pool = createPool(cfg.DATABASE_URL, 2);
  const ch = createClickHouse({ url: cfg.CLICKHOUSE_URL, database: cfg.CLICKHOUSE_DATABASE, user: cfg.CLICKHOUSE_USER, password: cfg.CLICKHOUSE_PASSWORD });
  try {
    const { rows } = await pool.query<{ id: string; stripe_customer_id: string }>(
      `SELECT id, stripe_customer_id FROM workspaces WHERE stripe_customer_id IS NOT NULL AND ($1::text IS NULL OR id = $1)`, [values.workspace ?? null]);
    const report = await reconcile(createStripe(cfg), new ClickHouseRawUsage(ch), cfg, new Map(rows.map((r) => [r.id, r.stripe_customer_id])), from, to);
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
