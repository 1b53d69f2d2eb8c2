import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { quotaKey } from '@meterd/core/contracts';
import { periodOf } from '@meterd/core/plans';
import { batchAcked, event, storedCounts, tempDir, until } from './helpers.js';
import { freePort, killHard, spawnIngest } from './processes.js';

/**
 * The quota counter counts each acknowledged event once and nothing else (docs/redis.md, "Counting
 * quota"): a claim whose process is killed before its events are durable, or whose request is
 * answered 503, never counts, even once the client's retry is claimed and stored.
 */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('quota-exact');
});
after(() => stores.close());

type Ev = Record<string, unknown>;

/** The keys answered 202; none if the connection failed (ingest down), after a short pause. */
async function send(url: string, token: string, events: Ev[]): Promise<string[]> {
  const keys = await batchAcked(url, token, events);
  if (keys === null) await new Promise((r) => setTimeout(r, 20));
  return keys ?? [];
}

test('kill -9 of ingest between claim and commit under load: the quota counter equals the acknowledged events exactly', async () => {
  const { workspace, token } = await stores.workspace('enterprise');
  const env = {
    ...stores.env,
    INGEST_PORT: String(await freePort()),
    INGEST_THREADS: '2',
    SPOOL_DIR: tempDir('quota-kill'),
    SHIP_INTERVAL_MS: '200',
    // Claims the killed process left pending lapse soon, so the retries below are claimed again.
    DEDUPE_PENDING_TTL_MS: '2000',
  };
  let ingest = await spawnIngest(env);
  const sent = new Map<string, Ev>();
  const acked = new Set<string>();
  let running = true;
  let seq = 0;
  const client = async (c: number) => {
    while (running) {
      const events = Array.from({ length: 20 }, () => event(workspace.id, `q${c}-${seq++}`));
      for (const e of events) sent.set(e.idempotency_key as string, e);
      for (const k of await send(ingest.url, token, events)) acked.add(k);
    }
  };
  const load = Promise.all(Array.from({ length: 12 }, (_, c) => client(c)));
  try {
    await until(
      async () => acked.size,
      (n) => n > 3_000,
      30_000,
      'load to be acknowledged',
    );
    await killHard(ingest.child);
    const ackedAtKill = acked.size;
    assert.ok(sent.size > ackedAtKill, 'events were in flight at the kill');
    ingest = await spawnIngest(env);
    await until(
      async () => acked.size,
      (n) => n > ackedAtKill + 500,
      30_000,
      'load on the restarted ingest',
    );
  } finally {
    running = false;
    await load;
  }
  // Every event not acknowledged is retried until it is: stored now, or a duplicate of one the
  // killed process made durable. Then every event sent was acknowledged exactly once as far as
  // the quota goes, however many claims it took.
  await until(
    async () => {
      const left = [...sent.keys()].filter((k) => !acked.has(k));
      for (let i = 0; i < left.length; i += 100)
        for (const k of await send(
          ingest.url,
          token,
          left.slice(i, i + 100).map((x) => sent.get(x)!),
        ))
          acked.add(k);
      return sent.size - acked.size;
    },
    (n) => n === 0,
    60_000,
    'every event to be acknowledged',
  );
  const counter = quotaKey(stores.redisPrefix, workspace.id, periodOf(Date.now()));
  try {
    await until(
      async () => Number(await stores.redis.get(counter)),
      (n) => n === acked.size,
      20_000,
      `the quota counter to equal the ${acked.size} acknowledged events`,
    );
    await until(
      () => storedCounts(stores, workspace.id),
      (s) => s.distinct === acked.size,
      30_000,
      'every acknowledged event in ClickHouse',
    );
    assert.equal(Number(await stores.redis.get(counter)), acked.size, 'and it stays there');
  } finally {
    await killHard(ingest.child);
  }
});
