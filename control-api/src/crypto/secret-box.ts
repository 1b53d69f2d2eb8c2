import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { MeterdError } from '@meterd/core/errors';

/**
 * Secrets at rest (webhook signing secrets, provision configs, Shopify tokens): AES-256-GCM with a
 * fresh 96-bit nonce per value, stored as `v2.<kid>.<base64 nonce|tag|ciphertext>`. The key id
 * makes rotation possible: values are sealed with SECRETS_KEY and opened with whichever key their
 * id names, SECRETS_KEY or one of SECRETS_KEYS_OLD (docs/security.md has the procedure).
 * Values written before key ids (`v1.<base64>`) are tried against every configured key; GCM's tag
 * tells the right one. `aad` (associated data) binds a value to where it is stored: it opens only
 * with the same `aad`, so a sealed value copied into another row does not decrypt.
 */
export class SecretBox {
  private readonly current: { kid: string; key: Buffer };
  private readonly byKid = new Map<string, Buffer>();

  /** `currentBase64` '' means the public development key (loadControlConfig allows it only in development). */
  constructor(currentBase64: string, oldBase64: readonly string[] = []) {
    const keys = [currentBase64 === '' ? DEV_KEY : decodeKey(currentBase64), ...oldBase64.map(decodeKey)];
    for (const key of keys) {
      const kid = keyId(key);
      const known = this.byKid.get(kid);
      if (known !== undefined && !known.equals(key))
        throw new MeterdError(
          'METERD_SECRETS_KEY_INVALID',
          `two secrets keys share the key id ${kid}; generate a new one`,
        );
      this.byKid.set(kid, key);
    }
    this.current = { kid: keyId(keys[0]!), key: keys[0]! };
  }

  get usesDevelopmentKey(): boolean {
    return this.current.key.equals(DEV_KEY);
  }

  seal(plain: string, aad?: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.current.key, iv);
    if (aad !== undefined) c.setAAD(Buffer.from(aad, 'utf8'));
    const body = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
    return `v2.${this.current.kid}.${Buffer.concat([iv, c.getAuthTag(), body]).toString('base64')}`;
  }

  open(sealed: string, aad?: string): string {
    if (sealed.startsWith('v1.')) {
      const raw = Buffer.from(sealed.slice(3), 'base64');
      for (const key of this.byKid.values()) {
        const plain = tryOpen(key, raw, aad);
        if (plain !== undefined) return plain;
      }
      throw new MeterdError(
        'METERD_SECRET_UNREADABLE',
        'decrypting a stored secret written before key ids: no configured key (SECRETS_KEY, SECRETS_KEYS_OLD) opens it',
      );
    }
    const m = /^v2\.([0-9a-f]{8})\.(.*)$/s.exec(sealed);
    if (m === null) throw new MeterdError('METERD_SECRET_UNREADABLE', 'unknown secret format');
    const key = this.byKid.get(m[1]!);
    if (key === undefined)
      throw new MeterdError(
        'METERD_SECRET_UNREADABLE',
        `a stored secret is encrypted under key id ${m[1]}, which is neither SECRETS_KEY nor in SECRETS_KEYS_OLD`,
      );
    const plain = tryOpen(key, Buffer.from(m[2]!, 'base64'), aad);
    if (plain === undefined)
      throw new MeterdError(
        'METERD_SECRET_UNREADABLE',
        `decrypting a stored secret under key id ${m[1]} failed (tampered or corrupt)`,
      );
    return plain;
  }

  /** True when `sealed` is not under the current key: the rewrap command re-seals it. */
  isStale(sealed: string): boolean {
    return !sealed.startsWith(`v2.${this.current.kid}.`);
  }
}

/** A key's public id: 8 hex digits of a hash that reveals nothing usable about a random 256-bit key. */
export function keyId(key: Buffer): string {
  return createHash('sha256').update('meterd secrets key id\0').update(key).digest('hex').slice(0, 8);
}

function decodeKey(b64: string): Buffer {
  const key = Buffer.from(b64, 'base64');
  if (key.length !== 32)
    throw new MeterdError('METERD_SECRETS_KEY_INVALID', 'a secrets key must be 32 bytes, base64-encoded');
  return key;
}

/** undefined when the tag does not verify under `key` and `aad` (the wrong key or row, or tampering). */
function tryOpen(key: Buffer, raw: Buffer, aad: string | undefined): string | undefined {
  if (raw.length < 28) return undefined;
  const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
  if (aad !== undefined) d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(raw.subarray(12, 28));
  try {
    return Buffer.concat([d.update(raw.subarray(28)), d.final()]).toString('utf8');
  } catch {
    return undefined; // the authentication tag did not verify: the caller reports it
  }
}

/** Public by construction: only for development, where losing confidentiality costs nothing. */
const DEV_KEY = createHash('sha256').update('meterd development secrets key: never use in production').digest();
