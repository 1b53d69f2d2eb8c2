import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { MeterdClient } from '@meterd/client';

/**
 * The catalog's `acp-handler`, as the local driver runs it: an Agentic Commerce Protocol checkout
 * endpoint that, when a checkout completes, meters it as GMV through meterd's client library
 * (idempotent on the checkout id, so a retried completion is counted once; concurrent completions
 * share a batch; 503s and network errors are retried; SIGTERM flushes what is queued). Config comes
 * from the provisioning request: METER_URL, METER_WORKSPACE_ID, METER_API_KEY; PORT from the driver.
 */
const METER_URL = process.env.METER_URL ?? '';
const WORKSPACE = process.env.METER_WORKSPACE_ID ?? '';
const KEY = process.env.METER_API_KEY ?? '';
const PORT = Number(process.env.PORT ?? 8080);
if (METER_URL === '' || WORKSPACE === '' || KEY === '') {
  console.error('acp-handler: METER_URL, METER_WORKSPACE_ID and METER_API_KEY are required');
  process.exit(1);
}

const meterd = new MeterdClient({
  baseUrl: METER_URL,
  apiKey: KEY,
  workspaceId: WORKSPACE,
  // A completion waits for its answer: a short batching delay keeps that wait small.
  flushIntervalMs: 5,
  maxAttempts: 5,
});

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  let raw = '';
  for await (const chunk of req) {
    raw += chunk;
    if (raw.length > 65_536) throw new Error('body too large');
  }
  return JSON.parse(raw || '{}') as Record<string, unknown>;
}

const server = createServer((req, res) => {
  const m = /^\/checkout_sessions\/([A-Za-z0-9_-]{1,100})\/complete$/.exec(req.url ?? '');
  if (req.method === 'GET' && req.url === '/healthz') return send(res, 200, { status: 'ok' });
  if (req.method !== 'POST' || m === null)
    return send(res, 404, { error: { code: 'not_found', message: 'no such route' } });
  readJson(req)
    .then(async (b) => {
      const total = b.total_cents;
      if (!Number.isSafeInteger(total) || (total as number) < 0)
        return send(res, 400, {
          error: { code: 'invalid_field', message: 'total_cents must be a whole number', field: 'total_cents' },
        });
      const metered = await meterd
        .meter({
          event_type: 'checkout.completed',
          quantity: 1,
          gmv_cents: total as number,
          currency: typeof b.currency === 'string' ? b.currency.toUpperCase() : 'USD',
          idempotency_key: `checkout_${m[1]}`,
        })
        .catch((err: { code?: string }) => ({ status: 'failed' as const, code: err.code ?? 'network_error' }));
      const ok = metered.status === 'accepted' || metered.status === 'duplicate';
      send(res, ok ? 200 : 502, {
        id: m[1],
        status: ok ? 'completed' : 'metering_failed',
        meter_status: metered.status,
        ...('code' in metered ? { meter_error: metered.code } : {}),
      });
    })
    .catch(() => send(res, 400, { error: { code: 'invalid_json', message: 'the body is not valid JSON' } }));
});
server.listen(PORT, process.env.HOST ?? '0.0.0.0');
process.on('SIGTERM', () => server.close(() => void meterd.close().finally(() => process.exit(0))));
