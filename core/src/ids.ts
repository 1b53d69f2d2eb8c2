import { randomBytes, randomUUID } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** `prefix_` + 20 base62 characters (~119 bits): workspace, key and webhook ids. */
export function newId(prefix: string, length = 20): string {
  const bytes = randomBytes(length);
  let s = prefix + '_';
  // 248 = 4 × 62: rejection-free would need resampling; the tiny bias of `% 62` on 256 values is
  // irrelevant for identifiers, which need uniqueness, not secrecy.
  for (let i = 0; i < length; i++) s += ALPHABET[bytes[i]! % 62];
  return s;
}

/** Event ids: randomUUID draws from a cached entropy pool, cheap enough for the ingest hot path. */
export function newEventId(): string {
  return 'evt_' + randomUUID().replace(/-/g, '');
}
