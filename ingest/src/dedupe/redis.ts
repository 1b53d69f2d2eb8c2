import { hash, randomBytes } from 'node:crypto';
import {
  DEFAULT_REDIS_KEY_PREFIX,
  dedupeEpochMarker,
  dedupeKey,
  dedupeRegistryKey,
  dedupeTierBase,
  quotaKey,
} from '@meterd/core/contracts';
import { type Counter } from '@meterd/core/metrics';
import { type Redis } from '@meterd/core/store';
import { DedupeEpochError, type ClaimRequest, type ClaimResult, type Deduper } from './deduper.js';

/**
 * Redis dedupe in two layers (docs/redis.md):
 *
 * - the *hot* key `…:d:<event_type>:<idempotency_key>` holds a pending claim (`P:<token>`, for
 *   DEDUPE_PENDING_TTL_MS) and then the committed compact row for DEDUPE_HOT_SECONDS, long enough
 *   for the spool to ship it: a retry in that time is answered from Redis alone;
 * - the *tier* remembers every committed key for the whole DEDUPE_WINDOW_SECONDS in ~25 bytes: a
 *   16-byte MD5 of `event_type:idempotency_key` and the hour of its occurred_at, as fields of small
 *   listpack hashes. A key found only there answers `S:<hours>`; the caller fetches the original
 *   row from ClickHouse by (workspace, hour, event_type, idempotency_key), the prefix of the events
 *   sort key, and treats a row that is not there as a hash collision (a "maybe"), storing the event.
 *
 * The tier is cut into 6 time slots of window/5 each (a 35-day window: weeks), so a slot expires
 * whole, 1 slot after the window has passed over it (memory held ~1.1 × the window), and a lookup
 * reads at most the 6 slots that can still hold a key of this window. Inside a slot, the hash's
 * first 32 bits pick one of 2^bits buckets. A slot starts with its predecessor's bits (a steady
 * workload never grows) and, when it holds more than BUCKET_FIELDS × 2^bits keys, moves to 4×
 * the buckets, migrating one old bucket per key it inserts, so lookups read at most 2 buckets per
 * slot and every bucket stays a listpack (Redis's default hash-max-listpack-entries is 128).
 *
 * One Lua call per workspace per tick claims every key of that tick and moves the quota counter,
 * atomically (measured when ingest was designed: ~150–230k keys/s per call of 100 vs ~11k/s for
 * awaited SET NX). Keys carry the `{workspace_id}` hash tag, so one call's keys share a Redis
 * Cluster slot; the tier's bucket keys are built inside the scripts from a base passed as a key.
 */
