import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './paths.js';

/**
 * What `npm start`'s supervisor runs: every workspace package may declare processes in its
 * package.json under "meterd": { "processes": [{ name, main, url?, order?, env? }] }.
 * `env` holds defaults for local runs only (e.g. point billing-sync at stripe-local); the caller's
 * environment wins. A value `{{generated:NAME}}` is replaced by a secret made once per supervisor
 * run and shared by every process naming it: stripe-local signs its webhooks with the same
 * `whsec_` the control API verifies them with, and no fixed secret sits in the repository.
 */
export interface ProcessSpec {
  name: string;
  main: string;
  url?: string;
  order?: number;
  health?: string;
  metrics?: string;
  env?: Record<string, string>;
}

export function discoverProcesses(root = REPO_ROOT): { spec: ProcessSpec; dir: string }[] {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { workspaces: string[] };
  const found: { spec: ProcessSpec; dir: string }[] = [];
  for (const ws of pkg.workspaces) {
    const pj = join(root, ws, 'package.json');
    if (!existsSync(pj)) continue;
    const procs =
      (JSON.parse(readFileSync(pj, 'utf8')) as { meterd?: { processes?: ProcessSpec[] } }).meterd?.processes ?? [];
    for (const spec of procs) found.push({ spec, dir: join(root, ws) });
  }
  return found.sort((a, b) => (a.spec.order ?? 50) - (b.spec.order ?? 50));
}

const GENERATED = /^\{\{generated:([a-z0-9_]+)\}\}$/;

/** Secrets of one supervisor run, made on first use (`whsec_` + 32 random bytes, as Stripe's look). */
export class RunSecrets {
  private readonly values = new Map<string, string>();
  get(name: string): string {
    let v = this.values.get(name);
    if (v === undefined) this.values.set(name, (v = `whsec_${randomBytes(32).toString('base64url')}`));
    return v;
  }
}

/** A process's environment: its spec's defaults (generated values filled in) under the caller's. */
export function processEnv(
  spec: ProcessSpec,
  secrets: RunSecrets,
  caller: NodeJS.ProcessEnv = process.env,
): NodeJS.ProcessEnv {
  const defaults: Record<string, string> = {};
  for (const [k, v] of Object.entries(spec.env ?? {})) {
    const m = GENERATED.exec(v);
    defaults[k] = m === null ? v : secrets.get(m[1]!);
  }
  return { ...defaults, ...caller };
}
