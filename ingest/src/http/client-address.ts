import type { HttpRequest, HttpResponse } from 'uWebSockets.js';

/**
 * The address a request's per-client limits apply to. Only a peer in TRUSTED_PROXIES may name the
 * client: by a PROXY protocol header (uWS parses one from any connection, so an untrusted peer's
 * would let it pick a fresh address per connection) or by X-Forwarded-For, walked from the right
 * past hops that are trusted proxies themselves (load balancer → front router → ingest). IPv6
 * clients count per /64, the block one subscriber gets. Read only off the hot path: it allocates.
 */
export function clientAddress(res: HttpResponse, req: HttpRequest, trusted: (address: string) => boolean): string {
  const peer = Buffer.from(res.getRemoteAddressAsText()).toString('latin1');
  if (!trusted(peer)) return bucketOf(peer);
  const proxied = Buffer.from(res.getProxiedRemoteAddressAsText()).toString('latin1');
  if (proxied !== '') return bucketOf(proxied);
  const hops = req.getHeader('x-forwarded-for').split(',');
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!.trim();
    if (hop !== '' && !trusted(hop)) return bucketOf(hop);
  }
  return bucketOf(peer);
}

/** IPv4 as it is (an IPv4-mapped IPv6 address as its IPv4 form); IPv6 as its /64 prefix. */
export function bucketOf(address: string): string {
  if (!address.includes(':')) return address;
  const groups = expandIpv6(address);
  if (groups === undefined) return address;
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `${groups[6]! >> 8}.${groups[6]! & 255}.${groups[7]! >> 8}.${groups[7]! & 255}`;
  }
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

function expandIpv6(address: string): number[] | undefined {
  let text = address;
  let tail: number[] = [];
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    tail = [(a << 8) | b, (c << 8) | d];
    text = text.slice(0, v4.index) + '0';
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((h) => parseInt(h, 16)));
  const left = parse(head);
  const right = rest === undefined ? [] : parse(rest);
  if (tail.length > 0) (rest === undefined ? left : right).pop();
  const fill = 8 - tail.length - left.length - right.length;
  if (fill < 0 || (rest === undefined && fill !== 0)) return undefined;
  const groups = [...left, ...Array<number>(fill).fill(0), ...right, ...tail];
  return groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : undefined;
}
