import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { dedupeEpochMarker, dedupeRegistryKey, dedupeTierBase } from '@meterd/core/contracts';
import { RedisDeduper, MAX_KEYS_PER_CALL, GENERATION_REFRESH_MS, md5Key } from '../src/dedupe/redis.js';
import { DedupeEpochError } from '../src/dedupe/deduper.js';
import { until } from './helpers.js';

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
  await d.commit('ws_dedupe', '202611', ['e:k1'], ['evt_a|1|1|USD|1|1'], 'P:a:1');
  assert.equal(await stores.redis.get(d.dedupeKey('ws_dedupe', 'e:k1')), 'P:b:2', 'a stale commit does not overwrite');
  await d.commit('ws_dedupe', '202611', ['e:k1'], ['evt_b|1|1|USD|1|1'], 'P:b:2');
  assert.equal(await stores.redis.get(d.dedupeKey('ws_dedupe', 'e:k1')), 'evt_b|1|1|USD|1|1');
  // A commit after the claim expired still records the stored event.
  await d.claim(req(['e:k2'], 'P:c:1'));
  await new Promise((r) => setTimeout(r, 300));
  await d.commit('ws_dedupe', '202611', ['e:k2'], ['evt_c|1|1|USD|1|1'], 'P:c:1');
  assert.equal(await stores.redis.get(d.dedupeKey('ws_dedupe', 'e:k2')), 'evt_c|1|1|USD|1|1');
});

test('keys travel packed: a key holding the separator is refused whole, nothing claimed, counted or stored', async () => {
  // Validation refuses control characters in idempotency keys; the scripts check the count anyway,
  // so a newline that got through could never claim or commit a key made of two halves.
  const before = await d.used('ws_dedupe', '202611');
  await assert.rejects(d.claim(req(['p:ok', 'p:a\nb'], 'P:p:1', 10)), /PACKING/);
  assert.equal(await d.used('ws_dedupe', '202611'), before, 'nothing counted');
  for (const k of ['p:ok', 'p:a', 'b'])
    assert.equal(await stores.redis.get(d.dedupeKey('ws_dedupe', k)), null, `${k} not claimed`);
  await assert.rejects(d.commit('ws_dedupe', '202611', ['p:a\nb'], ['evt_p|1|1|USD|1|1'], 'P:*'), /PACKING/);
  await assert.rejects(d.commit('ws_dedupe', '202611', ['p:ok'], ['evt_p|1|1|USD|1|1\nx'], 'P:*'), /PACKING/);
  for (const k of ['p:ok', 'p:a', 'b'])
    assert.equal(await stores.redis.get(d.dedupeKey('ws_dedupe', k)), null, `${k} not stored`);
  assert.deepEqual((await d.claim(req(['p:ok'], 'P:p:2', 10))).states, [''], 'a well-formed key still claims');
  // Its reservation would count in the next test until it lapsed, which a busy machine makes it do
  // in the middle of that test.
  await d.release('ws_dedupe', '202611', ['p:ok'], 'P:p:2');
});

test('every key of the tier expires: buckets (new ones, and those a growing slot moved keys into), filters and slot metadata', async () => {
  await d.markFresh('ws_ttl');
  // Past BUCKET_FIELDS keys a slot grows and migrates its buckets: the new ones must expire too.
  const keys = Array.from({ length: 600 }, (_, i) => `t:${i}`);
  for (let c = 0; c < keys.length; c += 50) {
    const part = keys.slice(c, c + 50);
    await d.claim({ ...req(part, 'P:t:1'), workspaceId: 'ws_ttl' });
    await d.commit(
      'ws_ttl',
      '202611',
      part,
      part.map(() => 'evt_t|1|1|USD|1|1'),
      'P:t:1',
    );
  }
  const tier: string[] = [];
  let cursor = '0';
  do {
    const [next, page] = await stores.redis.scan(cursor, 'MATCH', `${d.tierBase('ws_ttl')}*`, 'COUNT', 1000);
    cursor = next;
    tier.push(...page);
  } while (cursor !== '0');
  assert.ok(tier.length > 4, `the tier holds several buckets (${tier.length} keys)`);
  for (const k of tier) {
    const ttl = await stores.redis.ttl(k);
    assert.ok(ttl > 0 && ttl <= 2 * 3600 + 3600 + 3600, `${k} expires (ttl ${ttl})`);
  }
});

test('release frees the claims and gives their quota back', async () => {
  const r = await d.claim(req(['r:1', 'r:2'], 'P:r:1', 10));
  const before = r.used;
  await d.release('ws_dedupe', '202611', ['r:1', 'r:2'], 'P:r:1');
  assert.equal(await d.used('ws_dedupe', '202611'), before - 2);
  assert.deepEqual((await d.claim(req(['r:1'], 'P:r:2', 10))).states, ['']);
  await d.release('ws_dedupe', '202611', ['r:1'], 'P:r:2'); // its reservation would count in the next test
});