const TIER_LUA = `
-- A slot's filter for 2^bits buckets: one bit per 2^(32 - bits - 9) of the hash prefix, so ~8 bits
-- per key at the 64 keys a bucket holds on average (capped at Redis's 2^32-bit strings).
local function filterDiv(bits)
  return 2 ^ (32 - math.min(bits + 9, 32))
end
-- Per slot that exists, newest first: bucket name prefix and divisor of its current buckets, of
-- the buckets it is migrating from (and how many of those are done), its first hour, and the
-- filters of both bucket sets (nil for a slot written before slots had filters).
local function tierBuckets(base, now, slotSec, nslots)
  local cur = math.floor(now / slotSec)
  local metas = {}
  for s = cur, cur - nslots + 1, -1 do
    local m = redis.call('HMGET', base .. s, 'b', 'ob', 'oc', 'f')
    if m[1] then
      local bits = tonumber(m[1])
      local t = { base .. s .. ':' .. bits .. ':', 2 ^ (32 - bits), nil, nil, 0, math.floor(s * slotSec / 3600) }
      if m[4] then
        t[7] = base .. s .. ':' .. bits .. ':f'
        t[8] = filterDiv(bits)
      end
      if m[2] then
        local ob = tonumber(m[2])
        t[3] = base .. s .. ':' .. ob .. ':'
        t[4] = 2 ^ (32 - ob)
        t[5] = tonumber(m[3])
        if m[4] then
          t[9] = base .. s .. ':' .. ob .. ':f'
          t[10] = filterDiv(ob)
        end
      end
      metas[#metas + 1] = t
    end
  end
  return metas
end
local function prefix32(f)
  local a, b, c, d = string.byte(f, 1, 4)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
-- The hours a bucket field holds, absolute: relative to the slot's first hour (a 2-byte listpack
-- integer), several comma-separated only when different keys' hashes collided.
local function hoursOf(v, base)
  if not string.find(v, ',', 1, true) then return tonumber(v) + base end
  local hs = {}
  for h in string.gmatch(v, '[^,]+') do hs[#hs + 1] = tonumber(h) + base end
  return table.concat(hs, ',')
end
-- Each candidate's bit in one bucket set's filter, all in one call (nil: the set has no filter).
local function filterBits(key, div, ps)
  if not key then return nil end
  local args = {}
  for j = 1, #ps do
    args[3 * j - 2] = 'GET'
    args[3 * j - 1] = 'u1'
    args[3 * j] = math.floor(ps[j] / div)
  end
  return redis.call('BITFIELD_RO', key, unpack(args))
end
-- The stored hours of each key hash in fs (nil: not in the tier). A key is looked for in a bucket
-- only if its bucket set's filter has its bit, and the filters of a slot are read for all keys in
-- one call: a new key costs a few bits per slot, not a scan of a 64-field listpack per slot.
local function tierFindAll(metas, fs)
  local ps = {}
  for j = 1, #fs do ps[j] = prefix32(fs[j]) end
  local cur, old = {}, {}
  for i = 1, #metas do
    cur[i] = filterBits(metas[i][7], metas[i][8], ps)
    if metas[i][3] then old[i] = filterBits(metas[i][9], metas[i][10], ps) end
  end
  local found = {}
  for j = 1, #fs do
    local p, f = ps[j], fs[j]
    for i = 1, #metas do
      local m = metas[i]
      local v = nil
      if not cur[i] or cur[i][j] == 1 then v = redis.call('HGET', m[1] .. math.floor(p / m[2]), f) end
      if not v and m[3] then
        local ob = math.floor(p / m[4])
        if ob >= m[5] and (not old[i] or old[i][j] == 1) then v = redis.call('HGET', m[3] .. ob, f) end
      end
      if v then
        found[j] = hoursOf(v, m[6])
        break
      end
    end
  end
  return found
end
`;

// ARGV: limit, pendingMs, quotaTtl, token, now, slotSec, slots, useTier, registry generation, the
// keys' MD5s end to end (one argument: 16 bytes per key).
// KEYS: quota, tier base, the workspace's marker, then the hot keys; all in the workspace's slot.
// No marker means the workspace's counters and tier are not to be trusted (docs/redis.md): the
// call fails with EPOCH. The answer's last element holds flags: 'R' when the marker says
// `<gen>:r:<token>` (the tier is being rebuilt: the caller also asks ClickHouse about every new
// key), 'G' when the marker's generation is not the registry's (the registry lost its data: the
// caller registers the workspace again before anything claimed here is acknowledged).
const CLAIM = `${TIER_LUA}
local marker = redis.call('GET', KEYS[3])
if not marker then return redis.error_reply('EPOCH') end
local flags = ''
if string.find(marker, ':r:', 17, true) then flags = 'R' end
if string.sub(marker, 1, 16) ~= ARGV[9] then flags = flags .. 'G' end
local limit = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local metas = {}
if ARGV[8] == '1' then metas = tierBuckets(KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])) end
local out = {}
local added = 0
local vals = {}
-- keys without a hot row are looked up in the tier together (its filters: one call per slot)
local misses, fs = {}, {}
for i = 4, #KEYS do
  vals[i] = redis.call('GET', KEYS[i])
  if not vals[i] and #metas > 0 then
    misses[#misses + 1] = i
    fs[#fs + 1] = string.sub(ARGV[10], (i - 4) * 16 + 1, (i - 3) * 16)
  end
end
local hs = {}
if #fs > 0 then
  local found = tierFindAll(metas, fs)
  for j = 1, #misses do hs[misses[j]] = found[j] end
end
for i = 4, #KEYS do
  local v = vals[i]
  local h = hs[i]
  if v then
    out[i - 3] = v
  elseif h then
    out[i - 3] = 'S:' .. h
  elseif limit >= 0 and used + added >= limit then
    out[i - 3] = 'Q'
  else
    redis.call('SET', KEYS[i], ARGV[4], 'PX', ARGV[2])
    added = added + 1
    out[i - 3] = ''
  end
end
if added > 0 then
  redis.call('INCRBY', KEYS[1], added)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
out[#KEYS - 2] = tostring(used + added)
out[#KEYS - 1] = flags
return out`;

