import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { MeterdError } from '@meterd/core';

/**
 * Secrets at rest (webhook signing secrets, provision configs, Shopify tokens): AES-256-GCM with a
 * fresh 96-bit nonce per value. Stored as `v1.<base64 nonce|tag|ciphertext>`; the version prefix
 * leaves room for key rotation (a `v2` under a new key, decrypting both while re-encrypting).
 */
export class SecretBox {
  private readonly key: Buffer;

  constructor(keyBase64: string) {
    this.key = keyBase64 === '' ? DEV_KEY : Buffer.from(keyBase64, 'base64');
    if (this.key.length !== 32) throw new MeterdError('METERD_SECRETS_KEY_INVALID', 'SECRETS_KEY must be 32 bytes');
  }

  get usesDevelopmentKey(): boolean {
    return this.key.equals(DEV_KEY);
  }

  seal(plain: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, iv);
    const body = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
    return `v1.${Buffer.concat([iv, c.getAuthTag(), body]).toString('base64')}`;
  }

  open(sealed: string): string {
    if (!sealed.startsWith('v1.')) throw new MeterdError('METERD_SECRET_UNREADABLE', 'unknown secret format');
    const raw = Buffer.from(sealed.slice(3), 'base64');
    const d = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, 12));
    d.setAuthTag(raw.subarray(12, 28));
    try {
      return Buffer.concat([d.update(raw.subarray(28)), d.final()]).toString('utf8');
    } catch (err) {
      throw new MeterdError('METERD_SECRET_UNREADABLE', 'decrypting a stored secret (wrong SECRETS_KEY?)', { cause: err });
    }
  }
}

/** Public by construction: only for development, where losing confidentiality costs nothing. */
const DEV_KEY = createHash('sha256').update('meterd development secrets key: never use in production').digest();
