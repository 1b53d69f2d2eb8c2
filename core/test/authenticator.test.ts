import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { Authenticator } from '@meterd/core/auth';
import { KEY_REVOKED_CHANNEL, PLAN_CHANGED_CHANNEL } from '@meterd/core/contracts';
import { ApiError } from '@meterd/core/errors';
import { createRedis, findKeyByHash, revokeApiKey, type Redis } from '@meterd/core/store';
import type { AuthenticatorOptions } from '../src/auth/authenticator.js';

const OPERATOR_KEY = `op-${randomBytes(16).toString('hex')}`;
let stores: TestStores;
const subs: Redis[] = [];

before(async () => {
  stores = await openTestStores('authenticator');
});
after(async () => {
  for (const s of subs) s.disconnect();
  await stores.close();
});

/** An Authenticator on its own subscriber connection, returned once its revocation channel is live. */
async function open(ttlMs = 30_000, options: AuthenticatorOptions = {}): Promise<{ auth: Authenticator; sub: Redis }> {
  const sub = createRedis(new URL(stores.env.REDIS_URL!));
  subs.push(sub);
  const auth = new Authenticator(stores.pool, sub, ttlMs, OPERATOR_KEY, options);
  await auth.subscribed;
  return { auth, sub };
}

const randomToken = () => `sks_${randomBytes(32).toString('base64url')}`;

/** Resolves when `sub` has delivered a message on `wanted`; listeners run in order, so the Authenticator's ran first. */
function revocationSeen(sub: Redis, wanted: string = KEY_REVOKED_CHANNEL): Promise<void> {
  return new Promise((resolve) => {
    const on = (channel: string) => {
      if (channel !== wanted) return;
      sub.off('message', on);
      resolve();
    };
    sub.on('message', on);
  });
}

function assertCode(v: unknown, code: string): void {
  assert.ok(v instanceof ApiError, `expected ApiError ${code}, got ${JSON.stringify(v)}`);
  assert.equal(v.code, code);
}

test('a valid key resolves, and the second call is answered synchronously from the cache', async () => {
  const { auth } = await open();
  const { workspace, token } = await stores.workspace('growth');
  const first = auth.authenticate(`Bearer ${token}`);
  assert.ok(first instanceof Promise, 'a cold key is looked up');
  const p = await first;
  assert.ok(!(p instanceof ApiError));
  assert.equal(p.workspaceId, workspace.id);
  assert.equal(p.plan, 'growth');
  const second = auth.authenticate(`Bearer ${token}`);
  assert.ok(!(second instanceof Promise), 'a cached key is answered without a promise');
  assert.equal((second as { workspaceId: string }).workspaceId, workspace.id);
});

test('operator key, malformed and missing headers', async () => {
  const { auth } = await open();
  const op = auth.authenticate(`Bearer ${OPERATOR_KEY}`);
  assert.ok(!(op instanceof Promise) && !(op instanceof ApiError));
  assert.equal(op.workspaceId, null);
  assert.equal(op.scopes, 'all');
  assertCode(auth.authenticate(''), 'missing_api_key');
  assertCode(auth.authenticate('Basic abc'), 'invalid_api_key');
  assertCode(auth.authenticate('Bearer sks_short'), 'invalid_api_key');
  assertCode(await auth.authenticate(`Bearer ${randomToken()}`), 'invalid_api_key');
});

test('a revoked key is refused within a second', async () => {
  const { auth } = await open();
  const { workspace, token, keyId } = await stores.workspace();
  assert.ok(!((await auth.authenticate(`Bearer ${token}`)) instanceof ApiError));
  assert.ok(!(auth.authenticate(`Bearer ${token}`) instanceof Promise), 'cached before the revocation');
  const t0 = Date.now();
  assert.equal(await revokeApiKey(stores.pool, stores.redis, workspace.id, keyId), true);
  let r = await auth.authenticate(`Bearer ${token}`);
  while (!(r instanceof ApiError) && Date.now() - t0 < 1_000) {
    await new Promise((res) => setTimeout(res, 5));
    r = await auth.authenticate(`Bearer ${token}`);
  }
  assertCode(r, 'invalid_api_key');
  assert.ok(Date.now() - t0 < 1_000);
});