// A key whose claim expired is committed all the same (the event is durable); a key another
// request re-claimed or committed meanwhile is left to that request. The token ANY_PENDING takes
// any pending claim (start-up repair of spooled events whose commit a crash prevented), but never
// overwrites a stored row.
// ARGV: token, hotSec, now, slotSec, window, bucketFields, the keys' MD5s end to end, then the
// rows, then the occurred hours.
// The token 'T:' only adds the keys to the tier (rebuilding it from ClickHouse); rows are ignored.
// KEYS: tier base, then the hot keys.
const COMMIT = `${TIER_LUA}
local TIER_ONLY = 'T:'
local base = KEYS[1]
local now = tonumber(ARGV[3])
local slotSec = tonumber(ARGV[4])
local cur = math.floor(now / slotSec)
local meta = base .. cur
-- every key of the slot lives until the window has passed over the slot's end
local ttl = (cur + 1) * slotSec + tonumber(ARGV[5]) - math.floor(now) + 3600
local m = redis.call('HMGET', meta, 'b', 'ob', 'oc', 'n', 'f')
local bits, ob, oc, n = tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4] or '0')
if not bits then
  -- one growth below the previous slot's size: a steady workload grows once per slot, a shrinking
  -- one does not keep sparse buckets
  bits = math.max(tonumber(redis.call('HGET', base .. (cur - 1), 'b') or '0') - 2, 0)
  redis.call('HSET', meta, 'b', bits, 'f', 1)
  redis.call('EXPIRE', meta, ttl)
  m[5] = '1'
end
local hourBase = math.floor(cur * slotSec / 3600)
local slotPrefix = base .. cur .. ':' .. bits .. ':'
local div = 2 ^ (32 - bits)
-- a slot written before slots had filters keeps none (its lookups read every bucket)
local filter = m[5] and (slotPrefix .. 'f')
local fdiv = filterDiv(bits)
local function put(f, v)
  local p = prefix32(f)
  local b = slotPrefix .. math.floor(p / div)
  if filter then redis.call('SETBIT', filter, math.floor(p / fdiv), 1) end
  local added = redis.call('HSETNX', b, f, v)
  if added == 1 then
    if redis.call('HLEN', b) == 1 then redis.call('EXPIRE', b, ttl) end
  else
    -- the hash is there already: a collision, or this key stored again in another hour (a retry
    -- after a collision was settled): keep every hour, so a lookup finds each row
    local old = redis.call('HGET', b, f)
    local v = tostring(v)
    if old ~= v and not string.find(',' .. old .. ',', ',' .. v .. ',', 1, true) then
      redis.call('HSET', b, f, old .. ',' .. v)
    end
  end
  return added
end
local nk = #KEYS - 1
local inserted = 0
for i = 1, nk do
  local v = nil
  if ARGV[1] ~= TIER_ONLY then v = redis.call('GET', KEYS[i + 1]) end
  if ARGV[1] == TIER_ONLY then
    inserted = inserted + put(string.sub(ARGV[7], (i - 1) * 16 + 1, i * 16), tonumber(ARGV[7 + nk + i]) - hourBase)
  elseif not v or v == ARGV[1] or (ARGV[1] == 'P:*' and string.sub(v, 1, 2) == 'P:') then
    redis.call('SET', KEYS[i + 1], ARGV[7 + i], 'EX', ARGV[2])
    inserted = inserted + put(string.sub(ARGV[7], (i - 1) * 16 + 1, i * 16), tonumber(ARGV[7 + nk + i]) - hourBase)
  end
end
n = n + inserted
-- migrate old buckets into the new ones, at least one per key inserted
if ob then
  local total = 2 ^ ob
  local todo = math.max(inserted, 1)
  while todo > 0 and oc < total do
    local old = base .. cur .. ':' .. ob .. ':' .. oc
    local all = redis.call('HGETALL', old)
    for j = 1, #all, 2 do put(all[j], all[j + 1]) end
    redis.call('DEL', old)
    oc = oc + 1
    todo = todo - 1
  end
  if oc >= total then
    redis.call('HDEL', meta, 'ob', 'oc')
    redis.call('DEL', base .. cur .. ':' .. ob .. ':f')
    ob = nil
  else
    redis.call('HSET', meta, 'oc', oc)
  end
end
if not ob and n > tonumber(ARGV[6]) * 2 ^ bits and bits < 30 then
  redis.call('HSET', meta, 'ob', bits, 'oc', 0, 'b', bits + 2)
end
redis.call('HSET', meta, 'n', n)
if filter and nk > 0 then redis.call('EXPIRE', filter, ttl) end
return inserted`;

