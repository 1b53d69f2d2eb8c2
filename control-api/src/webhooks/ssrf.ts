import { lookup as dnsLookup } from 'node:dns';
import { isIP, BlockList, type LookupFunction } from 'node:net';
import { ApiError } from '@meterd/core/errors';

/**
 * Webhook URLs are chosen by customers, so a delivery must never reach the platform's own network:
 * https only, and no loopback, private, link-local (cloud metadata at 169.254.169.254), CGNAT,
 * multicast or unspecified address — checked on the literal host at creation and again on every
 * address DNS returns at delivery time (a name can be re-pointed after it was accepted).
 */
const blocked = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  blocked.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
  ['64:ff9b::', 96],
] as const)
  blocked.addSubnet(net, bits, 'ipv6');

export function isForbiddenAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family !== 6) return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return blocked.check(mapped[1]!, 'ipv4');
  return blocked.check(address, 'ipv6');
}

/** Checks a URL's shape and literal host when an endpoint is created. */
export function checkWebhookUrl(raw: string, allowPrivate: boolean): URL {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ApiError('invalid_field', 'url is not a valid URL', 'url');
  }
  if (u.username !== '' || u.password !== '')
    throw new ApiError('invalid_field', 'url must not carry credentials', 'url');
  if (allowPrivate) {
    if (u.protocol !== 'https:' && u.protocol !== 'http:')
      throw new ApiError('invalid_field', 'url must be http(s)', 'url');
    return u;
  }
  if (u.protocol !== 'https:') throw new ApiError('invalid_field', 'url must use https', 'url');
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host) !== 0 && isForbiddenAddress(host))
    throw new ApiError('invalid_field', 'url points at a private, loopback or link-local address', 'url');
  if (host === 'localhost' || host.endsWith('.localhost') || host.endsWith('.internal'))
    throw new ApiError('invalid_field', 'url points at a local name', 'url');
  return u;
}

/** Resolves a name the way the delivery will, refusing it if any address is forbidden. */
export async function checkResolvedHost(host: string): Promise<void> {
  const bare = host.replace(/^\[|\]$/g, '');
  if (isIP(bare) !== 0) {
    if (isForbiddenAddress(bare))
      throw new ApiError('invalid_field', 'url points at a private, loopback or link-local address', 'url');
    return;
  }
  const addrs = await new Promise<{ address: string }[]>((resolve, reject) =>
    dnsLookup(bare, { all: true }, (err, a) => (err ? reject(err) : resolve(a))),
  ).catch(() => {
    throw new ApiError('invalid_field', `url host ${bare} does not resolve`, 'url');
  });
  if (addrs.some((a) => isForbiddenAddress(a.address)))
    throw new ApiError(
      'invalid_field',
      `url host ${bare} resolves to a private, loopback or link-local address`,
      'url',
    );
}

/**
 * A `lookup` for http(s).request that refuses forbidden addresses, so the check happens on the very
 * address the socket connects to (no gap for DNS rebinding between check and connect).
 */
export const guardedLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (err, addrs) => {
    if (err) return callback(err, '', 4);
    const list = addrs as unknown as { address: string; family: number }[];
    const bad = list.find((a) => isForbiddenAddress(a.address));
    if (bad !== undefined) {
      const e = Object.assign(
        new Error(`refusing to deliver to ${hostname}: resolves to forbidden address ${bad.address}`),
        { code: 'EFORBIDDENADDR' },
      );
      return callback(e, '', 4);
    }
    if ((options as { all?: boolean }).all)
      return (callback as unknown as (e: null, a: typeof list) => void)(null, list);
    callback(null, list[0]!.address, list[0]!.family);
  });
};
