import type { FastifyInstance } from 'fastify';
import { createLogger, type Logger } from '@meterd/core/log';
import { Loop } from '@meterd/core/loop';
import { createPool, createRedis, sessionUrl } from '@meterd/core/store';
import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { readMeterUsage } from '@meterd/core/meters';
import { buildApp } from './app.js';
import type { ServiceSpec } from '@meterd/core/service';
import { loadControlConfig, type ControlConfig } from './config.js';
import { SecretBox } from './crypto/secret-box.js';
import { createStripe } from './billing/stripe-client.js';
import { QuotaWatch } from './billing/quota-watch.js';
import { AlertWatch } from './meters/alert-watch.js';
import type { MeterUsageReader } from './meters/usage-reader.js';
import { FinanceService } from './services/finance.js';
import { PurgeService } from './services/purge.js';
import { defineControlMetrics } from './metrics.js';
import { OpsGauges } from './ops-gauges.js';
import { KubernetesDriver } from './provision/k8s-driver.js';
import { LocalDriver } from './provision/local-driver.js';
import type { ProvisionDriver } from './provision/driver.js';
import { Provisioner } from './services/provisions.js';
import { CLEANUP_BATCH, IdempotencyService } from './services/idempotency.js';
import { DeliveryWorker } from './webhooks/worker.js';

export interface ControlServer {
  app: FastifyInstance;
  url: string;
  worker: DeliveryWorker | null;
  provisioner: Provisioner;
  quota: QuotaWatch;
  alerts: AlertWatch;
  close(): Promise<void>;
}

