import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { checkSpoolIdentity, markSpoolClosed, readIdentity, SpoolVolumeLostError } from './identity.js';

let stores: TestStores;
before(async () => {
  stores = await openTestStores('spool_identity');
});
after(async () => {
  await stores.close();
});

const dir = () => mkdtempSync(join(tmpdir(), 'spool-identity-'));
const state = async (instance: string) =>
  (
    await stores.pool.query<{ state: string; spool_id: string }>('SELECT * FROM ingest_spools WHERE instance = $1', [
      instance,
    ])
  ).rows[0];

test('an empty spool folder where Postgres remembers an open spool of the instance is refused, naming the command', async () => {
  const a = dir();
  const check = (d: string, o: { register?: boolean; acceptLost?: boolean } = {}) =>
    checkSpoolIdentity({ pool: stores.pool, dir: d, instance: 'ingest-a', register: true, acceptLost: false, ...o });
  const first = await check(a);
  assert.equal(first.outcome, 'new');
  assert.deepEqual(readIdentity(a), first.identity);
  assert.deepEqual(await state('ingest-a'), {
    ...(await state('ingest-a')),
    state: 'open',
    spool_id: first.identity.spool_id,
  });
  // A restart on the same volume.
  assert.equal((await check(a)).outcome, 'same');

  // The volume is replaced by an empty one.
  const b = dir();
  await assert.rejects(check(b), (err: unknown) => {
    assert.ok(err instanceof SpoolVolumeLostError);
    assert.equal(err.code, 'METERD_INGEST_SPOOL_VOLUME_LOST');
    assert.match(err.message, /npm run spool:lost -- --instance ingest-a/);
    assert.match(err.message, new RegExp(first.identity.spool_id));
    return true;
  });
  assert.equal(readIdentity(b), undefined, 'a refused start leaves the new volume untouched');
  // INGEST_ACK=clickhouse still honours a refusal left by the spool it ran on before.
  await assert.rejects(check(b, { register: false }), SpoolVolumeLostError);
  // The old volume put back (or another instance's volume) is not the one recorded: only the recorded one passes.
  assert.equal((await check(a)).outcome, 'same');

  // SPOOL_ACCEPT_LOST_VOLUME: starts, and the new spool is the instance's from now on.
  const accepted = await check(b, { acceptLost: true });
  assert.equal(accepted.outcome, 'accepted-lost');
  assert.equal((await state('ingest-a'))!.spool_id, accepted.identity.spool_id);
  rmSync(a, { recursive: true, force: true });
  rmSync(b, { recursive: true, force: true });
});

test('after a clean close (everything shipped) a new volume starts without a refusal', async () => {
  const a = dir();
  const { identity } = await checkSpoolIdentity({
    pool: stores.pool,
    dir: a,
    instance: 'ingest-b',
    register: true,
    acceptLost: false,
  });
  await markSpoolClosed(stores.pool, 'ingest-b', identity.spool_id);
  assert.equal((await state('ingest-b'))!.state, 'closed');
  const b = dir();
  const next = await checkSpoolIdentity({
    pool: stores.pool,
    dir: b,
    instance: 'ingest-b',
    register: true,
    acceptLost: false,
  });
  assert.equal(next.outcome, 'new');
  assert.equal((await state('ingest-b'))!.state, 'open');
});

test('INGEST_ACK=clickhouse registers nothing: an ephemeral disk at every start is normal there', async () => {
  for (let i = 0; i < 2; i++) {
    const r = await checkSpoolIdentity({
      pool: stores.pool,
      dir: dir(),
      instance: 'ingest-c',
      register: false,
      acceptLost: false,
    });
    assert.equal(r.outcome, 'new');
  }
  assert.equal(await state('ingest-c'), undefined);
});
