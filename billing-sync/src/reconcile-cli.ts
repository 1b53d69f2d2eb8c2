#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { PG_TABLES } from '@meterd/core/contracts';
import { createPool } from '@meterd/core/store';
import { loadBillingConfig } from './config.js';
import { retryRejected } from './ledger.js';
import { reconcile, reconcileLedger } from './reconcile.js';
import { createStripe } from './stripe/client.js';
import { createUsageSource } from './usage/select.js';
import { lastClosedEnd, WINDOW_SECONDS } from './usage/source.js';

/**
 * `node billing-sync/dist/src/reconcile-cli.js --from 2026-04-01T00:00:00Z --to 2026-05-01T00:00:00Z [--workspace ws_…]`
 * Three checks over the period, each printed line by line:
 * - MISMATCH: Stripe's meter event summaries against the ClickHouse totals, per customer × meter
 *   (money meters per currency);
 * - DRIFT: per UTC month, the ledger's sent rows against Stripe's summaries, per customer × meter;
 * - UNBILLABLE / REJECTED: ledger rows Stripe never billed, with their reason.
 * Exits 1 when there is any mismatch or drift, 2 on a usage or configuration error.
 * Defaults: from the start of the current month to the end of the last closed window.
 * `--retry-rejected`: the operator has fixed the causes of rejected and failed rows (e.g. an invalid value):
 * mark them all `retried`, so billing-sync sends their amounts again, then reconcile.
 */
async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      workspace: { type: 'string' },
      'retry-rejected': { type: 'boolean' },
    },
  });
  const cfg = loadBillingConfig();
  if (cfg.STRIPE_SECRET_KEY === '') {
    console.error('reconcile: STRIPE_SECRET_KEY is required');
    return 2;
  }
  const size = WINDOW_SECONDS[cfg.BILLING_WINDOW];
  const now = new Date();
  const from = values.from
    ? Date.parse(values.from) / 1000
    : Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) / 1000;
  const explicitTo = values.to ? Date.parse(values.to) / 1000 : undefined;
  if (
    !Number.isInteger(from) ||
    (explicitTo !== undefined && !Number.isInteger(explicitTo)) ||
    from % size !== 0 ||
    (explicitTo ?? 0) % size !== 0
  ) {
    console.error(`reconcile: --from and --to must be ${cfg.BILLING_WINDOW}-aligned UTC instants with from < to`);
    return 2;
  }
  const pool = createPool(cfg.DATABASE_URL, 2, { statementTimeoutMs: cfg.DATABASE_STATEMENT_TIMEOUT_MS });
  const ch = clickHouseFromConfig(cfg);
  try {
    const source = await createUsageSource(cfg, ch);
    // By default up to the last window billing itself would have closed (same as-of rule as the planner).
    const nowS = Math.floor(now.getTime() / 1000);
    const asOf = (await source.asOf(nowS)) ?? 0;
    const to = explicitTo ?? lastClosedEnd(asOf, nowS, cfg.BILLING_CLOSE_DELAY_SECONDS, size);
    if (to <= from) {
      console.error(
        `reconcile: nothing to compare: the period ends (${new Date(to * 1000).toISOString()}) before it starts`,
      );
      return 2;
    }
    if (values['retry-rejected'] === true)
      console.log(
        `RETRIED ${await retryRejected(pool, 'all')} rejected or failed row(s): billing-sync plans their amounts again on its next pass`,
      );
    const { rows } = await pool.query<{ id: string; stripe_customer_id: string }>(
      `SELECT id, stripe_customer_id FROM ${PG_TABLES.workspaces} WHERE stripe_customer_id IS NOT NULL AND ($1::text IS NULL OR id = $1)`,
      [values.workspace ?? null],
    );
    const stripe = createStripe(cfg);
    const report = await reconcile(
      stripe,
      source,
      cfg,
      new Map(rows.map((r) => [r.id, r.stripe_customer_id])),
      from,
      to,
    );
    const iso = (s: number): string => new Date(s * 1000).toISOString();
    const period = `${iso(from)}..${iso(to)}`;
    for (const d of report.differences) {
      console.log(
        `MISMATCH ${d.workspace_id} ${d.stripe_customer_id} ${d.event_name} ${period} stripe=${d.stripe} clickhouse=${d.clickhouse} diff=${d.stripe - d.clickhouse}`,
      );
    }
    console.log(
      `compared ${report.compared} customer×meter totals for ${period}: ${report.differences.length} difference(s)`,
    );
    const ledger = await reconcileLedger(stripe, pool, cfg, from, to, values.workspace);
    for (const d of ledger.drifts) {
      console.log(
        `DRIFT ${d.stripe_customer_id} ${d.event_name} ${iso(d.start_time)}..${iso(d.end_time)} stripe=${d.stripe} ledger=${d.ledger} diff=${d.stripe - d.ledger}`,
      );
    }
    for (const h of ledger.held)
      console.log(
        `${h.status.toUpperCase()} ${h.workspace_id} ${h.event_name} ${iso(h.window_start)} value=${h.value} ${h.identifier}: ${h.reason}`,
      );
    console.log(
      `ledger against Stripe over ${ledger.periods} month(s): ${ledger.compared} customer×meter total(s), ${ledger.drifts.length} drift(s); ${ledger.held.length} row(s) unbillable, rejected or failed`,
    );
    return report.differences.length === 0 && ledger.drifts.length === 0 ? 0 : 1;
  } finally {
    await ch.close();
    await pool.end();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`reconcile: ${(err as Error).message}`);
    process.exit(2);
  },
);
