import { isIP } from 'node:net';
import { MeterdError } from '../errors/meterd-error.js';

/**
 * Configuration comes from the environment, is parsed once at start-up, and every problem is
 * reported together (a service that fails on the first bad variable makes an operator fix them one
 * restart at a time). The result is frozen; hot code receives it and never reads process.env.
 */
export interface VarSpec<T> {
  /** What the variable does, for the README's configuration table. */
  doc: string;
  /** Default when unset or empty; omit to make the variable required. */
  default?: string;
  /** Turns the raw string into a value, or throws an Error whose message says what is wrong. */
  parse: (raw: string) => T;
  /** Never print the value (keys, passwords). */
  secret?: boolean;
}

export type Spec = Record<string, VarSpec<unknown>>;
export type ConfigOf<S extends Spec> = { readonly [K in keyof S]: S[K] extends VarSpec<infer T> ? T : never };

export class ConfigError extends MeterdError {
  readonly problems: readonly string[];
  constructor(problems: string[]) {
    super('METERD_CONFIG_INVALID', `invalid configuration:\n  ${problems.join('\n  ')}`);
    this.problems = problems;
  }
}

export function loadConfig<S extends Spec>(spec: S, env: NodeJS.ProcessEnv = process.env): ConfigOf<S> {
  const out: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [name, v] of Object.entries(spec)) {
    const raw = env[name];
    const value = raw === undefined || raw === '' ? v.default : raw;
    if (value === undefined) {
      problems.push(`${name} is required: ${v.doc}`);
      continue;
    }
    try {
      out[name] = v.parse(value);
    } catch (err) {
      const shown = v.secret ? '(hidden)' : JSON.stringify(value);
      problems.push(`${name}=${shown} is invalid: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(out) as ConfigOf<S>;
}

// Parsers. Each throws an Error whose message completes "NAME=value is invalid: …".

export const str = (doc: string, def?: string, secret = false): VarSpec<string> => ({
  doc,
  ...(def === undefined ? {} : { default: def }),
  parse: (s) => s,
  secret,
});

export const int = (doc: string, def: number, min: number, max: number): VarSpec<number> => ({
  doc,
  default: String(def),
  parse(s) {
    if (!/^-?\d+$/.test(s)) throw new Error('expected a whole number');
    const n = Number(s);
    if (n < min || n > max) throw new Error(`expected a number from ${min} to ${max}`);
    return n;
  },
});

export const bool = (doc: string, def: boolean): VarSpec<boolean> => ({
  doc,
  default: String(def),
  parse(s) {
    if (s === 'true' || s === '1') return true;
    if (s === 'false' || s === '0') return false;
    throw new Error('expected true or false');
  },
});

export const oneOf = <T extends string>(doc: string, def: T, values: readonly T[]): VarSpec<T> => ({
  doc,
  default: def,
  parse(s) {
    if (!(values as readonly string[]).includes(s)) throw new Error(`expected one of ${values.join(', ')}`);
    return s as T;
  },
});

export const url = (doc: string, def: string, protocols: readonly string[], secret = false): VarSpec<URL> => ({
  doc,
  default: def,
  secret,
  parse(s) {
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      throw new Error(`not a URL (expected e.g. ${def})`);
    }
    if (!protocols.includes(u.protocol)) throw new Error(`protocol must be ${protocols.join(' or ')}`);
    if (u.hostname === '') throw new Error('the URL has no host');
    return u;
  },
});

/** Like url(), but empty (the default) means "not set": the caller falls back to another setting. */
export const optionalUrl = (doc: string, protocols: readonly string[], secret = false): VarSpec<URL | null> => {
  const inner = url(doc, 'postgres://host/db', protocols, secret);
  return { doc, default: '', secret, parse: (s) => (s === '' ? null : inner.parse(s)) };
};

/** The non-empty, trimmed items of a comma-separated setting. */
export function commaSeparated(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

/** Comma-separated IP addresses and CIDR blocks (IPv4 or IPv6), e.g. `10.0.0.0/8,::1`; '' is none. */
export const addressList = (doc: string, def: string): VarSpec<readonly string[]> => ({
  doc,
  default: def,
  parse(s) {
    const items = commaSeparated(s);
    for (const item of items) {
      const [addr, bits, extra] = item.split('/');
      const family = isIP(addr!);
      const maxBits = family === 6 ? 128 : 32;
      const bitsOk = bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= maxBits);
      if (family === 0 || extra !== undefined || !bitsOk)
        throw new Error(`${JSON.stringify(item)} is not an IP address or CIDR block`);
    }
    return Object.freeze(items);
  },
});

/**
 * Comma-separated `host:port` items (IPv6 as `[::1]:7000`), e.g. the seed nodes of a Redis Cluster;
 * '' is none.
 */
export const hostPortList = (doc: string): VarSpec<readonly { host: string; port: number }[]> => ({
  doc,
  default: '',
  parse(s) {
    const nodes = commaSeparated(s).map((item) => {
      const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s/@]+)):(\d{1,5})$/.exec(item);
      const port = m === null ? 0 : Number(m[3]);
      if (m === null || port < 1 || port > 65_535)
        throw new Error(`${JSON.stringify(item)} is not host:port (e.g. 10.0.0.5:6379 or [::1]:7000)`);
      return Object.freeze({ host: (m[1] ?? m[2])!, port });
    });
    return Object.freeze(nodes);
  },
});
