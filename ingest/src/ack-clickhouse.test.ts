import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BatchRecord, EventRow } from '@meterd/core/clickhouse';
import { ClickHouseAck } from './ack-clickhouse.js';

const line = (key: string) =>
  `{"workspace_id":"ws_1","event_type":"e","idempotency_key":"${key}","event_id":"evt_${key}","quantity":1,"gmv_cents":0,"currency":"USD","occurred_at":"2026-11-30 10:00:00","received_at":"2026-11-30 10:00:01"}\n`;

/** An insert the test finishes by hand, recording what each call received. */
function gatedInsert() {
  const calls: { keys: string[]; finish: (err?: Error) => void }[] = [];
  const insert = (rows: EventRow[]) =>
    new Promise<void>((resolve, reject) =>
      calls.push({ keys: rows.map((r) => r.idempotency_key), finish: (err) => (err ? reject(err) : resolve()) }),
    );
  return { calls, insert };
}
const tick = () => new Promise((r) => setImmediate(r));

test('one insert in flight; groups that arrive meanwhile share the next one; each callback fires after its own insert', async () => {
  const { calls, insert } = gatedInsert();
  const ack = new ClickHouseAck(insert, undefined, 'test');
  const done: string[] = [];
  const append = (k: string) => ack.append(line(k), 1, (err) => done.push(`${k}:${err ? 'err' : 'ok'}`));
  append('a');
  append('b');
  await tick();
  assert.deepEqual(
    calls.map((c) => c.keys),
    [['a', 'b']],
  );
  append('c');
  append('d');
  await tick();
  assert.equal(calls.length, 1, 'no second insert while the first runs');
  assert.deepEqual(done, []);
  calls[0]!.finish();
  await tick();
  await tick();
  assert.deepEqual(done, ['a:ok', 'b:ok']);
  assert.deepEqual(calls[1]!.keys, ['c', 'd']);
  calls[1]!.finish(new Error('ClickHouse is down'));
  await tick();
  assert.deepEqual(done, ['a:ok', 'b:ok', 'c:err', 'd:err']);
  // A failure holds nothing up.
  append('e');
  await tick();
  calls[2]!.finish();
  await tick();
  assert.deepEqual(done.at(-1), 'e:ok');
});

test('batch records overlap the next inserts; inserts that finish meanwhile share the next record; each 202 waits for its own record', async () => {
  const { calls, insert } = gatedInsert();
  const records: { ids: string[]; keys: number; finish: () => void }[] = [];
  const record = (rec: BatchRecord) =>
    new Promise<void>((resolve) =>
      records.push({ ids: [rec.windows[0]!.batch_id], keys: rec.partials[0]!.events, finish: resolve }),
    );
  const ack = new ClickHouseAck(insert, record, 'p');
  const done: string[] = [];
  const append = (k: string) => ack.append(line(k), 1, (err) => done.push(`${k}:${err ? 'err' : 'ok'}`));
  append('a');
  await tick();
  calls[0]!.finish();
  append('b');
  await tick();
  await tick();
  assert.equal(calls.length, 2, "b's insert runs while a's record is written");
  assert.equal(records.length, 1);
  assert.deepEqual(done, [], 'a waits for its record');
  calls[1]!.finish();
  append('c');
  await tick();
  await tick();
  calls[2]!.finish();
  await tick();
  assert.equal(records.length, 1, 'one record in flight at a time');
  records[0]!.finish();
  await tick();
  assert.deepEqual(done, ['a:ok']);
  assert.equal(records.length, 2);
  assert.deepEqual(
    records.map((r) => [r.ids[0], r.keys]),
    [
      ['p:0', 1],
      ['p:1', 2],
    ],
    'b and c, inserted while a was recorded, share one record',
  );
  records[1]!.finish();
  await tick();
  assert.deepEqual(done, ['a:ok', 'b:ok', 'c:ok']);
});
