// Entry point of every dashboard page: sign-in, sign-out, and the page's renderer with its refresh timer.
import { api, startLeaving } from './api.js';
import * as pages from './pages.js';

const REFRESH_MS = 3000;

function signin() {
  const form = document.getElementById('signin');
  const err = document.getElementById('signin-error');
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.hidden = true;
    const input = document.getElementById('api_key');
    // The key goes once, in a POST body; it is not kept anywhere in the page afterwards.
    const res = await fetch('/dashboard/api/session', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify({ api_key: input.value }),
    }).catch(() => null);
    input.value = '';
    if (res && res.ok) return location.assign(form.dataset.next || '/dashboard/overview');
    const body = res ? await res.json().catch(() => null) : null;
    err.textContent = body?.error?.message ?? 'Sign-in failed: the server did not answer.';
    err.hidden = false;
    input.focus();
  });
}

async function main() {
  const page = document.body.dataset.page;
  if (page === 'signin') return signin();
  document.getElementById('signout')?.addEventListener('click', async () => {
    // The page's own requests still in flight will get 401 once the session is gone: they must not
    // navigate to the sign-in page with ?next= and abort this navigation.
    startLeaving();
    await api('DELETE', 'session').catch(() => {});
    location.assign('/dashboard/signin');
  });
  // The environment switch: the session remembers the choice, and the page reloads on the other bucket.
  document.getElementById('environment')?.addEventListener('change', async (e) => {
    await api('POST', 'environment', { environment: e.target.value });
    location.reload();
  });
  const render = pages[page];
  if (typeof render !== 'function') return;
  const refresh = await render();
  if (typeof refresh === 'function') {
    // Poll only while the tab is visible: a background tab costs the stores nothing.
    setInterval(() => {
      if (document.visibilityState === 'visible') void refresh();
    }, REFRESH_MS);
  }
}

void main();