test('the counter counts committed events only: a claim never committed stops counting when it lapses', async () => {
  const ws = 'ws_count';
  await d.markFresh(ws);
  const claim = (keys: string[], token: string, limit: number | null = 3) =>
    d.claim({ workspaceId: ws, limit, period: '202611', keys, token });
  const r = await claim(['c:1', 'c:2', 'c:3'], 'P:c:1');
  assert.deepEqual([r.states, r.used], [['', '', ''], 3]);
  assert.equal(await d.used(ws, '202611'), 0, 'claimed, not yet counted');
  assert.deepEqual((await claim(['c:4'], 'P:c:2')).states, ['Q'], 'live claims count against the limit');
  await d.commit(ws, '202611', ['c:1'], ['evt_c1|1|1|USD|1|1'], 'P:c:1');
  assert.equal(await d.used(ws, '202611'), 1);
  // c:2 and c:3 are never committed nor released (their process died): their reservation lapses
  // with their claims, and the room comes back.
  await until(
    async () => (await claim(['c:4'], 'P:c:3')).states,
    (s) => s[0] === '',
    5_000,
    'the lapsed claims to stop counting',
  );
  await d.release(ws, '202611', ['c:2', 'c:3'], 'P:c:1');
  await d.release(ws, '202611', ['c:4'], 'P:c:3');
  assert.equal(await d.used(ws, '202611'), 1, 'a stale release counts nothing back');
  // The retry of c:2 is claimed again and stored: it counts once.
  assert.deepEqual((await claim(['c:2'], 'P:c:4')).states, ['']);
  await d.commit(ws, '202611', ['c:2'], ['evt_c2|1|1|USD|1|1'], 'P:c:4');
  assert.equal(await d.used(ws, '202611'), 2);
  assert.equal(await stores.redis.exists(`${d.quotaKey(ws, '202611')}:p`), 0, 'no reservation left');
});

test('start-up recommit counts a key left pending or unclaimed once, and not one whose hot row merely expired', async () => {
  const ws = 'ws_recount';
  await d.markFresh(ws);
  await d.claim({ workspaceId: ws, limit: null, period: '202611', keys: ['rc:3'], token: 'P:rc:1' });
  await d.commit(ws, '202611', ['rc:3'], ['evt_rc3|1|1|USD|1|1'], 'P:rc:1');
  await stores.redis.del(d.dedupeKey(ws, 'rc:3')); // its hot row expired; the tier still holds it
  // rc:1 was claimed and spooled when the process died; rc:2's claim had already lapsed.
  await d.claim({ workspaceId: ws, limit: null, period: '202611', keys: ['rc:1'], token: 'P:rc:2' });
  const rows = ['evt_rc1|1|1|USD|1|1', 'evt_rc2|1|1|USD|1|1', 'evt_rc3|1|1|USD|1|1'];
  await d.recommit(ws, '202611', ['rc:1', 'rc:2', 'rc:3'], rows);
  assert.equal(await d.used(ws, '202611'), 3);
  await d.recommit(ws, '202611', ['rc:1', 'rc:2', 'rc:3'], rows); // a second start-up
  assert.equal(await d.used(ws, '202611'), 3);
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
    '202611',
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
  for (const k of keys) await g.commit('ws_grow', '202611', [k], [row], 'P:g:1');
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

test('a slot filter "maybe" (its bit set by another key) that is a false positive claims the key as new', async () => {
  const prefix = `${stores.redisPrefix}:fp`;
  const at = Date.UTC(2026, 10, 30, 12, 0, 10);
  // Keys whose hashes share their first 32 bits: the same bucket and the same filter bit.
  const f = new RedisDeduper(stores.redis, {
    windowSeconds: 3600,
    pendingTtlMs: 200,
    hotSeconds: 3600,
    prefix,
    clock: () => at,
    hash: (key) => '\0\0\0\0' + md5Key(key).slice(4),
  });
  const ws = 'ws_fp';
  await f.markFresh(ws);
  const claim = (keys: string[], token: string) => f.claim({ ...req(keys, token), workspaceId: ws });
  const row = (id: string) => `evt_${id}|1|1|USD|${Math.floor(at / 1000)}|1`;
  assert.deepEqual((await claim(['e:fp-1'], 'P:fp:1')).states, ['']);
  await f.commit(ws, '202611', ['e:fp-1'], [row('fp1')], 'P:fp:1');
  await stores.redis.del(f.dedupeKey(ws, 'e:fp-1')); // hot row gone: only the tier remembers it
  assert.deepEqual((await claim(['e:fp-2'], 'P:fp:2')).states, [''], 'the filter bit is set, the key is not stored');
  await f.commit(ws, '202611', ['e:fp-2'], [row('fp2')], 'P:fp:2');
  await stores.redis.del(f.dedupeKey(ws, 'e:fp-2'));
  const hour = Math.floor(at / 3_600_000);
  assert.deepEqual((await claim(['e:fp-1', 'e:fp-2', 'e:fp-3'], 'P:fp:3')).states, [`S:${hour}`, `S:${hour}`, '']);
  assert.equal(await f.used(ws, '202611'), 2);
});
