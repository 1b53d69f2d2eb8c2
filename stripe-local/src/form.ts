import { invalid, unknownParam } from './stripe-error.js';

/**
 * Stripe v1 bodies and query strings are form-encoded with bracketed nesting:
 * `payload[value]=3`, `default_aggregation[formula]=sum`, `items[0][price]=p`. This turns them
 * into plain objects (numeric keys stay object keys; v1 routes here never need real arrays).
 */
export type FormValue = string | FormObject;
export interface FormObject {
  [k: string]: FormValue;
}

export function parseForm(text: string): FormObject {
  const out: FormObject = {};
  for (const [rawKey, value] of new URLSearchParams(text)) {
    const path = splitKey(rawKey);
    let node: FormObject = out;
    for (let i = 0; i < path.length - 1; i++) {
      const k = path[i]!;
      const next = node[k];
      if (next === undefined) node = node[k] = {};
      else if (typeof next === 'string') throw invalid(`Invalid nested parameter ${rawKey}.`, rawKey);
      else node = next;
    }
    node[path[path.length - 1]!] = value;
  }
  return out;
}

function splitKey(key: string): string[] {
  const first = key.indexOf('[');
  if (first === -1) return [key];
  const parts = [key.slice(0, first)];
  for (const m of key.slice(first).matchAll(/\[([^\]]*)\]/g)) parts.push(m[1]!);
  return parts;
}

export function str(o: FormObject, key: string): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalid(`Invalid string: ${key}`, key);
  return v;
}

export function obj(o: FormObject, key: string): FormObject | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v === 'string') {
    if (v === '') return {};
    throw invalid(`Invalid object: ${key}`, key);
  }
  return v;
}

/** Which parameters an endpoint takes: `true` a scalar, `'map'` free-form keys (metadata, payload), or nested params. */
export interface ParamSpec {
  [k: string]: true | 'map' | ParamSpec;
}

/**
 * Refuses a parameter the endpoint does not take, as Stripe does ("Received unknown parameter: x",
 * code `parameter_unknown`), so a typo cannot be silently ignored. Works on v1 forms and v2 JSON.
 */
export function onlyParams(o: Record<string, unknown>, spec: ParamSpec, prefix = ''): void {
  for (const [k, v] of Object.entries(o)) {
    const name = prefix === '' ? k : `${prefix}[${k}]`;
    const s = spec[k];
    if (s === undefined) throw unknownParam(name);
    if (typeof s === 'object' && typeof v === 'object' && v !== null && !Array.isArray(v))
      onlyParams(v as Record<string, unknown>, s, name);
  }
}
