import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request, Agent } from 'node:http';
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { startTestIngest, event } from './helpers.js';

/**
 * Pre-auth work is bounded (issue 12, item 5). Attacks: a client without a valid key sends a 1 MiB
 * body, and a flood of random well-formed `sks_` tokens costs a Postgres lookup each, starving the
 * lookups of valid keys whose cache entry expired. Defences: the key is checked from the headers
 * before the body is read (401, connection closed), and unknown keys are rationed per client
 * address (429 too_many_auth_failures with Retry-After) while other addresses keep metering.
 * Loopback has a whole /8, so the flood comes from 127.0.0.2 and the legitimate client from 127.0.0.1.
 */
let stores: TestStores;
let ingest: Awaited<ReturnType<typeof startTestIngest>>;
let port: number;

before(async () => {
  stores = await openTestStores('preauth');
  // A 50 ms key cache: the valid key's entry keeps expiring, so it needs lookups during the flood.
  ingest = await startTestIngest(stores, {
    KEY_CACHE_TTL_MS: '50',
    AUTH_FAILURE_BURST: '20',
    AUTH_FAILURE_RATE_PER_SECOND: '2',
  });
  port = ingest.port;
});
after(async () => {
  await ingest.close(0);
  await stores.close();
});

const randomToken = (): string => `sks_${randomBytes(32).toString('base64url')}`;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function send(
  path: string,
  body: string,
  token: string,
  localAddress: string,
  agent?: Agent,
  o: { port?: number; forwardedFor?: string } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    };
    if (o.forwardedFor !== undefined) headers['x-forwarded-for'] = o.forwardedFor;
    const req = request(
      { host: '127.0.0.1', port: o.port ?? port, path, method: 'POST', localAddress, agent: agent ?? false, headers },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
      },
    );
    // The server may answer and close before the body is sent: that is the point, not an error.
    req.on('error', (err: NodeJS.ErrnoException) =>
      err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err),
    );
    req.end(body);
  });
}

/**
 * Sends the headers of a 1 MiB POST and only the first KiB of its body, then waits for an answer.
 * Resolves with what the server wrote and whether it closed the connection; the rest of the body is
 * never sent, so an answer proves the server did not wait for (or read) it.
 */
