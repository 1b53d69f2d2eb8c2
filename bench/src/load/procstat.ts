import { readFileSync, readdirSync } from 'node:fs';

/** Kernel clock ticks per second (USER_HZ); 100 on every Linux build that matters here. */
const TICKS = 100;

/**
 * CPU seconds (user + system, every thread) and resident memory of a process and its child
 * processes (the baseline runs as a node:cluster primary with workers), from /proc.
 */
export function readProc(pid: number): { cpuSec: number; rssBytes: number } | undefined {
  const own = readOne(pid);
  if (own === undefined) return undefined;
  let children: string[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
  } catch {
    // no children file: count the process alone
  }
  for (const c of children) {
    const r = readOne(Number(c));
    if (r) {
      own.cpuSec += r.cpuSec;
      own.rssBytes += r.rssBytes;
    }
  }
  return own;
}

function readOne(pid: number): { cpuSec: number; rssBytes: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may contain spaces.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpuSec = (Number(f[11]) + Number(f[12])) / TICKS;
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return { cpuSec, rssBytes: m ? Number(m[1]) * 1024 : 0 };
  } catch {
    return undefined;
  }
}

/** CPU use between calls, in percent of one core (200 % = both cores of this machine busy). */
export class CpuMeter {
  private lastCpu: number;
  private lastAt: number;
  constructor(private readonly read: () => number | undefined) {
    this.lastCpu = read() ?? 0;
    this.lastAt = performance.now();
  }
  sample(): number {
    const cpu = this.read() ?? this.lastCpu;
    const at = performance.now();
    const pct = ((cpu - this.lastCpu) / ((at - this.lastAt) / 1000)) * 100;
    this.lastCpu = cpu;
    this.lastAt = at;
    return Math.max(0, pct);
  }
}

export const selfCpuSeconds = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/**
 * Pids of local processes by command name (e.g. redis-server, clickhouse-serv), so a run can show
 * how busy the stores on this machine were: on 2 shared cores they compete with ingest for CPU.
 */
export function pidsByName(name: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() === name) out.push(Number(d));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}
