import { rateLimitKey } from '@meterd/core/contracts';
import { ApiError } from '@meterd/core/errors';
import { type Redis } from '@meterd/core/store';

/**
 * Reads, refills and takes one token atomically, on Redis's clock (so replicas whose clocks
 * disagree still refill a bucket alike). Returns {1, 0} when a token was taken, else {0, ms until
 * one is available}. The key expires once the bucket would be full again: it then holds nothing.
 */
const TAKE = `
local burst = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * per_ms)
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / per_ms) + 1000)
if taken == 1 then return {1, 0} end
return {0, math.ceil((1 - tokens) / per_ms)}
`;

type Scripted = Redis & { meterdTakeToken(key: string, burst: number, perMs: number): Promise<[number, number]> };

/**
 * A token bucket per client address in Redis, shared by every control-api process: the limit
 * holds for the deployment, not per replica. Redis unavailable means the request is refused
 * (503), never let through unlimited.
 */
export class RedisTokenBuckets {
  private readonly r: Scripted;
  private readonly perMs: number;

  /** `name` tells the limits apart (signup, dashboard sign-in); `prefix` is the deployment's Redis key prefix. */
  constructor(
    redis: Redis,
    private readonly prefix: string,
    private readonly name: string,
    private readonly burst: number,
    perMinute: number,
  ) {
    if (!('meterdTakeToken' in redis)) redis.defineCommand('meterdTakeToken', { numberOfKeys: 1, lua: TAKE });
    this.r = redis as Scripted;
    this.perMs = perMinute / 60_000;
  }

  key(address: string): string {
    return rateLimitKey(this.prefix, this.name, address);
  }

  /** Takes one token for `address`, or throws rate_limited with the seconds until one is available. */
  async take(address: string): Promise<void> {
    let res: [number, number];
    try {
      res = await this.r.meterdTakeToken(this.key(address), this.burst, this.perMs);
    } catch (err) {
      throw new ApiError('service_unavailable', 'the rate limiter (Redis) is unavailable; retry later', undefined, {
        retryable: true,
        cause: err,
      });
    }
    if (res[0] === 1) return;
    const retryAfter = Math.max(1, Math.ceil(res[1] / 1000));
    throw Object.assign(new ApiError('rate_limited', `too many requests from this address; retry in ${retryAfter} s`), {
      retryAfter,
    });
  }
}
