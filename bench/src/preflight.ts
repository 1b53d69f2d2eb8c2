import { BenchError } from './errors.js';
import { DEFAULT_REDIS_KEY_PREFIX, dedupeEpochMarker } from '@meterd/core/contracts';
import type { Redis } from '@meterd/core/store';
import type { Tenant } from './load/workloads.js';

/**
 * Before any load: is the target there, is it a meterd ingest, and does it take the key? The key
 * check posts an empty event, which a valid key gets a 400 for and which stores nothing.
 */
export async function preflight(baseUrl: string, tenant: Tenant): Promise<void> {
  try {
    const res = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(5_000) });
    await res.arrayBuffer();
  } catch (err) {
    const c = (err as { cause?: { code?: string; message?: string } }).cause;
    const cause = c?.code ?? c?.message ?? (err as Error).message;
    throw new BenchError(
      'METERD_BENCH_TARGET_UNREACHABLE',
      `cannot reach ${baseUrl} (${cause}): is ingest running there? Start it, or omit --target to let the bench start its own`,
      err,
    );
  }
  let res: Response;
  try {
    res = await fetch(`${baseUrl}/api/v1/meter`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
      body: '{}',
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    throw new BenchError(
      'METERD_BENCH_TARGET_UNREACHABLE',
      `${baseUrl}/api/v1/meter did not answer: ${(err as Error).message}`,
      err,
    );
  }
  const text = await res.text();
  let code = '';
  let message = '';
  try {
    const e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
    code = e?.code ?? '';
    message = e?.message ?? '';
  } catch {
    // not JSON: not a meterd ingest
  }
  if (res.status === 401 || res.status === 403) {
    throw new BenchError(
      'METERD_BENCH_KEY_REFUSED',
      `${baseUrl} refused the API key (${res.status} ${code}: ${message}). Pass a live key with the meter:write scope for workspace ${tenant.workspaceId}`,
    );
  }
  if (res.status !== 400 || code === '') {
    throw new BenchError(
      'METERD_BENCH_TARGET_REFUSED',
      `${baseUrl}/api/v1/meter answered ${res.status} to a probe; expected a meterd ingest's 400 (got ${JSON.stringify(text.slice(0, 200))})`,
    );
  }
}

/**
 * Sends single events for `tenant` until one is stored (202), at most `maxMs`; returns how long it
 * took. A workspace that Redis never saw but ClickHouse holds events of (a --preload) first goes
 * through ingest's dedupe recovery (docs/redis.md: its quota counter and dedupe tier are rebuilt
 * from ClickHouse, and claims get 503 meanwhile). That is a one-off per workspace, not what a run
 * measures, so the bench waits it out before the load: until an event is stored and `rebuilt`
 * says the recovery finished (until then every new key is also looked up in ClickHouse). The
 * events carry their own event type, so no probe or verification counts them.
 */
export async function warmUp(
  baseUrl: string,
  tenant: Tenant,
  tag: string,
  maxMs: number,
  rebuilt: () => Promise<boolean> = async () => true,
): Promise<number> {
  const t0 = Date.now();
  let stored = false;
  for (let i = 0; ; i++) {
    const body = JSON.stringify({
      workspace_id: tenant.workspaceId,
      event_type: 'bench.warmup',
      quantity: 1,
      gmv_cents: 0,
      currency: 'USD',
      idempotency_key: `warm-${tag}-${i}`,
    });
    let status = 0;
    try {
      const res = await fetch(`${baseUrl}/api/v1/meter`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(30_000),
      });
      await res.arrayBuffer();
      status = res.status;
    } catch {
      // a timeout while the recovery scans: try again
    }
    stored ||= status === 202;
    if (stored && (await rebuilt())) return Date.now() - t0;
    if (Date.now() - t0 > maxMs)
      throw new BenchError(
        'METERD_BENCH_TARGET_REFUSED',
        `${baseUrl} stored no event of ${tenant.workspaceId} within ${maxMs} ms (last answer ${status || 'none'})`,
      );
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * True once ingest's recovery of the workspace is complete: its marker in Redis no longer says
 * `<generation>:r:<token>` (tier being rebuilt from ClickHouse; core's dedupeEpochMarker).
 */
export function recoveryDone(redis: Redis, workspaceId: string, prefix: string | undefined): () => Promise<boolean> {
  const key = dedupeEpochMarker(prefix || DEFAULT_REDIS_KEY_PREFIX, workspaceId);
  return async () => {
    const v = await redis.get(key);
    return v !== null && !v.includes(':r');
  };
}
