import { fileURLToPath } from 'node:url';
import { ApiError } from '@meterd/core/errors';

/**
 * One config key a catalog service accepts. Nothing else ever reaches the service: a tenant's
 * config becomes the process environment of the service, so an undeclared key such as
 * NODE_OPTIONS or LD_PRELOAD would be code execution on the host.
 */
export interface ConfigKey {
  name: string;
  /** `url`: an absolute http(s) URL; `string`: any text (the request schema caps its length). */
  type: 'string' | 'url';
  required: boolean;
  /** A credential: clients mask it in forms. (Every config is encrypted at rest, secret or not.) */
  secret: boolean;
}

/** A deployable catalog service. */
export interface CatalogEntry {
  name: string;
  description: string;
  /** Image name under PROVISION_IMAGE_PREFIX (Kubernetes driver). */
  image: string;
  /** Port the service listens on (it reads PORT). */
  port: number;
  /** Every config key the service accepts. */
  config: readonly ConfigKey[];
  /** Built entry point the local driver runs with node. */
  localEntry: string;
  resources: { cpuRequest: string; memoryRequest: string; cpuLimit: string; memoryLimit: string };
}

export const CATALOG: Readonly<Record<string, CatalogEntry>> = Object.freeze({
  'acp-handler': {
    name: 'acp-handler',
    description: 'Agentic Commerce Protocol checkout handler that meters each completed checkout as GMV.',
    image: 'acp-handler',
    port: 8080,
    config: [
      { name: 'METER_URL', type: 'url', required: true, secret: false },
      { name: 'METER_WORKSPACE_ID', type: 'string', required: true, secret: false },
      { name: 'METER_API_KEY', type: 'string', required: true, secret: true },
    ],
    localEntry: fileURLToPath(new URL('../catalog/acp-handler.js', import.meta.url)),
    resources: { cpuRequest: '100m', memoryRequest: '128Mi', cpuLimit: '500m', memoryLimit: '256Mi' },
  },
});

/**
 * Checks a provisioning request's config against the entry: an undeclared key is refused by name
 * (invalid_field), a missing required one is missing_field, a `url` must be http(s).
 */
export function checkConfig(entry: CatalogEntry, config: Readonly<Record<string, string>>): void {
  const declared = new Map(entry.config.map((k) => [k.name, k]));
  for (const name of Object.keys(config)) {
    if (!declared.has(name)) {
      throw new ApiError(
        'invalid_field',
        `config.${name} is not a config key of ${entry.name}; it accepts ${[...declared.keys()].join(', ')}`,
        `config.${name}`,
      );
    }
  }
  for (const k of entry.config) {
    const v = config[k.name];
    if (v === undefined) {
      if (k.required)
        throw new ApiError('missing_field', `config.${k.name} is required by ${entry.name}`, `config.${k.name}`);
      continue;
    }
    if (k.type === 'url' && !isHttpUrl(v))
      throw new ApiError('invalid_field', `config.${k.name} must be an http(s) URL`, `config.${k.name}`);
  }
}

/**
 * The declared keys of a stored config, and only those. Deploys go through this too, so a config
 * stored before keys were checked (or edited in the database) still cannot smuggle a variable in.
 */
export function declaredConfig(entry: CatalogEntry, config: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of entry.config) if (typeof config[k.name] === 'string') out[k.name] = config[k.name]!;
  return out;
}

function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
  } catch {
    return false;
  }
}