// Only this request's own pending claims are freed.
const RELEASE = `
local freed = 0
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    freed = freed + 1
  end
end
if freed > 0 then redis.call('DECRBY', KEYS[1], freed) end
return freed`;

type Arg = string | number | Buffer;
type Scripted = Redis & {
  meterdClaim2(n: number, ...args: Arg[]): Promise<string[]>;
  meterdCommit2(n: number, ...args: Arg[]): Promise<number>;
  meterdRelease(n: number, ...args: Arg[]): Promise<number>;
  meterdGeneration(n: number, ...args: Arg[]): Promise<string>;
  meterdRelabel(n: number, ...args: Arg[]): Promise<null>;
  meterdRebuilt(n: number, ...args: Arg[]): Promise<number>;
};

/** The workspace registry's generation: a fresh one after the registry lost its data. */
export interface Generation {
  /** 16 hex characters: the prefix of every workspace marker written in this generation. */
  id: string;
  /** When it was created (ms since the epoch): workspaces registered before it are not listed. */
  birthMs: number;
}

export interface RedisDedupeOptions {
  windowSeconds: number;
  pendingTtlMs: number;
  /** How long a committed key keeps its whole row in Redis (duplicates answered without ClickHouse). */
  hotSeconds: number;
  /** Prefix of every key, so tests (and several deployments on one Redis) never collide. */
  prefix?: string;
  roundTrips?: Counter;
  /** Milliseconds since the epoch; tests move it to replay a retry weeks later. */
  clock?: () => number;
  /**
   * The key hash (16 bytes). Tests shorten it to force collisions: the "maybe" a compact tier
   * must settle exactly.
   */
  hash?: (key: string) => Buffer;
}

/** Quota counters outlive their month by a little, so a late read of last period still works. */
const QUOTA_TTL_SECONDS = 40 * 86_400;
/**
 * Keys per Lua call at most: a script blocks Redis while it runs, and V8 refuses calls with more
 * than ~125k spread arguments. A tick's keys of one workspace above this go in several calls.
 */
export const MAX_KEYS_PER_CALL = 1_000;
/** Commit token matching every pending claim (claim tokens are `P:<prefix>:<tick>`, never `P:*`). */
const ANY_PENDING = 'P:*';
const TIER_ONLY = 'T:';
/** How long a read of the registry's generation is used: claims wait for a fresher one past it. */
export const GENERATION_REFRESH_MS = 1_000;
/**
 * The registry's generation, created if missing (`HSETNX`): `<16 hex>:<birth ms>`. Single key, so
 * it runs on whichever node holds the registry.
 */
