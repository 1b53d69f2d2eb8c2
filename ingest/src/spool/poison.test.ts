import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClickHouseQueryError } from '@meterd/core/clickhouse';
import { createLogger } from '@meterd/core/log';
import { MetricsRegistry } from '@meterd/core/metrics';
import { defineIngestMetrics } from '../metrics.js';
import { SpoolWriter } from './writer.js';
import { SpoolShipper, type InsertRows } from './shipper.js';
import { readCheckpoint } from './segments.js';
import { rowRejectionCode } from './insert-errors.js';

const log = createLogger('poison-test', 'silent');
const dir = () => mkdtempSync(join(tmpdir(), 'spool-poison-'));
const append = (w: SpoolWriter, data: string, rows: number) =>
  new Promise<void>((res, rej) => w.append(data, rows, (e) => (e ? rej(e) : res())));
// What core's raw inserter throws for ClickHouse 18.16's answer to an unparsable row.
const parseError = () =>
  new ClickHouseQueryError(
    'inserting into events (HTTP 500)',
    new Error(
      'Code: 25, e.displayText() = DB::Exception: Cannot parse JSON string: expected opening quote: (while read the value of key quantity): (at row 3)\n, e.what() = DB::Exception',
    ),
  );
const rowsOf = (sink: Buffer[]) => Buffer.concat(sink).toString().split('\n').filter(Boolean);

/** Refuses (deterministically) any batch holding a row marked "bad"; stores the rest. */
function pickyInsert(sink: Buffer[], calls: { n: number }): InsertRows {
  return async (b) => {
    calls.n++;
    if (b.includes('"bad"')) throw parseError();
    sink.push(Buffer.from(b));
  };
}

function shipper(w: SpoolWriter, insert: InsertRows) {
  return new SpoolShipper(w, insert, {
    batchRows: 1000,
    intervalMs: 10,
    metrics: defineIngestMetrics(new MetricsRegistry()),
    log,
  });
}

test("the error classifier: parse codes are the rows' fault, network and plain 5xx are transient", () => {
  assert.equal(rowRejectionCode(parseError()), 25);
  assert.equal(
    rowRejectionCode(
      new ClickHouseQueryError(
        'inserting into events (HTTP 400)',
        new Error('Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected { before: x'),
      ),
    ),
    27,
  );
  assert.equal(
    rowRejectionCode(new ClickHouseQueryError('inserting 10 bytes into events', new TypeError('fetch failed'))),
    undefined,
  );
  assert.equal(
    rowRejectionCode(new ClickHouseQueryError('inserting into events (HTTP 503)', new Error('Service Unavailable'))),
    undefined,
  );
  assert.equal(
    rowRejectionCode(
      new ClickHouseQueryError(
        'inserting into events (HTTP 404)',
        new Error("Code: 60, e.displayText() = DB::Exception: Table x.events doesn't exist"),
      ),
    ),
    undefined,
    "a missing table is not the rows' fault",
  );
  assert.equal(
    rowRejectionCode(
      new ClickHouseQueryError(
        'inserting into events (HTTP 500)',
        new Error('Code: 216, e.displayText() = DB::Exception: Query with id = x is already running'),
      ),
    ),
    undefined,
  );
});

