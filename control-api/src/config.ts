import {
  ConfigError,
  aggregatorShardsVar,
  authVars,
  commaSeparated,
  loadConfig,
  redisKeyPrefixVar,
  storeVars,
  str,
  int,
  bool,
  oneOf,
  url,
  addressList,
  type ConfigOf,
  type VarSpec,
} from '@meterd/core/config';

/** A positive decimal, e.g. 0.01 to run the webhook retry schedule a hundred times faster in tests. */
const scale = (doc: string, def: number): VarSpec<number> => ({
  doc,
  default: String(def),
  parse(s) {
    const n = Number(s);
    if (!Number.isFinite(n) || n < 0 || n > 100) throw new Error('expected a number from 0 to 100');
    return n;
  },
});

/** 32 bytes, base64; '' means "use the development key" (refused outside development mode, see loadControlConfig). */
const key32 = (doc: string): VarSpec<string> => ({
  doc,
  default: '',
  secret: true,
  parse(s) {
    if (s !== '' && Buffer.from(s, 'base64').length !== 32)
      throw new Error('expected 32 bytes, base64-encoded (openssl rand -base64 32)');
    return s;
  },
});

/** Comma-separated keys like SECRETS_KEY's: ones that retired, still needed to open older values. */
const keyList = (doc: string): VarSpec<readonly string[]> => ({
  doc,
  default: '',
  secret: true,
  parse(s) {
    const keys = commaSeparated(s);
    keys.forEach((k, i) => {
      if (Buffer.from(k, 'base64').length !== 32) throw new Error(`key ${i + 1}: expected 32 bytes, base64-encoded`);
    });
    return Object.freeze(keys);
  },
});

