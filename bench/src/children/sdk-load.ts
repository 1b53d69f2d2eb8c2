import { MeterdClient } from '@meterd/client';

/**
 * One @meterd/client process metering as fast as batching allows, for the SDK comparison
 * (sdk-compare.ts). The producer keeps up to WINDOW events unanswered (meter() itself waits when
 * the client's queue is full) and counts the answers received within DURATION_MS. Prints one
 * JSON line: events acknowledged, seconds, this process's CPU time.
 */
const env = process.env;
const durationMs = Number(env.DURATION_MS);
const tag = env.TAG ?? 'sdk';
const WINDOW = 20_000;
const client = new MeterdClient({
  baseUrl: env.BASE_URL!,
  apiKey: env.API_KEY!,
  workspaceId: env.WORKSPACE_ID!,
  concurrency: Number(env.CONCURRENCY ?? 16),
  maxQueued: WINDOW,
  maxAttempts: 20,
});
const occurredAt = env.OCCURRED_AT!;
let acked = 0;
let rejected = 0;
let open = 0;
let wake: (() => void) | undefined;
const cpu0 = process.cpuUsage();
const t0 = Date.now();
const end = t0 + durationMs;
let i = 0;
while (Date.now() < end) {
  if (open >= WINDOW) {
    await new Promise<void>((r) => (wake = r));
    continue;
  }
  open++;
  void client.meter({ event_type: 'bench.sdk', idempotency_key: `${tag}-${i++}`, occurred_at: occurredAt }).then(
    (r) => {
      if (Date.now() <= end) {
        if (r.status === 'rejected') rejected++;
        else acked++;
      }
      if (--open < WINDOW / 2 && wake) {
        const w = wake;
        wake = undefined;
        w();
      }
    },
    () => {
      rejected++;
      open--;
    },
  );
  // Let answers in: a producer that never yields would only fill the queue.
  if (i % 500 === 0) await new Promise((r) => setImmediate(r));
}
const seconds = (Date.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
await client.close();
process.stdout.write(
  `${JSON.stringify({ acked, rejected, sent: i, seconds, cpuSec: (cpu.user + cpu.system) / 1e6 })}\n`,
);
