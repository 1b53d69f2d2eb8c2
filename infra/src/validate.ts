import type { Manifest } from './kustomize.js';

interface Model {
  validate(): void;
}
type ModelClass = new (data: Manifest) => Model;

/**
 * Validates a Kubernetes object against the OpenAPI schema of its kind (the kubernetes-models
 * package, offline): throws naming the object and the first violations. Only built-in kinds have a
 * schema there; custom resources (monitoring.coreos.com) are left to their own tests.
 */
export async function validateManifest(m: Manifest): Promise<void> {
  const path = m.apiVersion.includes('/') ? m.apiVersion : `v1`;
  let mod: Record<string, ModelClass>;
  try {
    mod = (await import(`kubernetes-models/${path}/${m.kind}`)) as Record<string, ModelClass>;
  } catch {
    throw new Error(`${m.kind}/${m.metadata.name}: no schema for ${m.apiVersion} ${m.kind}`);
  }
  try {
    new mod[m.kind]!(m).validate();
  } catch (err) {
    throw new Error(`${m.kind}/${m.metadata.name} does not validate: ${(err as Error).message}`, { cause: err });
  }
}
