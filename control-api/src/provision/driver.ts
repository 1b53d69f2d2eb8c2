import type { CatalogEntry } from './catalog.js';

export interface DeploySpec {
  provisionId: string;
  workspaceId: string;
  /** The workspace's slug (immutable, unique): part of public hostnames. */
  workspaceSlug: string;
  customerId: string;
  service: CatalogEntry;
  /** Environment of the service: only keys its catalog entry declares (may hold secrets: the driver keeps them out of logs). */
  config: Readonly<Record<string, string>>;
}

export type HostSpec = Pick<DeploySpec, 'customerId' | 'service' | 'workspaceSlug'>;

/** How a provisioned service comes to life. Both calls are idempotent: a resumed deploy re-applies. */
export interface ProvisionDriver {
  readonly name: 'local' | 'kubernetes';
  /** The public host the service will answer on, or null when it gets none (local ports); throws ApiError when it cannot be formed. */
  hostOf(spec: HostSpec): string | null;
  /** Resolves with the service's base URL once it is deployed and healthy. */
  deploy(spec: DeploySpec): Promise<{ url: string }>;
  destroy(spec: DeploySpec): Promise<void>;
  close(): Promise<void>;
}