test('a row ClickHouse refuses is quarantined; every good row arrives once and the checkpoint moves past', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  const lines = Array.from({ length: 20 }, (_, i) =>
    i === 7 || i === 13 ? `{"n":${i},"bad":true}\n` : `{"n":${i}}\n`,
  );
  await append(w, lines.join(''), lines.length);
  const sink: Buffer[] = [];
  const calls = { n: 0 };
  const s = shipper(w, pickyInsert(sink, calls));
  assert.equal(await s.shipOnce(), 20);
  assert.deepEqual(
    rowsOf(sink),
    lines.filter((l) => !l.includes('bad')).map((l) => l.trimEnd()),
    'good rows once, in order',
  );
  assert.ok(calls.n <= 2 * 2 * Math.ceil(Math.log2(20)) + 1, `bisection stays logarithmic (${calls.n} inserts)`);
  assert.equal(s.quarantinedRows, 2);
  const qdir = join(d, 'quarantine');
  const files = readdirSync(qdir);
  assert.equal(files.length, 1);
  const q = readFileSync(join(qdir, files[0]!), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { row: string; error: string; offset: number; segment: number });
  assert.deepEqual(
    q.map((r) => r.row),
    ['{"n":7,"bad":true}', '{"n":13,"bad":true}'],
  );
  assert.match(q[0]!.error, /Code: 25/);
  assert.equal(q[0]!.offset, lines.slice(0, 7).join('').length, 'the offset locates the row in its segment');
  const end = Buffer.byteLength(lines.join(''));
  assert.deepEqual(readCheckpoint(d), { segment: w.durableEnd.segment, offset: end });
  assert.equal(s.unshippedBytes, 0);
  // Shipping goes on with later rows.
  await append(w, '{"n":20}\n', 1);
  assert.equal(await s.shipOnce(), 1);
  assert.equal(rowsOf(sink).at(-1), '{"n":20}');
  await w.close();
});

test('a transient error is retried and quarantines nothing', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  await append(w, '{"n":1}\n{"n":2}\n', 2);
  const sink: Buffer[] = [];
  const errors = [
    new ClickHouseQueryError('inserting 16 bytes into events', new TypeError('fetch failed')),
    new ClickHouseQueryError('inserting into events (HTTP 503)', new Error('Service Unavailable')),
  ];
  const s = shipper(w, async (b) => {
    const e = errors.shift();
    if (e) throw e;
    sink.push(Buffer.from(b));
  });
  await assert.rejects(s.shipOnce(), /fetch failed/);
  await assert.rejects(s.shipOnce(), /HTTP 503/);
  assert.deepEqual(readCheckpoint(d), { segment: 0, offset: 0 });
  assert.equal(await s.shipOnce(), 2);
  assert.deepEqual(rowsOf(sink), ['{"n":1}', '{"n":2}']);
  assert.equal(s.quarantinedRows, 0);
  assert.equal(existsSync(join(d, 'quarantine')), false);
  await w.close();
});

test('a transient error while bisecting keeps the whole batch for a retry', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  await append(w, '{"n":1}\n{"n":2,"bad":true}\n{"n":3}\n{"n":4}\n', 4);
  const sink: Buffer[] = [];
  let calls = 0;
  const s = shipper(w, async (b) => {
    if (++calls === 2) throw new ClickHouseQueryError('inserting into events', new TypeError('fetch failed'));
    if (b.includes('"bad"')) throw parseError();
    sink.push(Buffer.from(b));
  });
  await assert.rejects(s.shipOnce(), /fetch failed/);
  assert.deepEqual(readCheckpoint(d), { segment: 0, offset: 0 });
  assert.equal(s.quarantinedRows, 0);
  assert.equal(await s.shipOnce(), 4);
  assert.equal(s.quarantinedRows, 1);
  await w.close();
});

test('the shipper reports how long it has been failing, and clears it on recovery', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  await append(w, '{"n":1}\n', 1);
  let down = true;
  const s = shipper(w, async () => {
    if (down) throw new ClickHouseQueryError('inserting into events', new TypeError('fetch failed'));
  });
  s.start();
  for (let i = 0; i < 500 && !(s.failingSince !== undefined && s.msSinceLastSuccess >= 200); i++)
    await new Promise((r) => setTimeout(r, 20));
  assert.ok(s.failingSince !== undefined, 'the outage is seen as a failure streak');
  assert.ok(s.msSinceLastSuccess >= 200, `${s.msSinceLastSuccess} ms`);
  down = false;
  for (let i = 0; i < 100 && s.failingSince !== undefined; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(s.failingSince, undefined);
  assert.ok(s.msSinceLastSuccess < 1_000);
  await s.stop();
  await w.close();
});
