export {
  startStripeLocal,
  sendWebhook,
  type StripeLocal,
  type StripeLocalOptions,
  type WebhookRequest,
} from './server.js';
export { stripeSignature } from './signature.js';
export type { Faults } from './faults.js';
export type { PriceSeed } from './routes-checkout.js';
