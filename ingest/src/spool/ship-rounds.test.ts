import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ClickHouseQueryError, type BatchRecord } from '@meterd/core/clickhouse';
import { createLogger } from '@meterd/core/log';
import { MetricsRegistry } from '@meterd/core/metrics';
import { defineIngestMetrics } from '../metrics.js';
import { SpoolWriter } from './writer.js';
import { SpoolShipper, type InsertRows } from './shipper.js';
import { readCheckpoint } from './segments.js';
import { RoundShipping, ShipRounds, type ShipRoundsOptions } from './ship-rounds.js';

const log = createLogger('ship-rounds-test', 'silent');
const append = (w: SpoolWriter, lines: string[]) =>
  new Promise<void>((res, rej) => w.append(lines.join(''), lines.length, (e) => (e ? rej(e) : res())));
const row = (key: string) =>
  `${JSON.stringify({
    workspace_id: 'ws_rounds',
    event_type: 'api.call',
    idempotency_key: key,
    event_id: `ev_${key}`,
    quantity: 1,
    gmv_cents: 100,
    currency: 'USD',
    occurred_at: '2026-12-01 02:10:00',
    received_at: '2026-12-01 02:10:01',
  })}\n`;
// What core's raw inserter throws for ClickHouse 18.16's answer to an unparsable row.
const parseError = () =>
  new ClickHouseQueryError(
    'inserting into events (HTTP 500)',
    new Error('Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: bad'),
  );

/** Test threads: a spool and shipper each, answering one ShipRounds through asynchronous messages like postMessage. */
function threads(n: number, o: Omit<ShipRoundsOptions, 'intervalMs' | 'log'>, alone: InsertRows) {
  const rounds = new ShipRounds({ ...o, intervalMs: 20, log });
  const out = Array.from({ length: n }, (_, i) => {
    const writer = SpoolWriter.open(mkdtempSync(join(tmpdir(), 'ship-rounds-')), {
      segmentBytes: 1 << 20,
      fsync: 'always',
    });
    const side = new RoundShipping((m) => setImmediate(() => rounds.receive(i, m)), 1000);
    const shipper = new SpoolShipper(writer, alone, {
      batchRows: 1000,
      intervalMs: 10,
      metrics: defineIngestMetrics(new MetricsRegistry()),
      log,
      record: o.record,
      together: side.together,
    });
    rounds.join(i, (m) => setImmediate(() => side.receive(m, shipper)));
    return { writer, shipper };
  });
  return { rounds, threads: out };
}

const allShipped = (ts: { shipper: SpoolShipper }[]) => ts.every((t) => t.shipper.unshippedBytes === 0);
async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 5));
}

test("one round is one events insert and one record carrying every thread's batch; checkpoints move after it", async () => {
  const inserts: Buffer[] = [];
  const records: BatchRecord[] = [];
  const alone: Buffer[] = [];
  const t = threads(
    2,
    {
      insertEvents: async (b) => void inserts.push(b),
      record: async (r) => void records.push(r),
    },
    async (b) => void alone.push(b),
  );
  await append(t.threads[0]!.writer, [row('a1'), row('a2')]);
  await append(t.threads[1]!.writer, [row('b1')]);
  t.rounds.start();
  await until(() => allShipped(t.threads));
  await t.rounds.stop();
  assert.equal(inserts.length, 1, 'both threads in one insert');
  assert.equal(records.length, 1, 'and in one record');
  assert.equal(alone.length, 0);
  for (const key of ['a1', 'a2', 'b1']) assert.ok(inserts[0]!.includes(key), `${key} in the round's insert`);
  assert.deepEqual(new Set(records[0]!.windows.map((w) => w.batch_id.split(':')[0])).size, 2, "both threads' batches");
  assert.equal(
    records[0]!.partials.reduce((s, p) => s + p.events, 0),
    3,
  );
  for (const { writer } of t.threads) assert.ok(readCheckpoint(writer.dir).offset > 0, 'checkpoint moved');
  for (const { shipper, writer } of t.threads) {
    await shipper.stop();
    await writer.close();
  }
});