/** A findKey whose first call reads the row, then waits for `release` before answering. */
function heldLookup() {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let readRow!: () => void;
  const rowRead = new Promise<void>((r) => (readRow = r));
  let calls = 0;
  const findKey = async (hash: Buffer) => {
    const first = calls++ === 0;
    const rec = await findKeyByHash(stores.pool, hash);
    if (first) {
      readRow();
      await released;
    }
    return rec;
  };
  return { findKey, release, rowRead, calls: () => calls };
}

test('a revocation that lands while the lookup is in flight is not undone by caching the old row', async () => {
  const held = heldLookup();
  const { auth, sub } = await open(30_000, { findKey: held.findKey });
  const { workspace, token, keyId } = await stores.workspace();
  const inflight = auth.authenticate(`Bearer ${token}`);
  assert.ok(inflight instanceof Promise);
  await held.rowRead; // the query has read the live row

  const seen = revocationSeen(sub);
  await revokeApiKey(stores.pool, stores.redis, workspace.id, keyId);
  await seen;
  held.release();
  const stale = await inflight;
  assert.ok(!(stale instanceof ApiError), 'the caller who asked before the revocation gets the row it read');

  // Right after the revocation, not 30 s later: the stale row was not cached.
  assertCode(await auth.authenticate(`Bearer ${token}`), 'invalid_api_key');
  assert.equal(held.calls(), 2, 'the next request queried again');
});

/**
 * A key's lookup is held after reading the live row while `revoke` takes the key away (resolving
 * once the Authenticator has seen it): a request arriving after that must not join the held
 * lookup, and neither it nor any later one gets the key's principal.
 */
async function requestAfterRevocation(
  revoke: (sub: Redis, workspaceId: string, keyId: string) => Promise<void>,
): Promise<void> {
  const held = heldLookup();
  const { auth, sub } = await open(30_000, { findKey: held.findKey });
  const { workspace, token, keyId } = await stores.workspace();
  const inflight = auth.authenticate(`Bearer ${token}`);
  await held.rowRead;
  await revoke(sub, workspace.id, keyId);

  const after = auth.authenticate(`Bearer ${token}`);
  assert.notEqual(after, inflight);
  assertCode(await after, 'invalid_api_key');
  held.release();
  await inflight;
  assertCode(await auth.authenticate(`Bearer ${token}`), 'invalid_api_key');
}

test('a request arriving after the revocation does not join the lookup that started before it', () =>
  requestAfterRevocation(async (sub, workspaceId, keyId) => {
    const seen = revocationSeen(sub);
    await revokeApiKey(stores.pool, stores.redis, workspaceId, keyId);
    await seen;
  }));

test('20,000 random well-formed tokens leave at most maxMisses negative entries', async () => {
  const maxMisses = 1_000;
  const concurrency = 4;
  // A stopped clock: on a busy machine the 20,000 lookups can outlast the real key's 30 s TTL.
  const { auth } = await open(30_000, { maxMisses, maxConcurrentLookups: concurrency, now: () => 1_000_000 });
  const { token } = await stores.workspace();
  await auth.authenticate(`Bearer ${token}`);
  const t0 = Date.now();
  for (let i = 0; i < 20_000; i += concurrency) {
    const batch = [];
    for (let j = 0; j < concurrency; j++) batch.push(Promise.resolve(auth.authenticate(`Bearer ${randomToken()}`)));
    for (const r of await Promise.all(batch)) assertCode(r, 'invalid_api_key');
  }
  const ms = Date.now() - t0;
  const sizes = auth.cacheSizes;
  console.log(`# 20k random tokens in ${ms} ms; sizes ${JSON.stringify(sizes)}`);
  assert.ok(sizes.misses <= maxMisses, `misses ${sizes.misses} > ${maxMisses}`);
  assert.ok(sizes.misses > 0);
  assert.equal(sizes.keys, 1);
  assert.equal(sizes.lookups, 0);
  assert.ok(!(auth.authenticate(`Bearer ${token}`) instanceof Promise), 'the real key stayed cached');
});

