import { fileURLToPath } from 'node:url';

/** A deployable catalog service. */
export interface CatalogEntry {
  name: string;
  description: string;
  /** Image name under PROVISION_IMAGE_PREFIX (Kubernetes driver). */
  image: string;
  /** Port the service listens on (it reads PORT). */
  port: number;
  /** Config keys the caller must pass. */
  requiredConfig: readonly string[];
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
    requiredConfig: ['METER_URL', 'METER_WORKSPACE_ID', 'METER_API_KEY'],
    localEntry: fileURLToPath(new URL('../catalog/acp-handler.js', import.meta.url)),
    resources: { cpuRequest: '100m', memoryRequest: '128Mi', cpuLimit: '500m', memoryLimit: '256Mi' },
  },
});
