import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { send } from './http-util.js';
import { completeSession } from './routes-checkout.js';
import type { Context } from './context.js';

const ID = /^[A-Za-z0-9_]+$/;

/**
 * stripe-local's stand-ins for Stripe's hosted pages and test cards: GET /c/pay/:id shows the
 * session with a "pay" button, and POST /_test/checkout/sessions/:id/complete pays it (JSON
 * answer with the subscription and the webhook deliveries; a browser form is redirected to the
 * session's success_url). Test-only: real Stripe completes a session when a customer pays.
 * A path these do not serve goes to `otherwise` (the Stripe API's answer: 401 or 404).
 */
export function checkoutControl(
  app: FastifyInstance,
  ctx: Context,
  otherwise: (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>,
): void {
  app.post<{ Params: { id: string } }>('/_test/checkout/sessions/:id/complete', async (req, reply) => {
    if (!ID.test(req.params.id)) return otherwise(req, reply);
    const out = await completeSession(ctx, req.params.id, ctx.nowS());
    if (
      req.headers['content-type']?.startsWith('application/x-www-form-urlencoded') &&
      out.session.success_url !== null
    )
      return reply.status(303).header('Location', out.session.success_url).send();
    return send(reply, 200, JSON.stringify(out));
  });
  app.get<{ Params: { id: string } }>('/c/pay/:id', async (req, reply) => {
    const stored = ID.test(req.params.id) ? ctx.data().checkout.sessions[req.params.id] : undefined;
    if (stored === undefined) return otherwise(req, reply);
    const s = stored.session;
    const amount = stored.items.reduce(
      (a, it) => a + (ctx.data().checkout.prices[it.price]?.unit_amount ?? 0) * it.quantity,
      0,
    );
    return reply
      .status(200)
      .type('text/html; charset=utf-8')
      .send(
        `<!doctype html><title>Checkout (stripe-local)</title><h1>Checkout session ${s.id}</h1>` +
          `<p>Status: ${s.status}. Subscription: ${(amount / 100).toFixed(2)} ${(s.currency ?? '').toUpperCase()} per period.</p>` +
          (s.status === 'open'
            ? `<form method="post" action="/_test/checkout/sessions/${s.id}/complete"><button>Pay with a test card</button></form>`
            : ''),
      );
  });
}
