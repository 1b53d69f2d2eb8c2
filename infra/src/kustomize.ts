import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

/** A Kubernetes object as read from YAML. */
export type Manifest = Record<string, unknown> & {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
};

interface Kustomization {
  resources?: string[];
  namespace?: string;
  labels?: { pairs: Record<string, string> }[];
  images?: { name: string; newName?: string; newTag?: string }[];
  patches?: { path: string }[];
}

/**
 * Renders a kustomization offline: the subset of Kustomize that infra/k8s uses (resources, namespace,
 * labels on metadata only, images, strategic-merge patches naming their target by kind and name), so
 * `npm test` checks the manifests without kubectl. Anything else in a kustomization.yaml is refused
 * rather than ignored; test/manifests compares the result with `kubectl kustomize` where kubectl exists.
 */
export function kustomize(dir: string): Manifest[] {
  const k = readYaml(join(dir, 'kustomization.yaml'))[0] as unknown as Kustomization & Record<string, unknown>;
  const known = new Set(['apiVersion', 'kind', 'resources', 'namespace', 'labels', 'images', 'patches']);
  const unknown = Object.keys(k).filter((key) => !known.has(key));
  if (unknown.length > 0) throw new Error(`${dir}: unsupported kustomization fields ${unknown.join(', ')}`);
  let out: Manifest[] = [];
  for (const r of k.resources ?? []) {
    const path = join(dir, r);
    out.push(...(statSync(path).isDirectory() ? kustomize(path) : (readYaml(path) as Manifest[])));
  }
  for (const p of k.patches ?? []) {
    for (const patch of readYaml(join(dir, p.path)) as Manifest[]) {
      const i = out.findIndex((m) => m.kind === patch.kind && m.metadata.name === patch.metadata.name);
      if (i < 0) throw new Error(`${dir}: patch ${p.path} targets missing ${patch.kind}/${patch.metadata.name}`);
      out[i] = merge(out[i], patch) as Manifest;
    }
  }
  for (const l of k.labels ?? []) for (const m of out) m.metadata.labels = { ...m.metadata.labels, ...l.pairs };
  if (k.namespace !== undefined) for (const m of out) m.metadata.namespace = k.namespace;
  if (k.images !== undefined) out = out.map((m) => setImages(m, k.images!) as Manifest);
  return out;
}

function readYaml(path: string): Record<string, unknown>[] {
  return parseAllDocuments(readFileSync(path, 'utf8'))
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`${path}: ${d.errors[0]!.message}`);
      return d.toJSON() as Record<string, unknown> | null;
    })
    .filter((d): d is Record<string, unknown> => d !== null);
}

/** Strategic merge as Kubernetes does it for these objects: maps merge, lists of named items merge by name. */
function merge(base: unknown, patch: unknown): unknown {
  if (Array.isArray(base) && Array.isArray(patch)) {
    const named = (l: unknown[]) => l.every((x) => typeof x === 'object' && x !== null && 'name' in x);
    if (!named(base) || !named(patch)) return patch;
    // The patch's items first, in its order (merged into the base's item of the same name), then the
    // base's other items: the order kubectl's strategic merge gives.
    const rest = base as { name: string }[];
    const merged = (patch as { name: string }[]).map((item) => {
      const prior = rest.find((x) => x.name === item.name);
      return prior === undefined ? item : (merge(prior, item) as { name: string });
    });
    return [...merged, ...rest.filter((x) => !merged.some((m) => m.name === x.name))];
  }
  if (isMap(base) && isMap(patch)) {
    const out: Record<string, unknown> = { ...base };
    for (const [key, value] of Object.entries(patch)) out[key] = value === null ? undefined : merge(base[key], value);
    for (const key of Object.keys(out)) if (out[key] === undefined) delete out[key];
    return out;
  }
  return patch;
}

function isMap(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Kustomize's images transformer: every `image:` whose name matches gets the new name and tag. */
function setImages(node: unknown, images: NonNullable<Kustomization['images']>): unknown {
  if (Array.isArray(node)) return node.map((x) => setImages(x, images));
  if (!isMap(node)) return node;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    const rule =
      key === 'image' && typeof value === 'string' ? images.find((i) => i.name === value.split(':')[0]) : undefined;
    out[key] =
      rule === undefined
        ? setImages(value, images)
        : `${rule.newName ?? rule.name}${rule.newTag === undefined ? '' : `:${rule.newTag}`}`;
  }
  return out;
}
