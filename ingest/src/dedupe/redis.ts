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
import { periodOf } from '@meterd/core/plans';
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
const SPLIT_LUA = `
-- The n parts of s, a '\\n'-joined list (idempotency keys cannot hold control characters); nil when s
-- does not hold exactly n, so a malformed argument claims or stores nothing.
local function split(s, n)
  local out, pos = {}, 1
  for i = 1, n do
    if pos > #s + 1 then return nil end
    local e = string.find(s, '\\n', pos, true) or (#s + 1)
    out[i] = string.sub(s, pos, e - 1)
    pos = e + 1
  end
  if pos ~= #s + 2 then return nil end
  return out
end
`;
const TIER_LUA = `${SPLIT_LUA}
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

/** Quota counters outlive their month by a little, so a late read of last period still works. */
const QUOTA_TTL_SECONDS = 40 * 86_400;
/**
 * Quota reservations (docs/redis.md, "Counting quota"). The period's counter (`…:q:<YYYYMM>`) counts
 * committed events only; claims not yet committed or released are held in the hash `<counter>:p`,
 * field = claim token, value = `<expires ms>:<keys>`, and count against the limit until their
 * claims' pending TTL has passed (Redis's clock, like the claims' PX). A claim whose commit never
 * comes (its process died, or its request was answered 503) stops counting by itself.
 */
const RESERVE_LUA = `
local function clockMs()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end
-- Keys reserved by live claims; expired fields are dropped on the way.
local function reserved(q, now)
  local k, n = q .. ':p', 0
  local all = redis.call('HGETALL', k)
  for j = 1, #all, 2 do
    local c = string.find(all[j + 1], ':', 1, true)
    if tonumber(string.sub(all[j + 1], 1, c - 1)) <= now then
      redis.call('HDEL', k, all[j])
    else
      n = n + tonumber(string.sub(all[j + 1], c + 1))
    end
  end
  return n
end
local function reserve(q, token, n, now, ms)
  local k = q .. ':p'
  local v = redis.call('HGET', k, token)
  if v then n = n + tonumber(string.sub(v, string.find(v, ':', 1, true) + 1)) end
  redis.call('HSET', k, token, (now + ms) .. ':' .. n)
  if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, ms) end
end
-- Gives back n keys of the token's reservation (all of it at 0 or below: the group is over).
local function unreserve(q, token, n)
  local k = q .. ':p'
  local v = redis.call('HGET', k, token)
  if not v then return end
  local c = string.find(v, ':', 1, true)
  local left = tonumber(string.sub(v, c + 1)) - n
  if left > 0 then redis.call('HSET', k, token, string.sub(v, 1, c) .. left) else redis.call('HDEL', k, token) end
