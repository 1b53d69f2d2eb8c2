import { createHmac } from 'node:crypto';

/**
 * `StateSet-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: Stripe's scheme, so
 * `stripe.webhooks.constructEvent` and the verify function in docs/api.md both accept it. The secret string
 * itself (whsec_… included) is the HMAC key, as in Stripe.
 */
export function signatureHeader(secret: string, body: string, unixSeconds: number): string {
  const v1 = createHmac('sha256', secret).update(`${unixSeconds}.${body}`).digest('hex');
  return `t=${unixSeconds},v1=${v1}`;
}
