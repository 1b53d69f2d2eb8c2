import type { HttpRequest, HttpResponse } from 'uWebSockets.js';

/**
 * The address a request comes from, for per-client limits. Behind a PROXY-protocol proxy uWS
 * reports the client itself; behind an HTTP proxy `trusted` accepts (TRUSTED_PROXIES), the last
 * X-Forwarded-For entry that proxy appended. Anyone else's X-Forwarded-For is ignored, since a
 * client can write whatever it likes there. Read only off the hot path: it allocates.
 */
export function clientAddress(res: HttpResponse, req: HttpRequest, trusted: (address: string) => boolean): string {
  const proxied = Buffer.from(res.getProxiedRemoteAddressAsText()).toString('latin1');
  if (proxied !== '') return proxied;
  const peer = Buffer.from(res.getRemoteAddressAsText()).toString('latin1');
  if (!trusted(peer)) return peer;
  const xff = req.getHeader('x-forwarded-for');
  const last = xff.slice(xff.lastIndexOf(',') + 1).trim();
  return last === '' ? peer : last;
}
