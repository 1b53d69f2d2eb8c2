import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { REPO_ROOT } from '@meterd/core/testing';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

export interface HotFunction {
  fn: string;
  where: string;
  selfPct: number;
  selfMs: number;
}
export interface ProfileTop {
  files: string[];
  totalMs: number;
  idlePct: number;
  top: HotFunction[];
}

/**
 * Self time per function over every .cpuprofile in `dir` (ingest writes one per thread with
 * --cpu-prof), so the report can say where the server's time goes without opening DevTools.
 */
export function summariseProfiles(dir: string, limit = 20): ProfileTop | undefined {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  } catch {
    return undefined;
  }
  if (files.length === 0) return undefined;
  const self = new Map<string, number>();
  let total = 0;
  for (const f of files) {
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8')) as Profile;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const samples = p.samples ?? [];
    const deltas = p.timeDeltas ?? [];
    for (let i = 0; i < samples.length; i++) {
      const n = byId.get(samples[i]!);
      if (!n) continue;
      const us = Math.max(0, deltas[i] ?? 0);
      const cf = n.callFrame;
      const where = cf.url === '' ? '(native)' : `${shortUrl(cf.url)}:${cf.lineNumber + 1}`;
      const key = `${cf.functionName || '(anonymous)'}\t${where}`;
      self.set(key, (self.get(key) ?? 0) + us);
      total += us;
    }
  }
  const idle = [...self.entries()].filter(([k]) => k.startsWith('(idle)')).reduce((a, [, v]) => a + v, 0);
  const busy = total - idle;
  const top = [...self.entries()]
    .filter(([k]) => !k.startsWith('(idle)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([k, us]) => {
      const [fn, where] = k.split('\t') as [string, string];
      return {
        fn,
        where,
        selfMs: Math.round(us / 1000),
        selfPct: busy === 0 ? 0 : Math.round((us / busy) * 1000) / 10,
      };
    });
  return {
    files: files.map((f) => join(dir, f)),
    totalMs: Math.round(total / 1000),
    idlePct: total === 0 ? 0 : Math.round((idle / total) * 1000) / 10,
    top,
  };
}

function shortUrl(url: string): string {
  const path = url.startsWith('file://') ? new URL(url).pathname : url;
  return path.startsWith(REPO_ROOT) ? relative(REPO_ROOT, path) : path;
}
