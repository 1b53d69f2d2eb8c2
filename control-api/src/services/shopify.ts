import { randomBytes } from 'node:crypto';
import { ApiError } from '@meterd/core/errors';
import { inTransaction, type Pool } from '@meterd/core/store';
import type { ControlConfig } from '../config.js';
import type { SecretBox } from '../crypto/secret-box.js';
import { SHOP_DOMAIN, verifyShopifyHmac } from '../shopify/oauth.js';
import { emitEvent } from '../webhooks/outbox.js';

const STATE_TTL_MINUTES = 10;

export type ShopifySettings = Pick<
  ControlConfig,
  'SHOPIFY_API_KEY' | 'SHOPIFY_API_SECRET' | 'SHOPIFY_SCOPES' | 'SHOPIFY_TOKEN_URL_TEMPLATE' | 'PUBLIC_BASE_URL'
>;

/**
 * Shopify connect: `start` returns the authorize URL with a single-use state; `complete` checks the
 * callback's HMAC and state and stores the shop's token encrypted.
 */
export class ShopifyService {
  private readonly callbackUrl: string;

  constructor(
    private readonly pool: Pool,
    private readonly box: SecretBox,
    private readonly cfg: ShopifySettings,
  ) {
    this.callbackUrl = new URL('/api/v1/shopify/callback', cfg.PUBLIC_BASE_URL).toString();
  }

  /** Refuses before any other check when Shopify is not configured. */
  requireConfigured(): void {
    if (this.cfg.SHOPIFY_API_KEY === '' || this.cfg.SHOPIFY_API_SECRET === '')
      throw new ApiError('not_configured', 'Shopify is not configured on this server');
  }

  async start(workspaceId: string, shopDomain: string): Promise<{ authorizeUrl: string; stateTtlSeconds: number }> {
    this.requireConfigured();
    const shop = shopDomain.toLowerCase();
    if (!SHOP_DOMAIN.test(shop))
      throw new ApiError('invalid_field', 'shop_domain must be <store>.myshopify.com', 'shop_domain');
    const state = randomBytes(24).toString('base64url');
    await this.pool.query(
      `INSERT INTO shopify_oauth_states (state, workspace_id, shop_domain, expires_at) VALUES ($1, $2, $3, now() + make_interval(mins => $4))`,
      [state, workspaceId, shop, STATE_TTL_MINUTES],
    );
    const u = new URL(`https://${shop}/admin/oauth/authorize`);
    u.search = new URLSearchParams({
      client_id: this.cfg.SHOPIFY_API_KEY,
      scope: this.cfg.SHOPIFY_SCOPES,
      redirect_uri: this.callbackUrl,
      state,
    }).toString();
    return { authorizeUrl: u.toString(), stateTtlSeconds: STATE_TTL_MINUTES * 60 };
  }

  /** Shopify's OAuth callback: returns the workspace the shop is now connected to. */
  async complete(q: Record<string, string>): Promise<string> {
    this.requireConfigured();
    const cfg = this.cfg;
    if (!verifyShopifyHmac(q, cfg.SHOPIFY_API_SECRET))
      throw new ApiError('invalid_signature', 'the Shopify HMAC does not verify');
    const shop = q.shop ?? '';
    if (!SHOP_DOMAIN.test(shop) || typeof q.code !== 'string' || typeof q.state !== 'string')
      throw new ApiError('invalid_signature', 'the callback lacks shop, code or state');
    // Single use: the state row is consumed whether or not the rest succeeds.
    const { rows } = await this.pool.query<{ workspace_id: string }>(
      'DELETE FROM shopify_oauth_states WHERE state = $1 AND shop_domain = $2 AND expires_at > now() RETURNING workspace_id',
      [q.state, shop],
    );
    if (rows.length === 0) throw new ApiError('invalid_signature', 'unknown, expired or already used state');
    const wsId = rows[0]!.workspace_id;
    const token = await exchangeCode(
      cfg.SHOPIFY_TOKEN_URL_TEMPLATE.replace('{shop}', shop),
      cfg.SHOPIFY_API_KEY,
      cfg.SHOPIFY_API_SECRET,
      q.code,
    );
    await inTransaction(this.pool, async (c) => {
      await c.query(
        `INSERT INTO shopify_connections (workspace_id, shop_domain, access_token_enc, scopes) VALUES ($1, $2, $3, $4)
         ON CONFLICT (workspace_id, shop_domain) DO UPDATE SET access_token_enc = EXCLUDED.access_token_enc, scopes = EXCLUDED.scopes, connected_at = now()`,
        [wsId, shop, this.box.seal(token.access_token), token.scope ?? null],
      );
      await emitEvent(c, wsId, 'shopify.connected', { shop_domain: shop, scopes: token.scope ?? null });
    });
    return wsId;
  }

  /** The shop the workspace connected last, or null. */
  async latestShop(workspaceId: string): Promise<string | null> {
    const { rows } = await this.pool.query<{ shop_domain: string }>(
      'SELECT shop_domain FROM shopify_connections WHERE workspace_id = $1 ORDER BY connected_at DESC LIMIT 1',
      [workspaceId],
    );
    return rows[0]?.shop_domain ?? null;
  }
}

async function exchangeCode(
  url: string,
  clientId: string,
  secret: string,
  code: string,
): Promise<{ access_token: string; scope?: string }> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ client_id: clientId, client_secret: secret, code }),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    throw new ApiError('upstream_error', 'exchanging the Shopify code failed', undefined, {
      retryable: true,
      cause: err,
    });
  }
  const body = (await res.json().catch(() => ({}))) as { access_token?: string; scope?: string };
  if (!res.ok || typeof body.access_token !== 'string')
    throw new ApiError('upstream_error', `Shopify refused the code (${res.status})`);
  return { access_token: body.access_token, ...(body.scope ? { scope: body.scope } : {}) };
}
