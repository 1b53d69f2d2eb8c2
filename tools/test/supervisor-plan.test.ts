import { test } from 'node:test';
import assert from 'node:assert/strict';
import { discoverProcesses, processEnv, RunSecrets } from '../src/supervisor-plan.js';

/**
 * `npm start` wires stripe-local's webhooks to the control API (issue 12, item 3). What it fixes:
 * the stack set no STRIPE_WEBHOOK_SECRET, so /webhooks/stripe answered 501 and no payment could
 * ever change a plan locally. Checked on the repository's real package.json specs.
 */
const specs = discoverProcesses();
const spec = (name: string) => specs.find((p) => p.spec.name === name)!.spec;

test('control-api verifies with the secret stripe-local signs with, generated per run, at the address control-api listens on', () => {
  const secrets = new RunSecrets();
  const control = processEnv(spec('control-api'), secrets, {});
  const stripe = processEnv(spec('stripe-local'), secrets, {});
  assert.match(control.STRIPE_WEBHOOK_SECRET!, /^whsec_[A-Za-z0-9_-]{43}$/);
  assert.equal(stripe.STRIPE_LOCAL_WEBHOOK_SECRET, control.STRIPE_WEBHOOK_SECRET);
  assert.equal(stripe.STRIPE_LOCAL_WEBHOOK_URL, `${spec('control-api').url}/webhooks/stripe`);
  assert.equal(control.STRIPE_API_BASE, spec('stripe-local').url);
  // The paid plans are priced in stripe-local, found by lookup_key like an operator's Stripe catalogue.
  assert.deepEqual(
    stripe.STRIPE_LOCAL_SEED_PRICES!.split(',').map((p) => p.split(':')[0]),
    ['growth', 'scale', 'enterprise'],
  );
  // A restarted child keeps the run's secret; the next run gets a new one (none is fixed in the repository).
  assert.equal(processEnv(spec('control-api'), secrets, {}).STRIPE_WEBHOOK_SECRET, control.STRIPE_WEBHOOK_SECRET);
  assert.notEqual(
    processEnv(spec('control-api'), new RunSecrets(), {}).STRIPE_WEBHOOK_SECRET,
    control.STRIPE_WEBHOOK_SECRET,
  );
});

test("the caller's environment still wins over every default", () => {
  const env = processEnv(spec('control-api'), new RunSecrets(), { STRIPE_WEBHOOK_SECRET: 'whsec_mine', PATH: '/bin' });
  assert.equal(env.STRIPE_WEBHOOK_SECRET, 'whsec_mine');
  assert.equal(env.PATH, '/bin');
});
