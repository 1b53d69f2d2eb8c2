import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { meterBySlug, readMeterUsage } from '@meterd/core/meters';
import type { TestStores } from '@meterd/core/testing';
import { NO_GROUP_VALUE } from '../src/meters.js';
import {
  billingEnv,
  hourFloor,
  spawnBilling,
  startAggregator,
  startIngest,
  stripeGroupUsage,
  waitFor,
  withStoresAndStripe,
  type LocalStripe,
} from './helpers.js';

/**
 * User-defined meters billed end to end, every service its own process: events with properties go
 * over HTTP into ingest (a retry inside a batch, a replayed batch), the aggregator closes their
 * hours in meter_hourly, billing-sync pushes each billed meter per closed hour and group to
 * stripe-local through the stripe SDK, with the group as the meter event's dimensions. Stripe's
 * usage per hour and group (its Meter Usage Analytics read) equals a reference computed here from
 * the distinct events; a late event corrects its closed hour with exactly one new revision of its
 * group only; a replayed event changes nothing; a max meter with a stripe_event_name is not billed.
 */
let stores: TestStores;
let local: LocalStripe;
// Live-mode rate limits: the test polls Stripe's usage while billing-sync pushes.
withStoresAndStripe('billing_meters_e2e', { STRIPE_LOCAL_RATE_TEST_MODE: '0' }, (s, l) => {
  stores = s;
  local = l;
});

