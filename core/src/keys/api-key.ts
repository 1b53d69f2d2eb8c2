import { createHash, randomBytes } from 'node:crypto';

/**
 * Workspace API keys: `sks_live_` or `sks_test_` + 43 base64url characters (32 random bytes = 256
 * bits of entropy). The environment in the prefix is for people and secret scanners (a test key
 * pasted into production is visible at a glance); what a key may touch is decided by its row (the
 * workspace bucket it belongs to), never by the prefix. Keys minted before environments existed
 * are `sks_` + 43 characters and stay valid: they belong to live buckets (docs/security.md).
 * Only the SHA-256 of the token is stored; a lookup hashes the presented token and finds the row by
 * that hash. A fast hash is right here (unlike passwords): the input already has 256 bits of
 * entropy, so there is nothing to brute-force, and ingest hashes on every request.
 */
export const KEY_PREFIX = 'sks_';
export const ENVIRONMENTS = ['live', 'test'] as const;
export type Environment = (typeof ENVIRONMENTS)[number];
// The lengths tell the forms apart: 4 + 43 (legacy live) vs 9 + 43.
const TOKEN_RE = /^sks_(?:(?:live|test)_)?[A-Za-z0-9_-]{43}$/;

export interface MintedKey {
  /** Shown once to the user, never stored. */
  token: string;
  /** SHA-256 of the token, what the database keeps. */
  hash: Buffer;
  /** First characters, safe to display so a user can tell keys apart (the environment and 8 random characters). */
  displayPrefix: string;
}

export function mintKey(environment: Environment = 'live'): MintedKey {
  const prefix = `${KEY_PREFIX}${environment}_`;
  const token = prefix + randomBytes(32).toString('base64url');
  return { token, hash: hashKey(token), displayPrefix: token.slice(0, prefix.length + 8) };
}

export function isWellFormedKey(token: string): boolean {
  return TOKEN_RE.test(token);
}

/** The environment a well-formed token names: its prefix, or live for a key minted before environments. */
export function keyEnvironment(token: string): Environment {
  return token.startsWith('sks_test_') && token.length === 52 ? 'test' : 'live';
}

export function hashKey(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

export const SCOPES = ['meter:write', 'meter:read', 'admin', 'webhooks:write', 'provision:write'] as const;
export type Scope = (typeof SCOPES)[number];
export const DEFAULT_SCOPES: readonly Scope[] = ['meter:write', 'meter:read', 'admin'];
