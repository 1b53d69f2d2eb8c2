import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { dedupeEpochMarker, dedupeRegistryKey, dedupeTierBase } from '@meterd/core/contracts';
import { RedisDeduper, MAX_KEYS_PER_CALL, GENERATION_REFRESH_MS } from '../src/dedupe/redis.js';
import { DedupeEpochError } from '../src/dedupe/deduper.js';

let stores: TestStores;
let d: RedisDeduper;
before(async () => {
  stores = await openTestStores('dedupe');
  d = new RedisDeduper(stores.redis, {
    windowSeconds: 3600,
    pendingTtlMs: 200,
    hotSeconds: 3600,
    prefix: stores.redisPrefix,
  });
  // What ingest's recovery does for a workspace new to this Redis (dedupe/recovery.ts).
  await d.markFresh('ws_dedupe');
});
after(() => stores.close());

const req = (keys: string[], token: string, limit: number | null = null) => ({
  workspaceId: 'ws_dedupe',
  limit,
  period: '202611',
  keys,
  token,
});

test('claims are owned: an expired claim re-taken by a retry is neither committed over nor freed by the first request', async () => {
  assert.deepEqual((await d.claim(req(['e:k1'], 'P:a:1'))).states, ['']);
  assert.deepEqual(
    (await d.claim(req(['e:k1'], 'P:b:1'))).states,
    ['P:a:1'],
    'a second claimant sees the pending claim',
  );
  await new Promise((r) => setTimeout(r, 300)); // the first claim's TTL runs out
  assert.deepEqual((await d.claim(req(['e:k1'], 'P:b:2'))).states, [''], 'the retry claims again');
  await d.release('ws_dedupe', '202611', ['e:k1'], 'P:a:1');
  assert.equal(await stores.redis.get(d.dedupeKey('ws_dedupe', 'e:k1')), 'P:b:2', 'a stale release frees nothing');
  await d.commit('ws_dedupe', ['e:k1'], ['evt_a|1|1|USD|1|1'], 'P:a:1');
  assert.equal(await stores.redis.get(d.dedupeKey('ws_dedupe', 'e:k1')), 'P:b:2', 'a stale commit does not overwrite');
  await d.commit('ws_dedupe', ['e:k1'], ['evt_b|1|1|USD|1|1'], 'P:b:2');
  assert.equal(await stores.redis.get(d.dedupeKey('ws_dedupe', 'e:k1')), 'evt_b|1|1|USD|1|1');
  // A commit after the claim expired still records the stored event.
  await d.claim(req(['e:k2'], 'P:c:1'));
  await new Promise((r) => setTimeout(r, 300));
  await d.commit('ws_dedupe', ['e:k2'], ['evt_c|1|1|USD|1|1'], 'P:c:1');
  assert.equal(await stores.redis.get(d.dedupeKey('ws_dedupe', 'e:k2')), 'evt_c|1|1|USD|1|1');
});

test('release frees the claims and gives their quota back', async () => {
  const r = await d.claim(req(['r:1', 'r:2'], 'P:r:1', 10));
  const before = r.used;
  await d.release('ws_dedupe', '202611', ['r:1', 'r:2'], 'P:r:1');
  assert.equal(await d.used('ws_dedupe', '202611'), before - 2);
  assert.deepEqual((await d.claim(req(['r:1'], 'P:r:2', 10))).states, ['']);
});

test('a tick with more keys than one call takes is split, and the quota still holds exactly', async () => {
  const keys = Array.from({ length: MAX_KEYS_PER_CALL * 2 + 500 }, (_, i) => `big:${i}`);
  const start = await d.used('ws_dedupe', '202611');
  const limit = start + MAX_KEYS_PER_CALL + 10;
  const r = await d.claim(req(keys, 'P:big:1', limit));
  assert.equal(r.states.length, keys.length);
  assert.equal(r.states.filter((s) => s === '').length, MAX_KEYS_PER_CALL + 10);
  assert.equal(r.states.filter((s) => s === 'Q').length, keys.length - MAX_KEYS_PER_CALL - 10);
  assert.equal(r.used, limit);
  await d.commit(
    'ws_dedupe',
    keys.slice(0, MAX_KEYS_PER_CALL + 10),
    keys.slice(0, MAX_KEYS_PER_CALL + 10).map((_, i) => `evt_${i}|1|1|USD|1|1`),
    'P:big:1',
  );
  assert.equal(
    await stores.redis.get(d.dedupeKey('ws_dedupe', `big:${MAX_KEYS_PER_CALL + 5}`)),
    `evt_${MAX_KEYS_PER_CALL + 5}|1|1|USD|1|1`,
  );
});