const GENERATION = `
redis.call('HSETNX', KEYS[1], '~gen', ARGV[1])
return redis.call('HGET', KEYS[1], '~gen')`;
/** Re-labels a workspace's marker with the registry's current generation (keeping a rebuild's suffix). */
const RELABEL = `
local m = redis.call('GET', KEYS[1])
if m and string.sub(m, 1, 16) ~= ARGV[1] then redis.call('SET', KEYS[1], ARGV[1] .. string.sub(m, 17), 'KEEPTTL') end`;
/** Marks a rebuilt workspace done, only over its own rebuild's mark (a newer loss or rebuild wins). */
const REBUILT = `
local m = redis.call('GET', KEYS[1])
if m and string.sub(m, 17) == ':r:' .. ARGV[2] then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0`;
/** Slots a lookup reads: the window is cut into SLOTS - 1 slot lengths, plus the current slot. */
const SLOTS = 6;
/**
 * Mean keys per bucket before a slot grows (to 4× the buckets). Half of Redis's default
 * hash-max-listpack-entries (128): bucket sizes scatter around their mean, and a bucket past the
 * limit would turn into a hash table at ~3× the bytes per key.
 */
export const BUCKET_FIELDS = 64;

export function md5Key(key: string): Buffer {
  return hash('md5', key, 'buffer');
}

export class RedisDeduper implements Deduper {
  private readonly r: Scripted;
  private readonly prefix: string;
  private readonly clock: () => number;
  private readonly hash: (key: string) => Buffer;
  private readonly slotSeconds: number;
  /** The registry's generation last read, and when (Date.now()). */
  private gen: Generation | undefined;
  private genAt = 0;
  private genRead: Promise<Generation> | undefined;
  /** When the last claim that Redis answered was sent (Date.now()), and claims awaiting an answer. */
  private lastClaimSent = 0;
  private claimsSent = 0;

  constructor(
    redis: Redis,
    private readonly opts: RedisDedupeOptions,
  ) {
    this.prefix = opts.prefix ?? DEFAULT_REDIS_KEY_PREFIX;
    this.clock = opts.clock ?? Date.now;
    this.hash = opts.hash ?? md5Key;
    this.slotSeconds = Math.ceil(opts.windowSeconds / (SLOTS - 1));
    for (const [name, lua] of [
      ['meterdClaim2', CLAIM],
      ['meterdCommit2', COMMIT],
      ['meterdRelease', RELEASE],
      ['meterdGeneration', GENERATION],
      ['meterdRelabel', RELABEL],
      ['meterdRebuilt', REBUILT],
    ] as const) {
      if (!(name in redis)) redis.defineCommand(name, { lua });
    }
    this.r = redis as Scripted;
  }

  dedupeKey(workspaceId: string, key: string): string {
    return dedupeKey(this.prefix, workspaceId, key);
  }

  quotaKey(workspaceId: string, period: string): string {
    return quotaKey(this.prefix, workspaceId, period);
  }

  tierBase(workspaceId: string): string {
    return dedupeTierBase(this.prefix, workspaceId);
  }

  /** The keys' MD5s end to end: one script argument instead of one per key. */
  hashes(keys: string[]): Buffer {
    const out = Buffer.allocUnsafe(16 * keys.length);
    for (let i = 0; i < keys.length; i++) this.hash(keys[i]!).copy(out, 16 * i, 0, 16);
    return out;
  }

  async claim(req: ClaimRequest): Promise<ClaimResult> {
    const hashes = req.hashes ?? this.hashes(req.keys);
    if (req.keys.length <= MAX_KEYS_PER_CALL) return this.claimChunk(req, req.keys, hashes);
    const parts: Promise<ClaimResult>[] = [];
    for (let i = 0; i < req.keys.length; i += MAX_KEYS_PER_CALL)
      parts.push(
        this.claimChunk(
          req,
          req.keys.slice(i, i + MAX_KEYS_PER_CALL),
          hashes.subarray(16 * i, 16 * (i + MAX_KEYS_PER_CALL)),
        ),
      );
    const done = await Promise.all(parts);
    // Redis runs the calls in order (one connection), so the last one saw every earlier increment.
    return {
      states: done.flatMap((d) => d.states),
      used: done.at(-1)!.used,
      rebuilding: done.some((d) => d.rebuilding === true),
    };
  }

