import { type Authenticator } from '@meterd/core/auth';
import { type Logger } from '@meterd/core/log';
import { type Redis } from '@meterd/core/store';
import type { ControlConfig } from './config.js';
import type { ControlMetrics } from './metrics.js';
import type { Services } from './services/index.js';

/**
 * What route modules share: built once in buildApp, never re-read from the environment. Routes
 * reach Postgres and Stripe only through `services`; `redis` is for HTTP concerns (rate limits,
 * sessions).
 */
export interface Ctx {
  cfg: ControlConfig;
  redis: Redis;
  auth: Authenticator;
  log: Logger;
  metrics: ControlMetrics;
  services: Services;
}