test('a registry that lost its data gets every workspace that claims listed again before the claim returns', async () => {
  const reg = dedupeRegistryKey(stores.redisPrefix);
  const fresh = new RedisDeduper(stores.redis, {
    windowSeconds: 3600,
    pendingTtlMs: 200,
    hotSeconds: 3600,
    prefix: stores.redisPrefix,
  });
  await fresh.markFresh('ws_relist');
  const before = (await fresh.generation()).id;
  // The node holding the registry lost its data; the workspace's own slot did not.
  await stores.redis.del(reg);
  await new Promise((r) => setTimeout(r, GENERATION_REFRESH_MS + 50)); // the cached generation is read again
  await fresh.claim({ ...req(['e:relist'], 'P:r:1'), workspaceId: 'ws_relist' });
  const after = (await fresh.generation()).id;
  assert.notEqual(after, before, 'a new generation');
  assert.equal(await stores.redis.hexists(reg, 'ws_relist'), 1, 'listed again');
  assert.equal(await stores.redis.get(dedupeEpochMarker(stores.redisPrefix, 'ws_relist')), after, 'marker relabelled');
});

test('a claim of a workspace without a marker claims nothing and fails (recovery first)', async () => {
  await assert.rejects(d.claim({ ...req(['e:none'], 'P:n:1'), workspaceId: 'ws_unmarked' }), DedupeEpochError);
  assert.equal(await stores.redis.exists(d.dedupeKey('ws_unmarked', 'e:none')), 0);
});

test('the tier finds every committed key through its filters, also in buckets a growing slot has not migrated yet', async () => {
  const prefix = `${stores.redisPrefix}:grow`;
  const at = Date.UTC(2026, 10, 30, 12, 0, 10);
  const g = new RedisDeduper(stores.redis, {
    windowSeconds: 3600,
    pendingTtlMs: 200,
    hotSeconds: 3600,
    prefix,
    clock: () => at,
  });
  await g.markFresh('ws_grow');
  const keys = Array.from({ length: 1_030 }, (_, i) => `e:grow-${i}`);
  const row = `evt_g|1|1|USD|${Math.floor(at / 1000)}|1`;
  // One key per commit: a slot that grows migrates one old bucket per key, so the last ones leave
  // most of the old buckets unmigrated.
  for (const k of keys) await g.commit('ws_grow', [k], [row], 'P:g:1');
  const meta = await stores.redis.hgetall(`${dedupeTierBase(prefix, 'ws_grow')}${Math.floor(at / 1000 / 720)}`);
  assert.ok(meta.ob !== undefined && Number(meta.oc) < 2 ** Number(meta.ob), `mid-migration: ${JSON.stringify(meta)}`);
  await stores.redis.del(...keys.map((k) => g.dedupeKey('ws_grow', k))); // hot rows gone: the tier answers
  const hour = Math.floor(at / 3_600_000);
  for (let i = 0; i < keys.length; i += 500) {
    const r = await g.claim({ ...req(keys.slice(i, i + 500), 'P:g:2'), workspaceId: 'ws_grow' });
    assert.deepEqual(
      r.states.flatMap((s, j) => (s === `S:${hour}` ? [] : [`${keys[i + j]} → ${s}`])),
      [],
      'every key found',
    );
  }
  const fresh = Array.from({ length: 500 }, (_, i) => `e:fresh-${i}`);
  const r = await g.claim({ ...req(fresh, 'P:g:3'), workspaceId: 'ws_grow' });
  assert.ok(
    r.states.every((s) => s === ''),
    'new keys are new',
  );
});
