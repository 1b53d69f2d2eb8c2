import type { IncomingMessage, ServerResponse } from 'node:http';
import { send } from './http-util.js';
import { completeSession } from './routes-checkout.js';
import type { Context } from './context.js';

/**
 * stripe-local's stand-ins for Stripe's hosted pages and test cards: GET /c/pay/:id shows the
 * session with a "pay" button, and POST /_test/checkout/sessions/:id/complete pays it (JSON
 * answer with the subscription and the webhook deliveries; a browser form is redirected to the
 * session's success_url). Test-only: real Stripe completes a session when a customer pays.
 */
export async function checkoutControl(
  ctx: Context,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
): Promise<boolean> {
  const done = /^\/_test\/checkout\/sessions\/([A-Za-z0-9_]+)\/complete$/.exec(path);
  if (done && req.method === 'POST') {
    const out = await completeSession(ctx, done[1]!, ctx.nowS());
    if (
      req.headers['content-type']?.startsWith('application/x-www-form-urlencoded') &&
      out.session.success_url !== null
    ) {
      res.writeHead(303, { Location: out.session.success_url }).end();
    } else {
      send(res, 200, JSON.stringify(out));
    }
    return true;
  }
  const page = /^\/c\/pay\/([A-Za-z0-9_]+)$/.exec(path);
  if (page && req.method === 'GET') {
    const stored = ctx.data().checkout.sessions[page[1]!];
    if (stored === undefined) return false;
    const s = stored.session;
    const amount = stored.items.reduce(
      (a, it) => a + (ctx.data().checkout.prices[it.price]?.unit_amount ?? 0) * it.quantity,
      0,
    );
    res
      .writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' })
      .end(
        `<!doctype html><title>Checkout (stripe-local)</title><h1>Checkout session ${s.id}</h1>` +
          `<p>Status: ${s.status}. Subscription: ${(amount / 100).toFixed(2)} ${(s.currency ?? '').toUpperCase()} per period.</p>` +
          (s.status === 'open'
            ? `<form method="post" action="/_test/checkout/sessions/${s.id}/complete"><button>Pay with a test card</button></form>`
            : ''),
      );
    return true;
  }
  return false;
}
