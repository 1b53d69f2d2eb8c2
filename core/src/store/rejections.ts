import { rejectionsKey } from '../contracts/redis-keys.js';
import { Loop } from '../loop.js';
import type { Redis } from './redis.js';

/** How long a rejection is listed (the list's TTL, refreshed by each write, and a filter on read). */
export const REJECTIONS_KEPT_MS = 7 * 86_400_000;
/** Most rejections listed per workspace: the list is trimmed to this on every write. */
export const REJECTIONS_PER_WORKSPACE = 1_000;
/** Most rejections buffered between flushes per process; beyond, they are counted as dropped, never queued. */
const BUFFER_MAX = 10_000;

/** One rejected event as the event explorer lists it. */
export interface Rejected {
  /** Epoch ms at which ingest refused it. */
  at: number;
  code: string;
  message: string;
  field?: string;
  event_type?: string;
  idempotency_key?: string;
}

/**
 * Ingest's record of recent rejections, off the request path: `record` only appends to an
 * in-memory buffer, and a Loop writes the buffer every `flushMs`, per workspace one MULTI of LPUSH,
 * LTRIM to REJECTIONS_PER_WORKSPACE and PEXPIRE to REJECTIONS_KEPT_MS (auto-pipelined). Memory and
 * Redis stay bounded whatever the flood: the buffer holds at most BUFFER_MAX entries, each list
 * REJECTIONS_PER_WORKSPACE. Best effort by design: a failed flush or a crash loses at most one
 * buffer of diagnostics, never an event.
 */
export class RejectionLog {
  private buffer: [string, string][] = [];
  private readonly loop: Loop;
  /** Rejections not recorded because the buffer was full (a gauge for operators). */
  dropped = 0;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    flushMs: number,
    onError: (err: unknown) => void,
  ) {
    this.loop = new Loop(() => this.flush(), { intervalMs: flushMs, onError }).start(flushMs);
  }

  record(workspaceId: string, r: Rejected): void {
    if (this.buffer.length >= BUFFER_MAX) {
      this.dropped++;
      return;
    }
    this.buffer.push([workspaceId, JSON.stringify(r)]);
  }

  async flush(): Promise<void> {
    if (this.buffer.length === 0) return;
    const batch = this.buffer;
    this.buffer = [];
    const byWorkspace = new Map<string, string[]>();
    for (const [ws, entry] of batch) {
      const list = byWorkspace.get(ws);
      if (list === undefined) byWorkspace.set(ws, [entry]);
      else list.push(entry);
    }
    // One transaction per workspace: its list is in the workspace's hash slot, and a Redis Cluster
    // refuses a pipeline or transaction whose keys span slots on several nodes.
    const writes: Promise<unknown>[] = [];
    for (const [ws, entries] of byWorkspace) {
      const key = rejectionsKey(this.prefix, ws);
      writes.push(
        this.redis
          .multi()
          // LPUSH of many puts the last one first: newest first, like the explorer lists them.
          .lpush(key, ...entries.slice(-REJECTIONS_PER_WORKSPACE))
          .ltrim(key, 0, REJECTIONS_PER_WORKSPACE - 1)
          .pexpire(key, REJECTIONS_KEPT_MS)
          .exec()
          .then((results) => {
            const failed = results?.find(([err]) => err !== null)?.[0];
            if (failed) throw failed;
          }),
      );
    }
    const failed = (await Promise.allSettled(writes)).find((r) => r.status === 'rejected');
    if (failed) throw new Error('writing rejected events to Redis', { cause: failed.reason });
  }

  /** Stops the loop and writes what is buffered. */
  async close(): Promise<void> {
    await this.loop.stop();
    await this.flush();
  }
}

/** The workspace's recent rejections, newest first, at most `limit`, none older than REJECTIONS_KEPT_MS. */
export async function readRejections(
  redis: Redis,
  prefix: string,
  workspaceId: string,
  limit: number,
  now = Date.now(),
): Promise<Rejected[]> {
  const raw = await redis.lrange(rejectionsKey(prefix, workspaceId), 0, limit - 1);
  const since = now - REJECTIONS_KEPT_MS;
  return raw.map((s) => JSON.parse(s) as Rejected).filter((r) => r.at >= since);
}
