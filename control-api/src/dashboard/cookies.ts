/** The session cookie's name and attributes; `secure` follows PUBLIC_BASE_URL's scheme. */
export interface CookiePolicy {
  name: string;
  secure: boolean;
  maxAgeSeconds: number;
}

export function cookiePolicy(publicBaseUrl: URL, maxAgeSeconds: number): CookiePolicy {
  const secure = publicBaseUrl.protocol === 'https:';
  // __Host- binds the cookie to this exact origin (no Domain, Path=/, Secure) where HTTPS allows it.
  return { name: secure ? '__Host-meterd_session' : 'meterd_session', secure, maxAgeSeconds };
}

export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * SameSite=Lax rather than Strict: the links that lead into the dashboard come from elsewhere
 * (the signup answer's dashboard_url in an e-mail, Shopify's OAuth redirect back to onboarding) and
 * Strict would drop the cookie on exactly those top-level navigations. Lax still withholds it from
 * cross-site POSTs, and every state-changing call also needs the per-session X-CSRF-Token header.
 */
export function sessionCookie(p: CookiePolicy, value: string): string {
  return `${p.name}=${value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${p.maxAgeSeconds}${p.secure ? '; Secure' : ''}`;
}

export function clearedCookie(p: CookiePolicy): string {
  return `${p.name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0${p.secure ? '; Secure' : ''}`;
}
