import type Stripe from 'stripe';
import type { Pacer } from './pacer.js';

/** Renew this long before Stripe's 15-minute expiry, so no call starts with a token about to lapse. */
const RENEW_MARGIN_MS = 60_000;

/** Holds the v2 meter event session token, creating a new session before the old one expires. */
export class MeterEventSession {
  private token: string | undefined;
  private expiresAt = 0;
  private pending: Promise<string> | undefined;

  constructor(
    private readonly stripe: Stripe,
    private readonly pacer: Pacer,
  ) {}

  async get(): Promise<string> {
    if (this.token !== undefined && Date.now() < this.expiresAt - RENEW_MARGIN_MS) return this.token;
    // One renewal at a time: parallel batches share it.
    this.pending ??= this.renew().finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  /** Called when Stripe says the token expired early (e.g. clock skew, or revoked). */
  invalidate(token: string): void {
    if (this.token === token) this.token = undefined;
  }

  private async renew(): Promise<string> {
    await this.pacer.take();
    const s = await this.stripe.v2.billing.meterEventSession.create();
    this.token = s.authentication_token;
    this.expiresAt = Date.parse(s.expires_at);
    return s.authentication_token;
  }
}
