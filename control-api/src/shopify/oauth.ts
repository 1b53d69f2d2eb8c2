import { createHmac, timingSafeEqual } from 'node:crypto';

export const SHOP_DOMAIN = /^[a-z0-9][a-z0-9-]{0,60}\.myshopify\.com$/;

/**
 * Shopify's callback HMAC: every query parameter except `hmac` (and the legacy `signature`),
 * sorted by name, joined as `k=v&…`, HMAC-SHA256 with the app secret, hex.
 */
export function shopifyHmac(query: Record<string, string>, secret: string): string {
  const message = Object.keys(query)
    .filter((k) => k !== 'hmac' && k !== 'signature')
    .sort()
    .map((k) => `${k}=${query[k]}`)
    .join('&');
  return createHmac('sha256', secret).update(message).digest('hex');
}

export function verifyShopifyHmac(query: Record<string, string>, secret: string): boolean {
  const given = query.hmac;
  if (typeof given !== 'string' || !/^[0-9a-f]{64}$/i.test(given)) return false;
  return timingSafeEqual(Buffer.from(shopifyHmac(query, secret), 'hex'), Buffer.from(given, 'hex'));
}