end
`;

// ARGV: limit, pendingMs, token, now, slotSec, slots, useTier, registry generation, the keys' MD5s
// end to end (16 bytes per key), the keys (`event_type:idempotency_key`) joined by '\n', their
// number. Packed, not one argument per key: the client's per-argument encoding was the largest CPU
// item of a batch claim (bench/micro/dedupe.ts).
// KEYS: quota, tier base, the workspace's marker, the hot keys' common prefix; the hot keys are that
// prefix and a key, all in the workspace's slot (its hash tag).
// No marker means the workspace's counters and tier are not to be trusted (docs/redis.md): the
// call fails with EPOCH. The answer's last element holds flags: 'R' when the marker says
// `<gen>:r:<token>` (the tier is being rebuilt: the caller also asks ClickHouse about every new
// key), 'G' when the marker's generation is not the registry's (the registry lost its data: the
// caller registers the workspace again before anything claimed here is acknowledged).
const CLAIM = `${TIER_LUA}${RESERVE_LUA}
local marker = redis.call('GET', KEYS[3])
if not marker then return redis.error_reply('EPOCH') end
local flags = ''
if string.find(marker, ':r:', 17, true) then flags = 'R' end
if string.sub(marker, 1, 16) ~= ARGV[8] then flags = flags .. 'G' end
local n = tonumber(ARGV[11])
local hot = split(ARGV[10], n)
if not hot then return redis.error_reply('PACKING') end
local limit = tonumber(ARGV[1])
-- committed events, and claims of any process not yet committed (RESERVE_LUA)
local nowMs = clockMs()
local used = tonumber(redis.call('GET', KEYS[1]) or '0') + reserved(KEYS[1], nowMs)
local metas = {}
if ARGV[7] == '1' then metas = tierBuckets(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])) end
local out = {}
local added = 0
local vals = {}
-- keys without a hot row are looked up in the tier together (its filters: one call per slot)
local misses, fs = {}, {}
for i = 1, n do
  hot[i] = KEYS[4] .. hot[i]
  vals[i] = redis.call('GET', hot[i])
  if not vals[i] and #metas > 0 then
    misses[#misses + 1] = i
    fs[#fs + 1] = string.sub(ARGV[9], (i - 1) * 16 + 1, i * 16)
  end
end
local hs = {}
if #fs > 0 then
  local found = tierFindAll(metas, fs)
  for j = 1, #misses do hs[misses[j]] = found[j] end
end
for i = 1, n do
  local v = vals[i]
  local h = hs[i]
  if v then
    out[i] = v
  elseif h then
    out[i] = 'S:' .. h
  elseif limit >= 0 and used + added >= limit then
    out[i] = 'Q'
  else
    redis.call('SET', hot[i], ARGV[3], 'PX', ARGV[2])
    added = added + 1
    out[i] = ''
  end
end
if added > 0 then reserve(KEYS[1], ARGV[3], added, nowMs, tonumber(ARGV[2])) end
out[n + 1] = tostring(used + added)
out[n + 2] = flags
return out`;

// A key whose claim expired is committed all the same (the event is durable); a key another
// request re-claimed or committed meanwhile is left to that request. The token ANY_PENDING takes
// any pending claim (start-up repair of spooled events whose commit a crash prevented), but never
// overwrites a stored row.
// ARGV: token, hotSec, now, slotSec, window, bucketFields, the keys' MD5s end to end, then the keys,
// the rows and the occurred hours, each list joined by '\n' (packed as in the claim), and their number.
// The token 'T:' only adds the keys to the tier (rebuilding it from ClickHouse); keys and rows are ignored.
// KEYS: tier base, the hot keys' common prefix, the period's quota counter.
// Each key stored here counts once on the counter, and its claim's reservation is given back
// (RESERVE_LUA): the counter holds exactly the events whose rows are durable. With ANY_PENDING
// (start-up repair) a key counts only if it was pending or is new to the tier: one whose hot row
// merely expired was counted by its own commit.
const COMMIT = `${TIER_LUA}${RESERVE_LUA}
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
-- Calls from Lua cost more than the work of most of them (bench/micro/dedupe.ts: a commit cost 3× a
-- claim per key): the filter's bits are set in one BITFIELD per FILTER_CHUNK at the end, and a
-- bucket is checked for being new (its first field: give it the slot's expiry) once per call, not
-- once per key it gains (a migrated bucket's 64 fields land in a few).
local FILTER_CHUNK = 1000
local offsets = {}
local checked = {}
local function put(f, v)
  local p = prefix32(f)
  local b = slotPrefix .. math.floor(p / div)
  if filter then offsets[#offsets + 1] = math.floor(p / fdiv) end
  local added = redis.call('HSETNX', b, f, v)
  if added == 1 then
    if not checked[b] then
      checked[b] = true
      if redis.call('HLEN', b) == 1 then redis.call('EXPIRE', b, ttl) end
    end
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
local nk = tonumber(ARGV[11])
local hours = split(ARGV[10], nk)
local keys, rows = nil, nil
if ARGV[1] ~= TIER_ONLY then
  keys = split(ARGV[8], nk)
  rows = split(ARGV[9], nk)
end
if not hours or (ARGV[1] ~= TIER_ONLY and not (keys and rows)) then return redis.error_reply('PACKING') end
local inserted = 0
local counted = 0
for i = 1, nk do
  if ARGV[1] == TIER_ONLY then
    inserted = inserted + put(string.sub(ARGV[7], (i - 1) * 16 + 1, i * 16), tonumber(hours[i]) - hourBase)
  else
    local k = KEYS[2] .. keys[i]
    local v = redis.call('GET', k)
    if not v or v == ARGV[1] or (ARGV[1] == 'P:*' and string.sub(v, 1, 2) == 'P:') then
      redis.call('SET', k, rows[i], 'EX', ARGV[2])
      local new = put(string.sub(ARGV[7], (i - 1) * 16 + 1, i * 16), tonumber(hours[i]) - hourBase)
      inserted = inserted + new
      if ARGV[1] ~= 'P:*' or v or new == 1 then counted = counted + 1 end
    end
  end
end
if counted > 0 then
  redis.call('INCRBY', KEYS[#KEYS], counted)
  redis.call('EXPIRE', KEYS[#KEYS], ${QUOTA_TTL_SECONDS})
end
if ARGV[1] ~= TIER_ONLY and ARGV[1] ~= 'P:*' then unreserve(KEYS[#KEYS], ARGV[1], nk) end
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
if filter then
  for c = 1, #offsets, FILTER_CHUNK do
    local args = {}
    for j = c, math.min(c + FILTER_CHUNK - 1, #offsets) do
      args[#args + 1] = 'SET'
      args[#args + 1] = 'u1'
      args[#args + 1] = offsets[j]
      args[#args + 1] = 1
    end
    redis.call('BITFIELD', filter, unpack(args))
  end
  if nk > 0 then redis.call('EXPIRE', filter, ttl) end
end
return inserted`;

// Only this request's own pending claims are freed; its reservation gives back every key named
// (a key whose claim expired meanwhile was reserved all the same).
// KEYS: the period's quota counter, the hot keys' common prefix. ARGV: token, the keys joined by
// '\n', their number.
const RELEASE = `${SPLIT_LUA}${RESERVE_LUA}
local n = tonumber(ARGV[3])
local keys = split(ARGV[2], n)
if not keys then return redis.error_reply('PACKING') end
local freed = 0
for i = 1, n do
  local k = KEYS[2] .. keys[i]
  if redis.call('GET', k) == ARGV[1] then
    redis.call('DEL', k)
    freed = freed + 1
  end
end
unreserve(KEYS[1], ARGV[1], n)
return freed`;

type Arg = string | number | Buffer;
type Scripted = Redis & {
  meterdClaim4(...args: Arg[]): Promise<string[]>;
  meterdCommit4(...args: Arg[]): Promise<number>;
  meterdRelease2(...args: Arg[]): Promise<number>;
  meterdGeneration1(...args: Arg[]): Promise<string>;
  meterdRelabel1(...args: Arg[]): Promise<null>;
  meterdRebuilt1(...args: Arg[]): Promise<number>;
  meterdRenew1(...args: Arg[]): Promise<number>;
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
   * The key hash: 16 bytes as a latin1 string (one character per byte). Tests shorten it to force
   * collisions: the "maybe" a compact tier must settle exactly.
   */
  hash?: (key: string) => string;
}

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
/** Extends a rebuild's mark, only its own (a newer loss or rebuild wins): 1 if extended. */
const RENEW = `
local m = redis.call('GET', KEYS[1])
if m and string.sub(m, 17) == ':r:' .. ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0`;
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

/**
 * A latin1 string rather than a Buffer: a Buffer per digest (an ArrayBuffer each) cost ~2× the
 * string's time per key in bench/micro/dedupe.ts (hashes), and both land in one Buffer anyway.
 */
export function md5Key(key: string): string {
  return hash('md5', key, 'binary');
}

export class RedisDeduper implements Deduper {
  private readonly r: Scripted;
  private readonly prefix: string;
  private readonly clock: () => number;
  private readonly hash: (key: string) => string;
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
    // The number of keys is fixed per script, so a call's first argument is its first key: with
    // auto-pipelining on a Redis Cluster, ioredis groups a call with others by the slot of its
    // first argument (a key count there put calls for workspaces on different nodes in one
    // pipeline, which failed whole: claims, commits and releases lost at random).
    for (const [name, lua, numberOfKeys] of [
      ['meterdClaim4', CLAIM, 4],
      ['meterdCommit4', COMMIT, 3],
      ['meterdRelease2', RELEASE, 2],
      ['meterdGeneration1', GENERATION, 1],
      ['meterdRelabel1', RELABEL, 1],
      ['meterdRebuilt1', REBUILT, 1],
      ['meterdRenew1', RENEW, 1],
    ] as const) {
      if (!(name in redis)) redis.defineCommand(name, { lua, numberOfKeys });
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
    for (let i = 0; i < keys.length; i++) out.write(this.hash(keys[i]!), 16 * i, 16, 'latin1');
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
    this.opts.roundTrips?.inc();
    const sent = Date.now();
    this.claimsSent++;
    let out: string[];
    try {
      out = await this.r.meterdClaim4(
        this.quotaKey(req.workspaceId, req.period),
        this.tierBase(req.workspaceId),
        dedupeEpochMarker(this.prefix, req.workspaceId),
        this.dedupeKey(req.workspaceId, ''),
        req.limit ?? -1,
        this.opts.pendingTtlMs,
        req.token,
        Math.floor(this.clock() / 1000),
        this.slotSeconds,
        SLOTS,
        req.skipTier === true ? '0' : '1',
        gen.id,
        hashes,
        keys.join('\n'),
        n,
      );
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
    period: string,
    keys: string[],
    rows: string[],
    token: string,
    hours?: number[],
    hashes?: Buffer,
  ): Promise<void> {
    // Hours since the epoch of each row's occurred_at: the ClickHouse lookup of a later duplicate prunes by it.
    const base = this.tierBase(workspaceId);
    const hot = this.dedupeKey(workspaceId, '');
    const quota = this.quotaKey(workspaceId, period);
    const all = hashes ?? this.hashes(keys);
    for (let c = 0; c < keys.length; c += MAX_KEYS_PER_CALL) {
      const end = Math.min(c + MAX_KEYS_PER_CALL, keys.length);
      const whole = c === 0 && end === keys.length;
      const k = whole ? keys : keys.slice(c, end);
      const r = whole ? rows : rows.slice(c, end);
      const h = hours === undefined ? r.map(occurredHour) : whole ? hours : hours.slice(c, end);
      this.opts.roundTrips?.inc();
      await this.r.meterdCommit4(
        base,
        hot,
        quota,
        token,
        this.opts.hotSeconds,
        Math.floor(this.clock() / 1000),
        this.slotSeconds,
        this.opts.windowSeconds,
        BUCKET_FIELDS,
        all.subarray(16 * c, 16 * end),
        k.join('\n'),
        r.join('\n'),
        h.join('\n'),
        end - c,
      );
    }
  }

  recommit(workspaceId: string, period: string, keys: string[], rows: string[]): Promise<void> {
    return this.commit(workspaceId, period, keys, rows, ANY_PENDING);
  }

  /**
   * The registry's generation, read now (created by the first ingest that finds none: at start, or
   * after the node holding the registry lost its data). One read at a time per deduper.
   */
  generation(): Promise<Generation> {
    this.genRead ??= (async () => {
      try {
        const at = Date.now();
        const v = await this.r.meterdGeneration1(
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
    await this.r.meterdRelabel1(dedupeEpochMarker(this.prefix, workspaceId), g.id);
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
   * Marks the workspace's counters rebuilt and its tier being rebuilt by `token`, for `ttlSeconds`
   * (renewed while the rebuild makes progress): if the rebuilding process dies, the mark lapses and
   * the next claim recovers again.
   */
  async markRebuilding(workspaceId: string, token: string, ttlSeconds: number): Promise<void> {
    const g = await this.register(workspaceId);
    await this.r.set(dedupeEpochMarker(this.prefix, workspaceId), `${g.id}:r:${token}`, 'EX', ttlSeconds);
  }

  /**
   * Extends the `:r:` mark of the rebuild `token` by `ttlSeconds` from now, while that rebuild
   * makes progress. False if the mark is no longer its own (the slot lost its data again, or
   * another rebuild took over): the rebuild then has nothing to finish.
   */
  async renewRebuilding(workspaceId: string, token: string, ttlSeconds: number): Promise<boolean> {
    return (await this.r.meterdRenew1(dedupeEpochMarker(this.prefix, workspaceId), token, ttlSeconds)) === 1;
  }

  /**
   * Marks the tier rebuilt by `token` complete, with no expiry (a marker that lapsed would send an
   * active workspace through recovery). Only over that rebuild's own mark: if the slot lost its
   * data again meanwhile, the tier just rebuilt is not the one to trust. True if marked.
   */
  async markRebuilt(workspaceId: string, token: string): Promise<boolean> {
    const g = await this.generation();
    return (await this.r.meterdRebuilt1(dedupeEpochMarker(this.prefix, workspaceId), g.id, token)) === 1;
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
      // declared with the script's keys only: a tier insert counts nothing
      periodOf(this.clock()),
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
    const hot = this.dedupeKey(workspaceId, '');
    const quota = this.quotaKey(workspaceId, period);
    for (let c = 0; c < keys.length; c += MAX_KEYS_PER_CALL) {
      const part = keys.slice(c, c + MAX_KEYS_PER_CALL);
      this.opts.roundTrips?.inc();
      await this.r.meterdRelease2(quota, hot, token, part.join('\n'), part.length);
    }
  }
}

/** Hours since the epoch of a compact row's occurred_at (its fifth field, in seconds). */
function occurredHour(compact: string): number {
  let p = -1;
  for (let i = 0; i < 4; i++) p = compact.indexOf('|', p + 1);
  return Math.floor(Number(compact.slice(p + 1, compact.indexOf('|', p + 1))) / 3600);
}
