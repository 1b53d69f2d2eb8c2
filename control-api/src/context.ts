import type Stripe from 'stripe';
import type { Authenticator, Logger, Pool, Redis } from '@meterd/core';
import type { ControlConfig } from './config.js';
import type { SecretBox } from './crypto/secret-box.js';
import type { ControlMetrics } from './metrics.js';
import type { Provisioner } from './provision/provisioner.js';

/** What route modules share: built once in buildApp, never re-read from the environment. */
export interface Ctx {
  cfg: ControlConfig;
  pool: Pool;
  redis: Redis;
  auth: Authenticator;
  box: SecretBox;
  log: Logger;
  metrics: ControlMetrics;
  /** null when STRIPE_SECRET_KEY is unset. */
  stripe: Stripe | null;
  provisioner: Provisioner;
}