test('a failed round moves no checkpoint and ships nothing alone; the next round ships every row once', async () => {
  const inserts: Buffer[] = [];
  let fail = 1;
  const t = threads(
    2,
    {
      insertEvents: async (b) => {
        if (fail-- > 0)
          throw new ClickHouseQueryError('inserting into events (HTTP 503)', new Error('Service Unavailable'));
        inserts.push(b);
      },
      record: async () => {},
    },
    async () => assert.fail('a transient failure is retried in a round, not alone'),
  );
  await append(t.threads[0]!.writer, [row('a1')]);
  await append(t.threads[1]!.writer, [row('b1')]);
  t.rounds.start();
  await until(() => t.threads.every((x) => x.shipper.lastError !== undefined));
  for (const { writer } of t.threads) assert.equal(readCheckpoint(writer.dir).offset, 0, 'not moved by a failed round');
  await until(() => allShipped(t.threads));
  await t.rounds.stop();
  assert.equal(inserts.length, 1);
  for (const { shipper, writer } of t.threads) {
    assert.equal(shipper.lastError, undefined);
    await shipper.stop();
    await writer.close();
  }
});

test('a refused row: each thread ships its batch alone, the row goes to quarantine, the rest is stored', async () => {
  const alone: Buffer[] = [];
  const t = threads(
    2,
    {
      insertEvents: async (b) => {
        if (b.includes('bad')) throw parseError();
        assert.fail('only the refused round reaches this insert');
      },
      record: async () => {},
    },
    async (b) => {
      if (b.includes('"bad')) throw parseError();
      alone.push(Buffer.from(b));
    },
  );
  await append(t.threads[0]!.writer, [row('a1'), row('bad'), row('a2')]);
  await append(t.threads[1]!.writer, [row('b1')]);
  t.rounds.start();
  await until(() => allShipped(t.threads));
  await t.rounds.stop();
  const stored = Buffer.concat(alone).toString();
  for (const key of ['a1', 'a2', 'b1']) assert.ok(stored.includes(`"${key}"`), `${key} stored`);
  assert.ok(!stored.includes('"bad"'));
  assert.equal(t.threads[0]!.shipper.quarantinedRows, 1);
  assert.ok(existsSync(join(t.threads[0]!.writer.dir, 'quarantine')));
  for (const { shipper, writer } of t.threads) {
    await shipper.stop();
    await writer.close();
  }
});

test('stop() ends a round whose thread never answers; a batch arriving after it is told it was not shipped', async () => {
  const rounds = new ShipRounds({ intervalMs: 20, insertEvents: async () => {}, record: async () => {}, log });
  let asked: number | undefined;
  const told: unknown[] = [];
  rounds.join(0, (m) => {
    if (m.type === 'ship-round') asked = m.round;
    else told.push(m);
  });
  rounds.start();
  await until(() => asked !== undefined);
  await rounds.stop();
  rounds.receive(0, {
    type: 'ship-batch',
    round: asked!,
    events: new Uint8Array(),
    record: { partials: [], windows: [] },
    full: false,
  });
  assert.equal(told.length, 1);
  assert.match(String((told[0] as { error?: string }).error), /ended/);
});

test('a round keeps nothing of its batches once it is over (a listener per round on the loop signal kept them all)', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const shipped: WeakRef<Uint8Array>[] = [];
  const rounds = new ShipRounds({ intervalMs: 1, log, insertEvents: async () => {}, record: async () => {} });
  rounds.join(0, (m) => {
    if (m.type !== 'ship-round') return;
    const events = new Uint8Array(64 * 1024);
    shipped.push(new WeakRef(events));
    const record: BatchRecord = { partials: [], windows: [], meters: [] };
    setImmediate(() => rounds.receive(0, { type: 'ship-batch', round: m.round, events, record, full: false }));
  });
  rounds.start();
  await until(() => shipped.length >= 30);
  // While the loop runs (stop() aborts its signal, which would drop such listeners at last): the
  // first 25 rounds are over, and none of their batches may be reachable.
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  const alive = shipped.slice(0, 25).filter((w) => w.deref() !== undefined).length;
  await rounds.stop();
  assert.equal(alive, 0, `${alive} of the first 25 rounds' batches still reachable`);
});