  private async claimChunk(req: ClaimRequest, keys: string[], hashes: Buffer): Promise<ClaimResult> {
    const gen =
      this.gen !== undefined && Date.now() - this.genAt < GENERATION_REFRESH_MS ? this.gen : await this.generation();
    const n = keys.length;
    const args: Arg[] = new Array(n + 13);
    args[0] = this.quotaKey(req.workspaceId, req.period);
    args[1] = this.tierBase(req.workspaceId);
    args[2] = dedupeEpochMarker(this.prefix, req.workspaceId);
    for (let i = 0; i < n; i++) args[i + 3] = this.dedupeKey(req.workspaceId, keys[i]!);
    const a = n + 3;
    args[a] = req.limit ?? -1;
    args[a + 1] = this.opts.pendingTtlMs;
    args[a + 2] = QUOTA_TTL_SECONDS;
    args[a + 3] = req.token;
    args[a + 4] = Math.floor(this.clock() / 1000);
    args[a + 5] = this.slotSeconds;
    args[a + 6] = SLOTS;
    args[a + 7] = req.skipTier === true ? '0' : '1';
    args[a + 8] = gen.id;
    args[a + 9] = hashes;
    this.opts.roundTrips?.inc();
    const sent = Date.now();
    this.claimsSent++;
    let out: string[];
    try {
      out = await this.r.meterdClaim2(n + 3, ...args);
      this.lastClaimSent = Math.max(this.lastClaimSent, sent);
    } catch (err) {
      if ((err as Error).message.endsWith('EPOCH')) throw new DedupeEpochError(req.workspaceId);
      throw err;
    } finally {
      this.claimsSent--;
    }
    const flags = out[n + 1]!;
    // Before the caller acknowledges anything claimed here: a workspace that holds unshipped events
    // is always listed, so a later loss of its slot is never taken for a new workspace.
    if (flags.endsWith('G')) await this.register(req.workspaceId);
    return { states: out.slice(0, n), used: Number(out[n]), rebuilding: flags.startsWith('R') };
  }

  async commit(
    workspaceId: string,
    keys: string[],
    rows: string[],
    token: string,
    hours?: number[],
    hashes?: Buffer,
  ): Promise<void> {
    // Hours since the epoch of each row's occurred_at: the ClickHouse lookup of a later duplicate prunes by it.
    const base = this.tierBase(workspaceId);
    const all = hashes ?? this.hashes(keys);
    for (let c = 0; c < keys.length; c += MAX_KEYS_PER_CALL) {
      const k = keys.slice(c, c + MAX_KEYS_PER_CALL);
      const n = k.length;
      const args: Arg[] = new Array(3 * n + 8);
      args[0] = base;
      for (let i = 0; i < n; i++) args[i + 1] = this.dedupeKey(workspaceId, k[i]!);
      const a = n + 1;
      args[a] = token;
      args[a + 1] = this.opts.hotSeconds;
      args[a + 2] = Math.floor(this.clock() / 1000);
      args[a + 3] = this.slotSeconds;
      args[a + 4] = this.opts.windowSeconds;
      args[a + 5] = BUCKET_FIELDS;
      args[a + 6] = all.subarray(16 * c, 16 * (c + n));
      for (let i = 0; i < n; i++) {
        const row = rows[c + i]!;
        args[a + 7 + i] = row;
        args[a + 7 + n + i] = hours?.[c + i] ?? occurredHour(row);
      }
      this.opts.roundTrips?.inc();
      await this.r.meterdCommit2(n + 1, ...args);
    }
  }

  recommit(workspaceId: string, keys: string[], rows: string[]): Promise<void> {
    return this.commit(workspaceId, keys, rows, ANY_PENDING);
  }

  /**
   * The registry's generation, read now (created by the first ingest that finds none: at start, or
   * after the node holding the registry lost its data). One read at a time per deduper.
   */
  generation(): Promise<Generation> {
    this.genRead ??= (async () => {
      try {
        const at = Date.now();
        const v = await this.r.meterdGeneration(
          1,
          dedupeRegistryKey(this.prefix),
          `${randomBytes(8).toString('hex')}:${at}`,
        );
        const g = { id: v.slice(0, 16), birthMs: Number(v.slice(17)) };
        this.gen = g;
        this.genAt = at;
        return g;
      } finally {
        this.genRead = undefined;
      }
    })();
    return this.genRead;
  }

