import { type createClickHouse } from '@meterd/core/clickhouse';
import { type Logger } from '@meterd/core/log';
import { type Pool, type Redis } from '@meterd/core/store';
import type Stripe from 'stripe';
import type { ControlConfig } from '../config.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { ControlMetrics } from '../metrics.js';
import { BillingService } from './billing.js';
import { EventService } from './events.js';
import { FinanceService } from './finance.js';
import { IdempotencyService } from './idempotency.js';
import { ReadinessService } from './readiness.js';
import { KeyService } from './keys.js';
import { AlertService } from './alerts.js';
import { MeterService } from './meters.js';
import type { MeterUsageReader } from '../meters/usage-reader.js';
import type { Provisioner } from './provisions.js';
import { ShopifyService } from './shopify.js';
import { WebhookService } from './webhooks.js';
import { WorkspaceService } from './workspaces.js';

/**
 * The control API's domain: every rule and every SQL statement behind the public routes and the
 * dashboard. Routes parse, authorise, call one of these and serialise the answer.
 */
export interface Services {
  workspaces: WorkspaceService;
  keys: KeyService;
  webhooks: WebhookService;
  billing: BillingService;
  provisions: Provisioner;
  shopify: ShopifyService;
  finance: FinanceService;
  events: EventService;
  readiness: ReadinessService;
  idempotency: IdempotencyService;
  meters: MeterService;
  alerts: AlertService;
  /** Reads a meter's rollups (the dashboard's meter charts); null until one is wired (server.ts). */
  meterUsage: MeterUsageReader | null;
  /** The ClickHouse client the services read with (the dashboard's rollup reads share it). */
  ch: ReturnType<typeof createClickHouse>;
}

export interface ServiceDeps {
  pool: Pool;
  redis: Redis;
  log: Logger;
  metrics: ControlMetrics;
  box: SecretBox;
  stripe: Stripe | null;
  /** Rollups and raw events (the explorer, the finance export, the dashboard); closed by the caller. */
  ch: ReturnType<typeof createClickHouse>;
  /** Built by the caller: it runs deploys in the background and closes with the process. */
  provisioner: Provisioner;
  /** Left out: no meter charts (until server.ts wires core's readMeterUsage). */
  meterUsage?: MeterUsageReader | null;
}

export function createServices(cfg: ControlConfig, d: ServiceDeps): Services {
  const billing = new BillingService({
    pool: d.pool,
    redis: d.redis,
    stripe: d.stripe,
    log: d.log,
    metrics: d.metrics,
    publicBaseUrl: cfg.PUBLIC_BASE_URL,
    webhookSecrets: cfg.STRIPE_WEBHOOK_SECRET.split(',')
      .map((s) => s.trim())
      .filter((s) => s !== ''),
  });
  return {
    workspaces: new WorkspaceService(d.pool, d.redis, billing, cfg.WORKSPACE_DELETE_GRACE_DAYS),
    keys: new KeyService(d.pool, d.redis),
    webhooks: new WebhookService(d.pool, d.box, {
      maxEndpoints: cfg.WEBHOOK_MAX_ENDPOINTS,
      allowPrivate: cfg.WEBHOOK_ALLOW_PRIVATE,
    }),
    billing,
    provisions: d.provisioner,
    shopify: new ShopifyService(d.pool, d.box, cfg),
    finance: new FinanceService(d.pool, d.ch),
    events: new EventService(d.ch, d.redis, cfg.REDIS_KEY_PREFIX),
    readiness: new ReadinessService(d.pool, d.stripe),
    idempotency: new IdempotencyService(d.pool, d.box),
    meters: new MeterService(d.pool),
    alerts: new AlertService(d.pool),
    meterUsage: d.meterUsage ?? null,
    ch: d.ch,
  };
}
