// Runnable: METERD_URL=http://127.0.0.1:8080 METERD_API_KEY=sks_… METERD_WORKSPACE=ws_… node client/dist/examples/meter.js 1000
import { MeterdClient } from '@meterd/client';

const client = new MeterdClient({
  baseUrl: process.env.METERD_URL ?? 'http://127.0.0.1:8080',
  apiKey: process.env.METERD_API_KEY ?? '',
  workspaceId: process.env.METERD_WORKSPACE ?? '',
  // Ctrl-C or SIGTERM still sends what is queued before the process exits.
  flushOnSignals: true,
  onQuota: (q) => {
    if (q.remaining !== null && q.remaining < 50) console.warn(`only ${q.remaining} events left this period`);
  },
});

const n = Number(process.argv[2] ?? 100);
const runId = Date.now().toString(36);
const results = await Promise.all(
  Array.from({ length: n }, (_, i) =>
    client.meter({
      event_type: 'checkout.completed',
      gmv_cents: 4299,
      currency: 'EUR',
      // Your own id for the event (an order id): retries, here or in the client, count it once.
      idempotency_key: `order_${runId}_${i}`,
    }),
  ),
);
await client.close();
const tally: Record<string, number> = {};
for (const r of results) tally[r.status] = (tally[r.status] ?? 0) + 1;
console.log(JSON.stringify({ ...tally, quota: client.quota }));