/** Everything the control-api process runs: stores, HTTP app, delivery worker, quota watch. */
export async function startControl(
  cfg: ControlConfig,
  o: { log?: Logger; driver?: ProvisionDriver; draining?: AbortSignal; meterUsage?: MeterUsageReader } = {},
): Promise<ControlServer> {
  const log = o.log ?? createLogger('control-api', cfg.LOG_LEVEL);
  const pool = createPool(cfg.DATABASE_URL, 10, { statementTimeoutMs: cfg.DATABASE_STATEMENT_TIMEOUT_MS });
  const redis = createRedis(cfg);
  const sub = createRedis(cfg, { enableAutoPipelining: false });
  for (const r of [redis, sub]) r.on('error', (err) => log.debug({ err }, 'redis connection error'));
  const box = new SecretBox(cfg.SECRETS_KEY, cfg.SECRETS_KEYS_OLD);
  if (box.usesDevelopmentKey)
    log.warn(
      'SECRETS_KEY is unset: secrets are encrypted with the public development key (allowed only with NODE_ENV=development)',
    );
  const metrics = defineControlMetrics();
  const driver = o.driver ?? driverOf(cfg, log);
  const provisioner = new Provisioner(pool, driver, box, log);
  // Alerts and the dashboard's meter charts read the meters' rollups (core's readMeterUsage) on a
  // client of their own, closed with the process; a caller may give its own reader.
  const meterCh = o.meterUsage === undefined ? clickHouseFromConfig(cfg, { requestTimeoutMs: 10_000 }) : undefined;
  const meterUsage: MeterUsageReader = o.meterUsage ?? ((q) => readMeterUsage(meterCh!, q));
  const app = await buildApp(cfg, {
    pool,
    redis,
    sub,
    log,
    metrics,
    box,
    stripe: createStripe(cfg),
    provisioner,
    meterUsage,
    ...(o.draining === undefined ? {} : { draining: o.draining }),
  });
  const worker = cfg.WEBHOOK_WORKER
    ? new DeliveryWorker({
        pool,
        databaseUrl: sessionUrl(cfg),
        box,
        log,
        metrics,
        retryScale: cfg.WEBHOOK_RETRY_SCALE,
        pollMs: cfg.WEBHOOK_POLL_MS,
        timeoutMs: cfg.WEBHOOK_TIMEOUT_MS,
        allowPrivate: cfg.WEBHOOK_ALLOW_PRIVATE,
        concurrency: cfg.WEBHOOK_CONCURRENCY,
      })
    : null;
  const quota = new QuotaWatch(pool, redis, cfg.REDIS_KEY_PREFIX, log);
  const alerts = new AlertWatch(pool, meterUsage, log);
  const gauges = new OpsGauges(pool, redis, metrics, log);
  const address = await app.listen({ host: cfg.CONTROL_API_HOST, port: cfg.CONTROL_API_PORT });
  await worker?.start();
  quota.start(cfg.QUOTA_CHECK_MS);
  alerts.start(cfg.METER_ALERT_CHECK_MS);
  gauges.start();
  // A full batch means more expired rows are waiting: the next one runs at once.
  const idempotency = new IdempotencyService(pool, box);
  const idemCleanup = new Loop(async () => ((await idempotency.cleanup()) === CLEANUP_BATCH ? 0 : undefined), {
    intervalMs: cfg.IDEMPOTENCY_CLEANUP_MS,
    onError: (err) => log.warn({ err }, 'deleting expired idempotency keys failed'),
  }).start(cfg.IDEMPOTENCY_CLEANUP_MS);
  // Its own ClickHouse client: a mutation statement may take longer than the API's 5 s queries.
  const purgeCh = clickHouseFromConfig(cfg, { requestTimeoutMs: 60_000 });
  // One connection on the session URL: the purge's advisory lock must keep its server session.
  const purgeLockPool = createPool(sessionUrl(cfg), 1);
  const purge = new PurgeService({
    pool,
    lockPool: purgeLockPool,
    ch: purgeCh,
    chCluster: cfg.CLICKHOUSE_CLUSTER,
    redis,
    redisPrefix: cfg.REDIS_KEY_PREFIX,
    finance: new FinanceService(pool, purgeCh),
    batch: cfg.WORKSPACE_PURGE_BATCH,
  });
  // A full batch means more are due: the next run starts at once.
  const purgeLoop = new Loop(
    async () => ((await purge.run()).purged.length === cfg.WORKSPACE_PURGE_BATCH ? 0 : undefined),
    {
      intervalMs: cfg.WORKSPACE_PURGE_INTERVAL_MS,
      onError: (err) => log.error({ err }, 'purging deleted workspaces failed; the next run resumes it'),
    },
  ).start(cfg.WORKSPACE_PURGE_INTERVAL_MS);
  // A store that is down at start must not keep the API from serving: resume at the next start.
  await provisioner.resume().catch((err: unknown) => log.error({ err }, 'resuming pending provisions failed'));
  return {
    app,
    url: address,
    worker,
    provisioner,
    quota,
    alerts,
    async close() {
      await quota.stop();
      await alerts.stop();
      await gauges.stop();
      await idemCleanup.stop();
      await purgeLoop.stop();
      await purgeCh.close();
      await meterCh?.close();
      await app.close();
      await worker?.stop();
      await provisioner.close();
      await Promise.all([pool.end(), purgeLockPool.end(), redis.quit().catch(() => {}), sub.quit().catch(() => {})]);
    },
  };
}

/** The configured provisioning driver; null when it is the local one and that is not enabled. */
function driverOf(cfg: ControlConfig, log: Logger): ProvisionDriver | null {
  if (cfg.PROVISION_DRIVER === 'kubernetes') {
    return new KubernetesDriver({
      apiUrl: cfg.KUBE_API_URL,
      token: cfg.KUBE_TOKEN,
      caFile: cfg.KUBE_CA_FILE,
      domain: cfg.PROVISION_DOMAIN,
      imagePrefix: cfg.PROVISION_IMAGE_PREFIX,
      clusterIssuer: cfg.CERT_MANAGER_ISSUER,
    });
  }
  return cfg.PROVISION_LOCAL_ENABLED ? new LocalDriver(log) : null;
}

/** The control API process: the HTTP API, the webhook delivery worker and the quota watch. */
export const controlService: ServiceSpec<ControlConfig, ControlServer> = {
  name: 'control-api',
  loadConfig: loadControlConfig,
  start: async (cfg, ctx) => {
    const server = await startControl(cfg, ctx);
    ctx.log.info({ url: server.url }, 'control-api listening');
    return server;
  },
  drainMs: 15_000,
};
