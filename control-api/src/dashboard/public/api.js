// The dashboard's JSON API. The session cookie goes along by itself (HttpOnly: scripts never see
// it); state-changing calls carry the per-session CSRF token from the page's <meta>.

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.getAttribute('content') ?? '';

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `request failed (${status})`);
    this.status = status;
    this.code = body?.error?.code;
    this.field = body?.error?.field;
  }
}

// One navigation away per page: a sign-out (or the first 401) leaves, and the 401s of requests still
// in flight must not start a second navigation that aborts the first.
let leaving = false;

export function leave(url) {
  if (leaving) return;
  leaving = true;
  location.assign(url);
}

export function startLeaving() {
  leaving = true;
}

export async function api(method, path, body) {
  const headers = { accept: 'application/json' };
  if (method !== 'GET') headers['x-csrf-token'] = csrf();
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`/dashboard/api/${path}`, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) {
    leave(`/dashboard/signin?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new ApiError(401, null);
  }
  const json = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}