function headersOnly(authorization: string | undefined): Promise<{ response: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    let response = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer within 5 s; got ${JSON.stringify(response)}`));
    }, 5_000);
    s.setEncoding('utf8');
    s.on('data', (c: string) => (response += c));
    s.on('end', () => {
      clearTimeout(timer);
      s.destroy();
      resolve({ response, closed: true });
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.on('connect', () => {
      s.write(
        `POST /api/v1/meter/batch HTTP/1.1\r\nHost: ingest\r\n${authorization === undefined ? '' : `Authorization: ${authorization}\r\n`}Content-Type: application/json\r\nContent-Length: ${1 << 20}\r\n\r\n`,
      );
      s.write(`{"events":[${' '.repeat(1024)}`);
    });
  });
}

test('a 1 MiB body without a valid key is answered 401 before the client has sent it, and the connection is closed', async () => {
  for (const [what, authz] of [
    ['no key', undefined],
    ['a malformed key', 'Bearer nope'],
    ['an unknown well-formed key', `Bearer ${randomToken()}`],
  ] as const) {
    const { response, closed } = await headersOnly(authz);
    assert.match(response, /^HTTP\/1\.1 401 /, `${what}: ${response}`);
    assert.match(response, /"code":"(missing_api_key|invalid_api_key)"/, what);
    assert.ok(closed, `${what}: the server closes the connection instead of reading the body`);
  }
  // Legitimate use: a valid key with a body sent in full is stored.
  const { workspace, token } = await stores.workspace('growth');
  const ok = await send('/api/v1/meter', JSON.stringify(event(workspace.id, 'preauth-ok')), token, '127.0.0.1');
  assert.equal(ok.status, 202, ok.body);
});

test('a valid key that needs a lookup still gets its body read after the key is known (big batch, cold cache)', async () => {
  const { workspace, token } = await stores.workspace('growth');
  const events = Array.from({ length: 100 }, (_, i) => event(workspace.id, `cold-${i}`));
  // Whitespace makes the body ~500 KB, so it arrives in many chunks while the lookup runs.
  const body = `{"events":${JSON.stringify(events)}${' '.repeat(500_000)}}`;
  const res = await send('/api/v1/meter/batch', body, token, '127.0.0.1');
  assert.equal(res.status, 202, res.body);
  assert.equal(JSON.parse(res.body).accepted, 100);
});

test('a flood of random tokens from one address is cut off with 429 + Retry-After, while valid keys keep getting 202', async () => {
  const { workspace, token } = await stores.workspace('enterprise');
  const floodAgent = new Agent({ keepAlive: false, maxSockets: 64 });
  const tally = new Map<string, number>();
  let retryAfter: string | undefined;
  let stop = false;
  const flood = (async () => {
    const workers = Array.from({ length: 32 }, async () => {
      while (!stop) {
        const r = await send('/api/v1/meter', '{}', randomToken(), '127.0.0.2', floodAgent);
        const code = (JSON.parse(r.body) as { error: { code: string } }).error.code;
        tally.set(code, (tally.get(code) ?? 0) + 1);
        if (code === 'too_many_auth_failures') retryAfter = r.headers['retry-after'] as string;
      }
    });
    await Promise.all(workers);
  })();

  // Meanwhile the legitimate client meters with a key whose cache entry keeps expiring.
  const statuses: number[] = [];
  const t0 = Date.now();
  for (let i = 0; i < 150; i++) {
    const r = await send('/api/v1/meter', JSON.stringify(event(workspace.id, `flood-${i}`)), token, '127.0.0.1');
    statuses.push(r.status);
    if (i % 10 === 0) await new Promise((res) => setTimeout(res, 60));
  }
  const elapsedS = (Date.now() - t0) / 1000;
  stop = true;
  await flood;
  floodAgent.destroy();

  assert.deepEqual([...new Set(statuses)], [202], `every valid request was accepted: ${statuses.join(',')}`);
  const limited = tally.get('too_many_auth_failures') ?? 0;
  const looked = tally.get('invalid_api_key') ?? 0;
  assert.ok(limited > looked, `most of the flood was refused without a lookup: ${JSON.stringify([...tally])}`);
  // Lookups the flood cost: its first wave (32 at once, before any had failed), its burst, and its refill over the run.
  assert.ok(looked <= 32 + 20 + Math.ceil(2 * (elapsedS + 1)), `the flood cost ${looked} lookups in ${elapsedS} s`);
  assert.ok(Number(retryAfter) >= 1, `429 carries Retry-After (got ${retryAfter})`);
  assert.deepEqual([...tally.keys()].sort(), ['invalid_api_key', 'too_many_auth_failures']);
});

test('behind a trusted proxy each forwarded client has its own budget; a client cannot escape its budget by writing X-Forwarded-For', async () => {
  const proxied = await startTestIngest(stores, {
    TRUSTED_PROXIES: '127.0.0.1',
    AUTH_FAILURE_BURST: '2',
    AUTH_FAILURE_RATE_PER_SECOND: '1',
  });
  try {
    const unknown = (from: string, forwardedFor: string) =>
      send('/api/v1/meter', '{}', randomToken(), from, undefined, { port: proxied.port, forwardedFor });
    /** Unknown keys until the first 429 (at most 10: the budget refills by one a second). */
    const drain = async (from: string, forwardedFor: string): Promise<number> => {
      for (let i = 1; i <= 10; i++) if ((await unknown(from, forwardedFor)).status === 429) return i;
      return 0;
    };
    assert.ok((await drain('127.0.0.1', '198.51.100.7, 10.0.0.1')) > 0, 'the forwarded client 10.0.0.1 is rationed');
    assert.equal((await unknown('127.0.0.1', '10.0.0.2')).status, 401, 'another forwarded client is not');
    assert.ok((await drain('127.0.0.2', '10.0.0.3')) > 0, 'an untrusted peer is rationed by its own address');
    assert.equal((await unknown('127.0.0.2', '10.0.0.4')).status, 429, 'whatever X-Forwarded-For it writes');
  } finally {
    await proxied.close(0);
  }
});

/** One request over a raw connection that starts with a PROXY protocol v2 header claiming `claimed` as the client. */
function sendViaProxyHeader(claimed: string, localAddress: string): Promise<number> {
  const header = Buffer.alloc(28);
  Buffer.from('0d0a0d0a000d0a515549540a', 'hex').copy(header, 0);
  header[12] = 0x21; // version 2, PROXY
  header[13] = 0x11; // TCP over IPv4
  header.writeUInt16BE(12, 14);
  claimed.split('.').forEach((o, i) => (header[16 + i] = Number(o)));
  [127, 0, 0, 1].forEach((o, i) => (header[20 + i] = o));
  header.writeUInt16BE(40000, 24);
  header.writeUInt16BE(port, 26);
  const http = `POST /api/v1/meter HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${randomToken()}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`;
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, localAddress }, () =>
      s.end(Buffer.concat([header, Buffer.from(http)])),
    );
    let answer = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (answer += d));
    s.on('error', reject);
    s.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0)));
  });
}

test('an untrusted peer cannot pick its address with a PROXY protocol header: a flood claiming a new source per connection is still rationed', async () => {
  const statuses: number[] = [];
  for (let i = 0; i < 60 && !statuses.includes(429); i++) {
    statuses.push(await sendViaProxyHeader(`198.51.${(i >> 8) & 255}.${i & 255}`, '127.0.0.4'));
  }
  assert.ok(statuses.includes(429), `never rationed: ${statuses.join(',')}`);
  assert.ok(
    statuses.every((s) => s === 401 || s === 429),
    statuses.join(','),
  );
});
