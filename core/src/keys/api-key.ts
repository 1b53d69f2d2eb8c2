import { createHash, randomBytes } from 'node:crypto';

/**
 * Workspace API keys: `sks_` + 43 base64url characters (32 random bytes = 256 bits of entropy).
 * Only the SHA-256 of the token is stored; a lookup hashes the presented token and finds the row by
 * that hash. A fast hash is right here (unlike passwords): the input already has 256 bits of
 * entropy, so there is nothing to brute-force, and ingest hashes on every request.
 */
export const KEY_PREFIX = 'sks_';
const TOKEN_RE = /^sks_[A-Za-z0-9_-]{43}$/;

export interface MintedKey {
  /** Shown once to the user, never stored. */
  token: string;
  /** SHA-256 of the token, what the database keeps. */
  hash: Buffer;
  /** First characters, safe to display so a user can tell keys apart. */
  displayPrefix: string;
}

export function mintKey(): MintedKey {
  const token = KEY_PREFIX + randomBytes(32).toString('base64url');
  return { token, hash: hashKey(token), displayPrefix: token.slice(0, 12) };
}

export function isWellFormedKey(token: string): boolean {
  return TOKEN_RE.test(token);
}

export function hashKey(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

export const SCOPES = ['meter:write', 'meter:read', 'admin', 'webhooks:write', 'provision:write'] as const;
export type Scope = (typeof SCOPES)[number];
export const DEFAULT_SCOPES: readonly Scope[] = ['meter:write', 'meter:read', 'admin'];
