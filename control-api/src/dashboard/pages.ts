import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { hidden, type DashCtx } from './context.js';
import { resolveSession, signedInWithTestKey } from './guard.js';
import { type Environment } from '@meterd/core/keys';

/** Plain files next to the sources: no build step, no CDN, nothing fetched from elsewhere. */
const PUBLIC_DIR = new URL('../../../src/dashboard/public/', import.meta.url);
const ASSETS: Record<string, string> = {
  'app.js': 'text/javascript; charset=utf-8',
  'api.js': 'text/javascript; charset=utf-8',
  'chart.js': 'text/javascript; charset=utf-8',
  'dom.js': 'text/javascript; charset=utf-8',
  'pages.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

export const PAGES = [
  { path: 'overview', title: 'Overview' },
  { path: 'onboarding', title: 'Get started' },
  { path: 'events', title: 'Events' },
  { path: 'meters', title: 'Meters' },
  { path: 'webhooks', title: 'Webhooks' },
  { path: 'keys', title: 'API keys' },
  { path: 'billing', title: 'Billing' },
] as const;

/** Only this origin's own files; no inline script, so an injected <script> cannot run. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function secured(reply: FastifyReply): FastifyReply {
  return reply
    .header('content-security-policy', CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('x-frame-options', 'DENY');
}

/**
 * The environment switch (docs/api.md §13): live and test for a session signed in with a live key,
 * test alone for one signed in with a test key. Test pages carry a banner, so test numbers are never
 * mistaken for live ones.
 */
function environmentSwitch(e: { current: Environment; liveAllowed: boolean }): string {
  const option = (v: Environment, label: string) =>
    `<option value="${v}"${v === e.current ? ' selected' : ''}>${label}</option>`;
  return `<label class="env">Environment <select id="environment">${e.liveAllowed ? option('live', 'Live') : ''}${option('test', 'Test')}</select></label>`;
}

function shell(o: {
  page: string;
  title: string;
  csrf?: string;
  workspace?: string;
  environment?: { current: Environment; liveAllowed: boolean };
  body: string;
}): string {
  const nav =
    o.csrf === undefined
      ? ''
      : `
  <nav class="nav" aria-label="Dashboard sections"><ul>
    ${PAGES.map((p) => `<li><a href="/dashboard/${p.path}"${p.path === o.page ? ' aria-current="page"' : ''}>${p.title}</a></li>`).join('')}
  </ul>
  <button type="button" id="signout" class="link" aria-label="Sign out">Sign out</button></nav>`;
  return `<!doctype html>
<html lang="en"><head>
<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(o.title)} · meterd</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/dashboard/assets/style.css">
${o.csrf === undefined ? '' : `<meta name="csrf-token" content="${esc(o.csrf)}">`}
<script type="module" src="/dashboard/assets/app.js"></script>
</head><body data-page="${esc(o.page)}">
<header class="top"><a class="brand" href="/dashboard/overview">meterd</a>${o.workspace === undefined ? '' : `<span class="ws">${esc(o.workspace)}</span>`}${o.environment === undefined ? '' : environmentSwitch(o.environment)}${nav}</header>
${o.environment?.current === 'test' ? '<p class="test-banner" role="status">Test environment: test keys, test events and test webhooks; nothing here is billed.</p>' : ''}
<main id="main" tabindex="-1"><h1>${esc(o.title)}</h1>${o.body}</main>
</body></html>`;
}

const SIGNIN_BODY = `
<form id="signin" class="card narrow" method="post" action="/dashboard/api/session" autocomplete="off">
  <p>Sign in with an API key of your workspace that has the <code>admin</code> scope (the <code>sks_…</code> token signup returned).</p>
  <label for="api_key">API key</label>
  <input id="api_key" name="api_key" type="password" required autocomplete="off" spellcheck="false" placeholder="sks_…">
  <button type="submit">Sign in</button>
  <p id="signin-error" class="error" role="alert" hidden></p>
</form>`;

/** Redirect targets after sign-in: dashboard pages only, never another origin. */
function safeNext(next: unknown): string {
  return typeof next === 'string' && /^\/dashboard\/[a-z]+(\?[A-Za-z0-9=&_%-]*)?$/.test(next)
    ? next
    : '/dashboard/overview';
}

export function pageRoutes(app: FastifyInstance, d: DashCtx): void {
  const files = new Map(
    Object.entries(ASSETS).map(([name, type]) => [name, { type, body: readFileSync(new URL(name, PUBLIC_DIR)) }]),
  );

  app.get<{ Params: { file: string } }>('/dashboard/assets/:file', { schema: hidden }, async (req, reply) => {
    const f = files.get(req.params.file);
    if (f === undefined) return reply.callNotFound();
    return reply
      .header('x-content-type-options', 'nosniff')
      .header('cache-control', 'no-cache')
      .type(f.type)
      .send(f.body);
  });

  app.get('/dashboard', { schema: hidden }, async (_req, reply) => reply.redirect('/dashboard/overview', 302));

  app.get<{ Querystring: { next?: string } }>('/dashboard/signin', { schema: hidden }, async (req, reply) => {
    if ((await resolveSession(req, d.sessions, d.services.workspaces, d.cookie)) !== undefined)
      return reply.redirect(safeNext(req.query.next), 302);
    return secured(reply)
      .header('cache-control', 'no-store')
      .type('text/html; charset=utf-8')
      .send(
        shell({
          page: 'signin',
          title: 'Sign in',
          body: SIGNIN_BODY.replace('<form', `<form data-next="${esc(safeNext(req.query.next))}"`),
        }),
      );
  });

  for (const p of PAGES) {
    app.get(`/dashboard/${p.path}`, { schema: hidden }, async (req, reply) => {
      const dash = await resolveSession(req, d.sessions, d.services.workspaces, d.cookie);
      if (dash === undefined) {
        const next = req.url.startsWith(`/dashboard/${p.path}`) ? req.url : `/dashboard/${p.path}`;
        return reply.redirect(`/dashboard/signin?next=${encodeURIComponent(safeNext(next))}`, 302);
      }
      return secured(reply)
        .header('cache-control', 'no-store')
        .type('text/html; charset=utf-8')
        .send(
          shell({
            page: p.path,
            title: p.title,
            csrf: dash.session.csrf,
            workspace: `${dash.workspace.display_name} (${dash.workspace.id})`,
            environment: {
              current: dash.workspace.environment,
              liveAllowed: !signedInWithTestKey(dash),
            },
            body: '<div id="content" aria-live="polite"><p class="muted">Loading…</p></div>',
          }),
        );
    });
  }
}
