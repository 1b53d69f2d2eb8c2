import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Loop } from './loop.js';

/** Resolves when `cond()` holds; fails after `ms` naming what it waited for. */
async function until(what: string, cond: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

test('stop() during a tick in flight waits for it, and the loop never re-arms', async () => {
  let release!: () => void;
  let ticks = 0;
  const loop = new Loop(
    async () => {
      ticks++;
      await new Promise<void>((r) => (release = r));
    },
    { intervalMs: 0, onError: () => {} },
  ).start();
  await until('the first tick', () => ticks === 1);
  let stopped = false;
  const stopping = loop.stop().then(() => (stopped = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(stopped, false, 'stop() resolved while the tick was still running');
  release();
  await stopping;
  // A re-armed timer would run a second tick at once (intervalMs 0) and keep the loop alive.
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(ticks, 1);
});

test('a tick sees its signal aborted on stop(), so a long wait ends at once', async () => {
  let aborted = false;
  let started = false;
  const loop = new Loop(
    async (signal) => {
      started = true;
      await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
      aborted = signal.aborted;
    },
    { intervalMs: 60_000, onError: () => {} },
  ).start();
  await until('the tick', () => started);
  await loop.stop();
  assert.equal(aborted, true);
});

test('errors are reported with the failure count and back off; a success resets the count', async () => {
  const seen: number[] = [];
  const delays: number[] = [];
  let n = 0;
  const loop = new Loop(
    async () => {
      n++;
      if (n <= 3) throw new Error(`boom ${n}`);
    },
    {
      intervalMs: 0,
      onError: (_err, failures) => seen.push(failures),
      errorDelayMs: (failures) => {
        delays.push(failures);
        return 0;
      },
    },
  ).start();
  await until('a success after three failures', () => n >= 5);
  await loop.stop();
  assert.deepEqual(seen, [1, 2, 3]);
  assert.deepEqual(delays, [1, 2, 3]);
});

test('wake() during a tick runs one more tick right after it, not two at once', async () => {
  let running = 0;
  let maxRunning = 0;
  let ticks = 0;
  let release!: () => void;
  const loop = new Loop(
    async () => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      ticks++;
      if (ticks === 1) await new Promise<void>((r) => (release = r));
      running--;
    },
    { intervalMs: 60_000, onError: () => {} },
  ).start();
  await until('the first tick', () => ticks === 1);
  loop.wake();
  loop.wake();
  release();
  await until('the second tick', () => ticks === 2);
  await loop.stop();
  assert.equal(maxRunning, 1);
  assert.equal(ticks, 2);
});

test('a tick may choose the delay before the next one', async () => {
  let ticks = 0;
  const loop = new Loop(
    async () => {
      ticks++;
      return ticks < 3 ? 0 : 60_000;
    },
    { intervalMs: 60_000, onError: () => {} },
  ).start();
  await until('three ticks', () => ticks === 3);
  await loop.stop();
  assert.equal(ticks, 3);
});

test('a tick that returns null ends the loop: no further tick, stop() still resolves', async () => {
  let ticks = 0;
  const loop = new Loop(
    async () => {
      ticks++;
      return ticks === 2 ? null : 0;
    },
    { intervalMs: 0, onError: () => {} },
  ).start();
  await until('the loop to end itself', () => loop.isStopped);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(ticks, 2);
  await loop.stop();
});