test('misses beyond maxConcurrentLookups are refused at once with service_unavailable', async () => {
  const { auth } = await open(30_000, { maxConcurrentLookups: 3 });
  const answers = Array.from({ length: 50 }, () => auth.authenticate(`Bearer ${randomToken()}`));
  const pending = answers.filter((a) => a instanceof Promise);
  assert.equal(pending.length, 3);
  for (const a of answers) if (!(a instanceof Promise)) assertCode(a, 'service_unavailable');
  assert.equal(auth.cacheSizes.lookups, 3);
  for (const r of await Promise.all(pending)) assertCode(r, 'invalid_api_key');
  assert.equal(auth.cacheSizes.lookups, 0);
  assert.ok(auth.authenticate(`Bearer ${randomToken()}`) instanceof Promise, 'capacity is back once they finish');
});

test('expired entries are swept as new ones arrive', async () => {
  // A clock of the test's own: on a busy machine the 100 lookups can outlast a real 40 ms TTL.
  let clock = 1_000_000;
  const { auth } = await open(40, { maxConcurrentLookups: 100, now: () => clock });
  await Promise.all(Array.from({ length: 100 }, async () => auth.authenticate(`Bearer ${randomToken()}`)));
  assert.equal(auth.cacheSizes.misses, 100);
  clock += 60;
  await auth.authenticate(`Bearer ${randomToken()}`);
  assert.equal(auth.cacheSizes.misses, 1);
});

test('the plans cache is bounded, and a reconnected subscriber clears every cache', async () => {
  const { auth, sub } = await open(30_000, { maxPlans: 3 });
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push((await stores.workspace(i % 2 === 0 ? 'free' : 'growth')).workspace.id);
  for (const id of ids) assert.ok((await auth.planOf(id)) !== undefined);
  assert.equal(auth.cacheSizes.plans, 3);
  assert.equal(await auth.planOf(ids[4]!), 'free');

  const { token } = await stores.workspace();
  await auth.authenticate(`Bearer ${token}`);
  assert.ok(!(auth.authenticate(`Bearer ${token}`) instanceof Promise));
  const ready = once(sub, 'ready');
  sub.disconnect(true);
  await ready;
  assert.deepEqual(auth.cacheSizes, { keys: 0, misses: 0, plans: 0, lookups: 0 });
  assert.ok(auth.authenticate(`Bearer ${token}`) instanceof Promise, 'looked up again after the reconnect');
});

test('a request arriving after a workspace delete does not join the lookup that started before it', () =>
  requestAfterRevocation(async (sub, workspaceId) => {
    // What the control API's delete does: mark the workspace, then publish on the plan channel.
    await stores.pool.query('UPDATE workspaces SET deleted_at = now() WHERE id = $1', [workspaceId]);
    const seen = revocationSeen(sub, PLAN_CHANGED_CHANNEL);
    await stores.redis.publish(PLAN_CHANGED_CHANNEL, workspaceId);
    await seen;
  }));

test('a plan change published on Redis reaches the cached principal at once, not after the TTL', async () => {
  const { auth } = await open(30_000);
  await auth.subscribed;
  const { workspace, token } = await stores.workspace('free');
  const other = await stores.workspace('free');
  const first = await auth.authenticate(`Bearer ${token}`);
  assert.ok(!(first instanceof ApiError));
  assert.equal(first.plan, 'free');
  await auth.authenticate(`Bearer ${other.token}`);
  await stores.pool.query(`UPDATE workspaces SET plan = 'scale' WHERE id = $1`, [workspace.id]);
  assert.equal((auth.authenticate(`Bearer ${token}`) as { plan: string }).plan, 'free', 'cached until told');
  await stores.redis.publish(PLAN_CHANGED_CHANNEL, workspace.id);
  const deadline = Date.now() + 1_000;
  let plan = 'free';
  while (plan !== 'scale' && Date.now() < deadline) {
    const p = await auth.authenticate(`Bearer ${token}`);
    if (!(p instanceof ApiError)) plan = p.plan!;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(plan, 'scale');
  // Other workspaces' entries stay cached (answered synchronously).
  assert.ok(!(auth.authenticate(`Bearer ${other.token}`) instanceof Promise));
});
