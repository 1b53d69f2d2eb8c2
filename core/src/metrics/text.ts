/** Prometheus text exposition format 0.0.4: the content type every /metrics answers with. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
const ESCAPE = /\\(.)/g;

/**
 * Reads Prometheus text (what MetricsRegistry.render() writes, and any exporter's /metrics):
 * `name{labels} value` lines to samples. Comments and malformed lines are skipped; label values
 * are unescaped (\" \\ \n); +Inf, -Inf and NaN are numbers like any other.
 */
export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (m === null) continue;
    const value = parseValue(m[3]!);
    if (value === undefined) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1]!] = unescape(l[2]!);
    out.push({ name: m[1]!, labels, value });
  }
  return out;
}

/** The sum of every sample named `name` (all label sets), 0 when there is none. */
export function sumOf(samples: readonly Sample[], name: string): number {
  let total = 0;
  for (const s of samples) if (s.name === name) total += s.value;
  return total;
}

function parseValue(text: string): number | undefined {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  const v = Number(text);
  return Number.isNaN(v) ? undefined : v;
}

function unescape(v: string): string {
  return v.replace(ESCAPE, (_, c: string) => (c === 'n' ? '\n' : c));
}