  /**
   * When the last claim that may have claimed something was sent: now while one awaits its answer.
   * A claim refused for want of a marker claimed nothing, so it does not count.
   */
  get lastClaimAt(): number {
    return this.claimsSent > 0 ? Date.now() : this.lastClaimSent;
  }

  /** Whether the workspace is listed in the registry, and the registry's generation. */
  async registryState(workspaceId: string): Promise<Generation & { listed: boolean }> {
    const g = await this.generation();
    const listed = (await this.r.hexists(dedupeRegistryKey(this.prefix), workspaceId)) === 1;
    return { ...g, listed };
  }

  /** Lists the workspace in the registry, then labels its marker (if any) with the generation. */
  async register(workspaceId: string): Promise<Generation> {
    const g = await this.generation();
    await this.r.hset(dedupeRegistryKey(this.prefix), workspaceId, '1');
    await this.r.meterdRelabel(1, dedupeEpochMarker(this.prefix, workspaceId), g.id);
    return g;
  }

  /**
   * Registers a workspace that has nothing to rebuild and marks it complete: `NX`, so a marker
   * another thread wrote meanwhile (a rebuild under way) is left alone.
   */
  async markFresh(workspaceId: string): Promise<void> {
    const g = await this.register(workspaceId);
    await this.r.set(dedupeEpochMarker(this.prefix, workspaceId), g.id, 'NX');
  }

  /**
   * Marks the workspace's counters rebuilt and its tier being rebuilt by `token`, for `ttlSeconds`:
   * if the rebuilding process dies, the mark lapses and the next claim recovers again.
   */
  async markRebuilding(workspaceId: string, token: string, ttlSeconds = 600): Promise<void> {
    const g = await this.register(workspaceId);
    await this.r.set(dedupeEpochMarker(this.prefix, workspaceId), `${g.id}:r:${token}`, 'EX', ttlSeconds);
  }

  /**
   * Marks the tier rebuilt by `token` complete, with no expiry (a marker that lapsed would send an
   * active workspace through recovery). Only over that rebuild's own mark: if the slot lost its
   * data again meanwhile, the tier just rebuilt is not the one to trust. True if marked.
   */
  async markRebuilt(workspaceId: string, token: string): Promise<boolean> {
    const g = await this.generation();
    return (await this.r.meterdRebuilt(1, dedupeEpochMarker(this.prefix, workspaceId), g.id, token)) === 1;
  }

  /** Raises the period's counter to at least `n` (never lowers what other ingests counted meanwhile). */
  async quotaAtLeast(workspaceId: string, period: string, n: number): Promise<void> {
    await this.r.eval(
      `if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end`,
      1,
      this.quotaKey(workspaceId, period),
      n,
      QUOTA_TTL_SECONDS,
    );
  }

  /** Adds stored keys to the tier only (rebuilding it from ClickHouse); `hours` of their occurred_at. */
  tierInsert(workspaceId: string, keys: string[], hours: number[]): Promise<void> {
    return this.commit(
      workspaceId,
      keys,
      keys.map(() => ''),
      TIER_ONLY,
      hours,
    );
  }

  async used(workspaceId: string, period: string): Promise<number> {
    return Number((await this.r.get(this.quotaKey(workspaceId, period))) ?? 0);
  }

  async release(workspaceId: string, period: string, keys: string[], token: string): Promise<void> {
    for (let c = 0; c < keys.length; c += MAX_KEYS_PER_CALL) {
      const args = [
        this.quotaKey(workspaceId, period),
        ...keys.slice(c, c + MAX_KEYS_PER_CALL).map((k) => this.dedupeKey(workspaceId, k)),
        token,
      ];
      this.opts.roundTrips?.inc();
      await this.r.meterdRelease(args.length - 1, ...args);
    }
  }
}

/** Hours since the epoch of a compact row's occurred_at (its fifth field, in seconds). */
function occurredHour(compact: string): number {
  let p = -1;
  for (let i = 0; i < 4; i++) p = compact.indexOf('|', p + 1);
  return Math.floor(Number(compact.slice(p + 1, compact.indexOf('|', p + 1))) / 3600);
}
