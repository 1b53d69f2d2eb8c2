import { formatRfc3339, validateMeterEvent } from '@meterd/core/event';
import { hashKey } from '@meterd/core/keys';
import { isMain, keep, measure, print, type MicroResult } from './harness.js';

/**
 * core's per-event work on the accept path: JSON.parse of one event, validateMeterEvent on it (with
 * and without occurred_at, which costs an RFC 3339 parse), and the SHA-256 of the API key that
 * authentication does per request before its cache lookup.
 */
export function run(): MicroResult[] {
  const now = Date.now();
  const at = formatRfc3339(now - 1_000);
  const texts = Array.from(
    { length: 1024 },
    (_, i) =>
      `{"workspace_id":"ws_abcdefghijklmnop","event_type":"checkout.completed","quantity":1,"gmv_cents":${1000 + i},"currency":"USD","idempotency_key":"order-${i}-2f1c","occurred_at":"${at}"}`,
  );
  const docs = texts.map((t) => JSON.parse(t) as Record<string, unknown>);
  const noTime = docs.map((d) => {
    const c = { ...d };
    delete c.occurred_at;
    return c;
  });
  const token = 'sks_' + 'a'.repeat(40);
  const batches = Array.from({ length: 9 }, (_, k) => `{"events":[${texts.slice(k * 100, k * 100 + 100).join(',')}]}`);
  return [
    measure('JSON.parse(one event)', (i) => JSON.parse(texts[i & 1023]!)),
    measure('validateMeterEvent (with occurred_at)', (i) => validateMeterEvent(docs[i & 1023], now)),
    measure('validateMeterEvent (no occurred_at)', (i) => validateMeterEvent(noTime[i & 1023], now)),
    measure(
      'JSON.parse + validate, per event of a 100-event batch',
      (i) => {
        const b = JSON.parse(batches[i % 9]!) as { events: unknown[] };
        for (const e of b.events) keep(validateMeterEvent(e, now));
        return b;
      },
      1_000,
      100,
    ),
    measure('hashKey (SHA-256 of the API key)', () => hashKey(token)),
  ];
}

if (isMain(import.meta.url)) print(run());