export const controlVars = {
  ...storeVars,
  NODE_ENV: str(
    '`development` (what `npm start` sets) allows the public development SECRETS_KEY and local provisioning; any other value, and the default, is production mode.',
    'production',
  ),
  CONTROL_API_HOST: str('Address the control API listens on.', '127.0.0.1'),
  CONTROL_API_PORT: int('Port of the control API.', 8082, 0, 65535),
  PUBLIC_BASE_URL: url(
    'Public base URL of meterd (dashboard links, OAuth callbacks, handler METER_URL).',
    'http://127.0.0.1:8080',
    ['http:', 'https:'],
  ),
  ...authVars,
  TRUSTED_PROXIES: addressList(
    'Proxies (comma-separated IPs/CIDRs) whose X-Forwarded-For is honoured for the client address (rate limits, logs). Default: none, so the socket address counts and a client cannot pick its address by sending the header. Set it to the ingress/load balancer addresses; `npm start` sets loopback, where its front router runs.',
    '',
  ),
  SECRETS_KEY: key32(
    'AES-256-GCM key (32 bytes, base64) encrypting webhook secrets, provision configs and Shopify tokens at rest. Required unless NODE_ENV=development, where a fixed, public development key is used.',
  ),
  SECRETS_KEYS_OLD: keyList(
    'Retired SECRETS_KEY values (comma-separated), to open secrets sealed under them during a rotation; new values are always sealed with SECRETS_KEY (docs/security.md).',
  ),
  SIGNUP_RATE_PER_MINUTE: int(
    'Signups allowed per client address per minute (token bucket in Redis, shared by all control-api processes).',
    10,
    1,
    100_000,
  ),
  SIGNUP_BURST: int('Signups a client address may make at once before the per-minute rate applies.', 5, 1, 100_000),
  STRIPE_SECRET_KEY: str('Stripe secret key; empty disables Stripe (no customers at signup, no portal).', '', true),
  STRIPE_API_BASE: url(
    'Stripe API base URL (point at stripe-local in development and tests).',
    'https://api.stripe.com',
    ['http:', 'https:'],
  ),
  STRIPE_WEBHOOK_SECRET: str(
    'Signing secrets (whsec_…, comma-separated) of POST /webhooks/stripe: Stripe signs each event destination with its own secret (snapshot events for plans, thin events for meter error reports), and signs with both the old and the new secret while one is rolled. An event verifying with any of them is taken; empty refuses every Stripe webhook.',
    '',
    true,
  ),
  WEBHOOK_ALLOW_PRIVATE: bool(
    'Development only: allow http:// webhook URLs and private, loopback and link-local addresses.',
    false,
  ),
  WEBHOOK_RETRY_SCALE: scale('Multiplier of the webhook retry delays 0 s, 1 s, 3 s, 10 s (tests use e.g. 0.05).', 1),
  WEBHOOK_POLL_MS: int(
    'How often the delivery worker looks for due deliveries (it is also woken at once by local events).',
    500,
    10,
    60_000,
  ),
  WEBHOOK_TIMEOUT_MS: int(
    'Total deadline of one webhook attempt: connect, headers and body (a receiver trickling its answer is cut off at it; the response is read up to 64 KiB).',
    10_000,
    100,
    60_000,
  ),
  WEBHOOK_CONCURRENCY: int(
    'Webhook attempts in flight at once per control-api process, over all endpoints; each endpoint has at most one, so a slow receiver delays only itself.',
    32,
    1,
    1_000,
  ),
  WEBHOOK_MAX_ENDPOINTS: int(
    'Webhook endpoints a workspace may subscribe (409 endpoint_limit_exceeded beyond).',
    16,
    1,
    1_000,
  ),
  WEBHOOK_WORKER: bool('Run the webhook delivery worker in this process.', true),
  PROVISION_DRIVER: oneOf('How catalog services are deployed: `local` (child processes) or `kubernetes`.', 'local', [
    'local',
    'kubernetes',
  ] as const),
  PROVISION_LOCAL_ENABLED: bool(
    'Run catalog services as child processes of the control API (PROVISION_DRIVER=local). Development only: refused unless NODE_ENV=development; `npm start` turns it on. Off, POST /api/v1/provision answers 501 not_configured.',
    false,
  ),
  PROVISION_DOMAIN: str(
    'DNS zone under which provisioned handlers get <customer>.<zone> (Kubernetes ingress hosts).',
    'handlers.meterd.example',
  ),
  PROVISION_IMAGE_PREFIX: str('Container registry prefix of catalog images (Kubernetes driver).', 'ghcr.io/meterd'),
  PROVISION_LOCAL_PORT_BASE: int('First port the local driver hands to a provisioned process.', 9100, 1024, 65000),
  KUBE_API_URL: str('Kubernetes API server URL (Kubernetes driver), e.g. https://kubernetes.default.svc.', ''),
  KUBE_TOKEN: str('Bearer token of the service account applying tenant manifests.', '', true),
  KUBE_CA_FILE: str('CA bundle of the Kubernetes API server (PEM file).', ''),
  CERT_MANAGER_ISSUER: str('cert-manager ClusterIssuer named in tenant Ingress annotations.', 'letsencrypt-prod'),
  SHOPIFY_API_KEY: str('Shopify app client id; empty disables Shopify connect.', ''),
  SHOPIFY_API_SECRET: str('Shopify app client secret (verifies callback HMACs).', '', true),
  SHOPIFY_SCOPES: str('OAuth scopes requested from the shop.', 'read_orders'),
  SHOPIFY_TOKEN_URL_TEMPLATE: str(
    'Where the OAuth code is exchanged; {shop} is replaced (tests point it at a local server).',
    'https://{shop}/admin/oauth/access_token',
  ),
  WORKSPACE_DELETE_GRACE_DAYS: int(
    'Days a deleted workspace can be restored by the operator (its keys stop working at deletion; its numbers stay for the finance export).',
    30,
    0,
    3650,
  ),
  WORKSPACE_PURGE_INTERVAL_MS: int(
    'How often workspaces past their grace period are purged (rows, ClickHouse events and rollups, Redis keys; docs/api.md §8).',
    3_600_000,
    100,
    86_400_000,
  ),
  WORKSPACE_PURGE_BATCH: int(
    'Workspaces purged per run at most (a ClickHouse mutation per table per run covers the whole batch).',
    50,
    1,
    1_000,
  ),
  IDEMPOTENCY_CLEANUP_MS: int(
    'How often expired Idempotency-Key records (kept 24 h) are deleted, a bounded batch at a time.',
    60_000,
    100,
    3_600_000,
  ),
  QUOTA_CHECK_MS: int(
    "How often workspaces' event counters are compared with their plan for meter.quota.warning.",
    30_000,
    100,
    3_600_000,
  ),
  METER_ALERT_CHECK_MS: int(
    'How often usage alerts are compared with their meter for meter.threshold.reached (docs/meters.md).',
    30_000,
    100,
    3_600_000,
  ),
  ...redisKeyPrefixVar,
  INGEST_URL: url(
    'Ingest base URL whose /metrics the dashboard reads (events/s, duplicates, rejects by reason).',
    'http://127.0.0.1:8081',
    ['http:', 'https:'],
  ),
  ...aggregatorShardsVar,
  DASHBOARD_SESSION_TTL_SECONDS: int(
    'Lifetime of a dashboard sign-in session (server-side, in Redis under REDIS_KEY_PREFIX).',
    43_200,
    60,
    30 * 86_400,
  ),
} as const;

export type ControlConfig = ConfigOf<typeof controlVars>;

/** Development mode is opt-in: a deployment that forgets NODE_ENV gets production's checks. */
export function isDevelopment(cfg: Pick<ControlConfig, 'NODE_ENV'>): boolean {
  return cfg.NODE_ENV === 'development';
}

export function loadControlConfig(env: NodeJS.ProcessEnv = process.env): ControlConfig {
  const cfg = loadConfig(controlVars, env);
  const problems: string[] = [];
  if (!isDevelopment(cfg) && cfg.SECRETS_KEY === '') {
    problems.push(
      `SECRETS_KEY is required outside development mode (NODE_ENV=${cfg.NODE_ENV}): it encrypts webhook secrets, provision configs and Shopify tokens at rest. Generate one with \`openssl rand -base64 32\` and keep it (losing it loses those secrets); only NODE_ENV=development may use the public development key`,
    );
  }
  if (!isDevelopment(cfg) && cfg.PROVISION_LOCAL_ENABLED) {
    problems.push(
      `PROVISION_LOCAL_ENABLED=true is refused outside development mode (NODE_ENV=${cfg.NODE_ENV}): local provisioning runs tenants' services on this host; use PROVISION_DRIVER=kubernetes`,
    );
  }
  // The old name would otherwise be ignored in silence: quota counters read under the default
  // prefix show zero and quota warnings never fire.
  if (env.INGEST_REDIS_PREFIX !== undefined) {
    problems.push('INGEST_REDIS_PREFIX was renamed REDIS_KEY_PREFIX (the same setting as ingest): set that instead');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return cfg;
}