const rfc3339 = (s: number): string => new Date(s * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');

interface Sent {
  idempotency_key: string;
  occurred_at: string;
  properties: Record<string, string>;
}

test('ingest → aggregator → billing-sync → stripe-local: each meter group billed exactly once, late data one correction', async () => {
  const spool = mkdtempSync(join(tmpdir(), 'meterd-meterbill-'));
  const closers: Array<() => Promise<void>> = [];
  try {
    const { workspace, token } = await stores.workspace('enterprise');
    const customer = await local.stripe.customers.create({ email: 'meters@example.com' });
    await stores.pool.query('UPDATE workspaces SET stripe_customer_id = $2 WHERE id = $1', [workspace.id, customer.id]);
    const meters: [string, string, string | null, string[], string][] = [
      ['tokens', 'sum', 'properties.tokens', ['model', 'region'], 'llm.tokens'],
      ['calls', 'count', null, ['model'], 'llm.calls'],
      // Defined before the control API refused it: billing-sync must not push it.
      ['peak', 'max', 'properties.tokens', [], 'llm.peak'],
    ];
    for (const [slug, aggregation, valueField, groupBy, eventName] of meters)
      await stores.pool.query(
        `INSERT INTO meters (id, workspace_id, slug, event_types, aggregation, value_field, group_by, stripe_event_name, backfill_state)
         VALUES ($1, $2, $3, '{api.call}', $4, $5, $6, $7, 'done')`,
        [`mtr_bill_${slug}`, workspace.id, slug, aggregation, valueField, groupBy, eventName],
      );
    const shards = { AGGREGATOR_SHARDS: '2' };
    const ingest = await startIngest({
      ...stores.env,
      INGEST_THREADS: '1',
      SPOOL_DIR: spool,
      SHIP_INTERVAL_MS: '100',
    });
    closers.push(() => ingest.close());
    const aggregator = await startAggregator({
      ...stores.env,
      ...shards,
      AGGREGATOR_POLL_MS: '100',
      AGGREGATOR_CLOSE_AFTER_SECONDS: '60',
    });
    closers.push(() => aggregator.close());

    const send = async (batch: Sent[]): Promise<Array<Record<string, unknown>>> => {
      const r = await fetch(`${ingest.url}/api/v1/meter/batch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          events: batch.map((e) => ({ ...e, workspace_id: workspace.id, event_type: 'api.call', quantity: 1 })),
        }),
      });
      assert.equal(r.status, 202, await r.clone().text());
      return ((await r.json()) as { results: Array<Record<string, unknown>> }).results;
    };
    // Two hours that ended more than the close delay ago: both close at once.
    const h1 = hourFloor(Math.floor(Date.now() / 1000)) - 3 * 3600;
    const models = ['gpt-4', 'claude', 'ünï "q",x'];
    const events: Sent[] = [];
    for (let i = 0; i < 48; i++)
      events.push({
        idempotency_key: `call-${i}`,
        occurred_at: rfc3339(h1 + (i % 2) * 3600 + i * 60),
        properties: {
          model: models[i % 3]!,
          ...(i % 4 === 0 ? {} : { region: i % 2 === 0 ? 'eu' : 'us' }),
          tokens: String(100 + i * 7),
        },
      });
    await send([...events.slice(0, 30), events[3]!]);
    await send(events.slice(30));
    const replay = await send(events.slice(30));
    assert.ok(replay.every((r) => r.duplicate === true || r.status === 'duplicate'));

    const reference = (list: Sent[]): { tokens: Map<string, number>; calls: Map<string, number> } => {
      const tokens = new Map<string, number>();
      const calls = new Map<string, number>();
      for (const e of list) {
        const h = hourFloor(Date.parse(e.occurred_at) / 1000);
        const tk = `${h}|${e.properties.model}|${e.properties.region ?? NO_GROUP_VALUE}`;
        tokens.set(tk, (tokens.get(tk) ?? 0) + Number(e.properties.tokens));
        const ck = `${h}|${e.properties.model}`;
        calls.set(ck, (calls.get(ck) ?? 0) + 1);
      }
      return { tokens, calls };
    };
    const atStripe = async (): Promise<{ tokens: Map<string, number>; calls: Map<string, number> }> => ({
      tokens: await stripeGroupUsage(local.stripe, 'llm.tokens', customer.id, h1, h1 + 7200, ['model', 'region']),
      calls: await stripeGroupUsage(local.stripe, 'llm.calls', customer.id, h1, h1 + 7200, ['model']),
    });
    const equal = (a: Map<string, number>, b: Map<string, number>): boolean =>
      a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);

    // Billing starts once both hours are closed with every event in: its first pushes are then final.
    const tokensDef = await meterBySlug(stores.pool, workspace.id, 'tokens');
    await waitFor(
      'the aggregator to close both hours with every event',
      async () => {
        const rows = await readMeterUsage(stores.clickhouse, {
          meter: tokensDef!,
          bucketId: workspace.id,
          fromMs: h1 * 1000,
          toMs: (h1 + 7200) * 1000,
          window: 'hour',
          tz: 'UTC',
          groupBy: ['model', 'region'],
          filter: {},
          closedOnly: true,
        });
        const got = new Map(
          rows.map((r) => [
            `${r.startMs / 1000}|${r.group.model}|${r.group.region || NO_GROUP_VALUE}`,
            Number(r.value),
          ]),
        );
        return equal(got, reference(events).tokens);
      },
      60_000,
    );
    const billing = spawnBilling(
      billingEnv(stores, local, {
        ...shards,
        BILLING_USAGE_SOURCE: 'rollups',
        BILLING_CLOSE_DELAY_SECONDS: '60',
        BILLING_INTERVAL_MS: '200',
      }),
    );
    closers.push(async () => {
      billing.proc.kill('SIGTERM');
      await billing.exited;
    });
    let want = reference(events);
    assert.ok(
      [...want.tokens.keys()].some((k) => k.endsWith(`|${NO_GROUP_VALUE}`)),
      'events without a region',
    );
    await waitFor(
      'Stripe to hold every meter group',
      async () => {
        const got = await atStripe();
        return equal(got.tokens, want.tokens) && equal(got.calls, want.calls);
      },
      90_000,
    );
    const ledger = async (): Promise<
      Array<{ meter_id: string; group_key: string; revision: number; status: string; value: string }>
    > =>
      (
        await stores.pool.query(
          `SELECT meter_id, group_key, revision, status, value::text FROM billing_pushes WHERE meter_id <> '' ORDER BY meter_id, group_key, window_start, revision`,
        )
      ).rows;
    const settled = async (): Promise<boolean> => (await ledger()).every((r) => r.status !== 'pending');
    await waitFor('the outcomes to be recorded', settled);
    const first = await ledger();
    assert.equal(
      first.filter((r) => r.meter_id === 'mtr_bill_tokens').length,
      want.tokens.size,
      'one row per group and hour',
    );
    assert.equal(first.filter((r) => r.meter_id === 'mtr_bill_calls').length, want.calls.size);
    assert.ok(
      first.every((r) => r.revision === 1 && r.status === 'sent'),
      JSON.stringify(first.filter((r) => r.revision !== 1 || r.status !== 'sent')),
    );
    assert.equal(first.filter((r) => r.meter_id === 'mtr_bill_peak').length, 0, 'a max meter is never pushed');
    // Stripe's summaries sum every dimension: the meter's total.
    const [tokensMeter] = (await local.stripe.billing.meters.list({ limit: 100 })).data.filter(
      (m) => m.event_name === 'llm.tokens',
    );
    const summary = await local.stripe.billing.meters.listEventSummaries(tokensMeter!.id, {
      customer: customer.id,
      start_time: h1,
      end_time: h1 + 7200,
    });
    assert.equal(
      summary.data[0]!.aggregated_value,
      [...want.tokens.values()].reduce((a, v) => a + v, 0),
    );

    // A late event in the first (closed, pushed) hour, and a replay of an old event with other properties.
    const late: Sent = {
      idempotency_key: 'late-1',
      occurred_at: rfc3339(h1 + 1800),
      properties: { model: 'claude', region: 'eu', tokens: '5000' },
    };
    const replayed: Sent = { ...events[5]!, properties: { model: 'gpt-4', region: 'eu', tokens: '999999' } };
    const results = await send([late, replayed]);
    assert.ok(results[1]!.duplicate === true || results[1]!.status === 'duplicate', JSON.stringify(results[1]));
    want = reference([...events, late]);
    await waitFor(
      'the late event to reach Stripe as a correction',
      async () => {
        const got = await atStripe();
        return equal(got.tokens, want.tokens) && equal(got.calls, want.calls);
      },
      90_000,
    );
    await waitFor('the outcomes to be recorded', settled);
    const after = await ledger();
    const corrections = after.filter((r) => r.revision > 1);
    assert.deepEqual(
      corrections.map((r) => [r.meter_id, r.group_key, r.revision, r.value, r.status]),
      [
        ['mtr_bill_calls', '["claude"]', 2, '1', 'sent'],
        ['mtr_bill_tokens', '["claude","eu"]', 2, '5000', 'sent'],
      ],
    );
    assert.equal(after.length, first.length + 2);
  } finally {
    for (const close of closers.reverse()) await close();
    rmSync(spool, { recursive: true, force: true });
  }
});
