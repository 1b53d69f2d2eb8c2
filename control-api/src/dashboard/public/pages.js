// One renderer per page. Each draws into #content from the dashboard API and may return a refresh
// function that app.js calls on a timer.
import { api } from './api.js';
import { renderChart, renderSeriesChart, seriesClass } from './chart.js';
import { badge, fmtAgo, fmtInt, fmtMoney, fmtTime, h, replace, setCurrencyExponents, table } from './dom.js';

const content = () => document.getElementById('content');

function notice(text, kind = 'info') {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

async function guarded(el, fn) {
  try {
    await fn();
  } catch (err) {
    if (err.status !== 401) el.prepend(notice(err.message, 'error'));
  }
}

// ---------- overview ----------

const rate = { last: null, ingestLast: null };
const view = { granularity: 'hour', currency: null };

function filled(o, currency) {
  const by = new Map(o.series.filter((p) => p.currency === currency).map((p) => [p.t, p]));
  const out = [];
  for (let t = o.range.from; t < o.range.to; t += o.range.step)
    out.push(by.get(t) ?? { t, events: '0', gmv_cents: '0' });
  return out;
}

function perSecond(prev, cur, value) {
  if (prev === null || cur.at <= prev.at || value(cur) < value(prev)) return null;
  return (value(cur) - value(prev)) / ((cur.at - prev.at) / 1000);
}

function card(label, value, detail, id) {
  return h(
    'section',
    { class: 'card stat', 'aria-labelledby': `${id}-label` },
    h('h2', { id: `${id}-label` }, label),
    h('p', { class: 'big', id }, value),
    detail ? h('p', { class: 'muted' }, detail) : null,
  );
}

export async function overview() {
  const root = content();
  const controls = h(
    'form',
    { class: 'controls', onsubmit: (e) => e.preventDefault() },
    h('label', { for: 'granularity' }, 'Chart by '),
    h(
      'select',
      {
        id: 'granularity',
        onchange: (e) => {
          view.granularity = e.target.value;
          void refresh();
        },
      },
      h('option', { value: 'hour' }, 'hour (last 48 hours)'),
      h('option', { value: 'day' }, 'day (last 30 days)'),
    ),
    h('label', { for: 'currency' }, ' Currency '),
    h('select', {
      id: 'currency',
      onchange: (e) => {
        view.currency = e.target.value;
        void refresh();
      },
    }),
  );
  const body = h('div', { id: 'overview-body' });
  replace(root, controls, body);

  async function refresh() {
    const o = await api('GET', `overview?granularity=${view.granularity}`);
    setCurrencyExponents(o.currency_exponents);
    const at = Date.now();
    const blocks = [];
    // Usage against the plan, and the workspace's own event rate from its exact quota counter.
    const usage = o.usage;
    const usedOk = typeof usage.used === 'number';
    const cur = usedOk ? { at, n: usage.used } : null;
    const eps = cur ? perSecond(rate.last, cur, (x) => x.n) : null;
    if (cur) rate.last = cur;
    const pct = usedOk && usage.limit ? Math.min(100, (usage.used / usage.limit) * 100) : null;
    blocks.push(
      h(
        'div',
        { class: 'stats' },
        h(
          'section',
          { class: 'card stat', 'aria-labelledby': 'usage-label' },
          h('h2', { id: 'usage-label' }, `Events this period (${usage.period.slice(0, 4)}-${usage.period.slice(4)})`),
          h(
            'p',
            { class: 'big', id: 'usage-used' },
            usedOk
              ? `${fmtInt(String(usage.used))} / ${usage.limit === null ? 'unlimited' : fmtInt(String(usage.limit))}`
              : '—',
          ),
          pct === null
            ? null
            : h('progress', {
                max: 100,
                value: pct.toFixed(1),
                'aria-label': `${pct.toFixed(1)} % of the ${usage.plan} plan's quota used`,
              }),
          h('p', { class: 'muted' }, usedOk ? `${usage.plan} plan` : usage.used.unavailable),
        ),
        card(
          'Events per second now',
          eps === null ? 'measuring…' : eps.toFixed(eps < 10 ? 2 : 0),
          'this workspace, accepted events (from the quota counter)',
          'eps',
        ),
        card(
          'Rollup freshness',
          o.freshness.unavailable ? '—' : fmtAgo(o.freshness.lag_ms),
          o.freshness.unavailable ?? `rollups include every event stored before ${fmtTime(o.freshness.as_of)}`,
          'freshness',
        ),
      ),
    );

    // The chart, for one currency at a time (GMV of different currencies never adds up).
    const chartCard = h(
      'section',
      { class: 'card', 'aria-labelledby': 'chart-label' },
      h('h2', { id: 'chart-label' }, 'GMV and events over time'),
    );
    if (o.series.unavailable) chartCard.append(notice(o.series.unavailable, 'error'));
    else {
      const currencies = [...new Set(o.series.map((p) => p.currency))].sort();
      if (currencies.length === 0) currencies.push('USD');
      if (!currencies.includes(view.currency)) view.currency = currencies[0];
      const sel = document.getElementById('currency');
      replace(
        sel,
        currencies.map((c) => h('option', { value: c, selected: c === view.currency }, c)),
      );
      const windows = filled(o, view.currency);
      const events = windows.reduce((n, w) => n + BigInt(w.events), 0n).toString();
      const gmv = windows.reduce((n, w) => n + BigInt(w.gmv_cents), 0n).toString();
      const span = view.granularity === 'hour' ? 'last 48 hours' : 'last 30 days';
      const summary = `${span}: ${fmtInt(events)} event${events === '1' ? '' : 's'}, GMV ${fmtMoney(gmv, view.currency)}`;
      chartCard.append(
        h('p', { id: 'chart-summary', 'data-events': events, 'data-gmv-cents': gmv }, summary),
        renderChart(windows, {
          currency: view.currency,
          granularity: view.granularity,
          summary: `Chart by ${view.granularity}, ${summary}`,
        }),
        h(
          'p',
          { class: 'legend muted' },
          h('span', { class: 'key bar-key' }),
          ' events per window ',
          h('span', { class: 'key line-key' }),
          ' GMV per window',
        ),
        h(
          'details',
          {},
          h('summary', {}, 'Chart data as a table'),
          table(
            `Windows with events (${view.currency})`,
            ['Window start', 'Events', 'GMV'],
            windows
              .filter((w) => w.events !== '0')
              .map((w) =>
                h(
                  'tr',
                  {},
                  h('td', {}, fmtTime(w.t)),
                  h('td', {}, fmtInt(w.events)),
                  h('td', {}, fmtMoney(w.gmv_cents, view.currency)),
                ),
              ),
          ),
        ),
      );
    }
    blocks.push(chartCard);

    blocks.push(
      h(
        'section',
        { class: 'card' },
        h('h2', {}, 'This month by event type'),
        o.month_totals.unavailable
          ? notice(o.month_totals.unavailable, 'error')
          : table(
              'Rollup totals for the current month',
              ['Event type', 'Events', 'Quantity', 'GMV'],
              o.month_totals.map((r) =>
                h(
                  'tr',
                  {},
                  h('td', {}, r.event_type),
                  h('td', {}, fmtInt(r.events)),
                  h('td', {}, fmtInt(r.quantity)),
                  h('td', {}, fmtMoney(r.gmv_cents, r.currency)),
                ),
              ),
            ),
      ),
    );

    // Ingest's counters: per process and for all workspaces, and the page says so.
    const ing = o.ingest;
    const ingCur = ing.reachable ? { at: ing.scrapedAt, n: ing.accepted } : null;
    const ingEps = ingCur ? perSecond(rate.ingestLast, ingCur, (x) => x.n) : null;
    if (ingCur) rate.ingestLast = ingCur;
    const reasons = Object.entries(ing.rejected).sort((a, b) => b[1] - a[1]);
    blocks.push(
      h(
        'section',
        { class: 'card', 'aria-labelledby': 'ingest-label' },
        h('h2', { id: 'ingest-label' }, 'Ingest: duplicates and rejects'),
        h(
          'p',
          { class: 'muted' },
          `Platform-wide: these counters come from the ingest process at ${ing.source} (its /metrics). They cover every workspace it serves, not only this one, and restart from zero when that process restarts.`,
        ),
        ing.reachable
          ? h(
              'dl',
              { class: 'kv' },
              h('dt', {}, 'Accepted events per second'),
              h('dd', { id: 'ingest-eps' }, ingEps === null ? 'measuring…' : ingEps.toFixed(1)),
              h('dt', {}, 'Accepted since start'),
              h('dd', {}, fmtInt(String(ing.accepted))),
              h('dt', {}, 'Duplicates since start'),
              h('dd', { id: 'ingest-duplicates' }, fmtInt(String(ing.duplicate))),
            )
          : notice("ingest's /metrics is unreachable right now", 'error'),
        ing.reachable
          ? table(
              'Rejected events by reason',
              ['Reason (error code)', 'Events'],
              reasons.map(([r, n]) => h('tr', {}, h('td', {}, h('code', {}, r)), h('td', {}, fmtInt(String(n))))),
            )
          : null,
      ),
    );
    replace(body, blocks);
  }
  await guarded(body, refresh);
  return () => guarded(body, refresh);
}

// ---------- onboarding ----------

function code(text) {
  return h('pre', { class: 'code', tabindex: 0 }, h('code', {}, text));
}

export async function onboarding() {
  const root = content();
  const query = new URLSearchParams(location.search).get('shopify') === 'connected' ? '?shopify=connected' : '';
  async function refresh() {
    const o = await api('GET', `onboarding${query}`);
    const [key, prov, first] = o.steps;
    const state = (s) =>
      s.done ? badge('Done', 'ok') : s.unlocked === false ? badge('Locked', 'muted') : badge('To do', 'todo');
    const base = o.meter_url.replace(/\/$/, '');
    const items = [
      h(
        'li',
        { class: 'step', id: 'step-api_key', 'data-done': key.done },
        h('h2', {}, '1. API key ', state(key)),
        h(
          'p',
          {},
          `Your workspace ${o.workspace_id} has ${key.live_keys} live API key${key.live_keys === 1 ? '' : 's'}. Export the token signup returned (it is shown only once):`,
        ),
        code(`export SKS=sks_…\nexport WS=${o.workspace_id}`),
        h('p', {}, h('a', { href: '/dashboard/keys' }, 'Manage API keys')),
      ),
      h(
        'li',
        { class: 'step', id: 'step-provision', 'data-done': prov.done },
        h('h2', {}, '2. Provision the acp-handler ', state(prov)),
        prov.provision
          ? h(
              'p',
              {},
              'Latest provision: ',
              badge(
                prov.provision.status,
                prov.provision.status === 'running' ? 'ok' : prov.provision.status === 'failed' ? 'bad' : 'todo',
              ),
              prov.provision.url ? ` at ${prov.provision.url}` : '',
              prov.provision.error ? ` (${prov.provision.error})` : '',
            )
          : h('p', {}, 'No handler yet. Deploy one:'),
        code(
          `curl -s -X POST ${base}/api/v1/provision \\\n  -H "authorization: Bearer $SKS" \\\n  -H 'content-type: application/json' \\\n  -d "{\\"service\\":\\"acp-handler\\",\\"customer_id\\":\\"acme\\",\\"config\\":{\\"METER_URL\\":\\"${base}\\",\\"METER_WORKSPACE_ID\\":\\"$WS\\",\\"METER_API_KEY\\":\\"$SKS\\"}}"`,
        ),
      ),
      h(
        'li',
        { class: 'step', id: 'step-first_event', 'data-done': first.done, 'data-unlocked': first.unlocked },
        h('h2', {}, '3. Emit your first event ', state(first)),
        first.unlocked || first.done
          ? [
              h(
                'p',
                {},
                first.done
                  ? 'meterd has received events from this workspace.'
                  : 'Send a billable GMV event (the handler does this for each completed checkout):',
              ),
              code(
                `curl -s -X POST ${base}/api/v1/meter \\\n  -H "authorization: Bearer $SKS" \\\n  -H 'content-type: application/json' \\\n  -d "{\\"workspace_id\\":\\"$WS\\",\\"event_type\\":\\"checkout.completed\\",\\"quantity\\":1,\\"gmv_cents\\":4299,\\"idempotency_key\\":\\"order_5521\\",\\"occurred_at\\":\\"$(date -u +%FT%TZ)\\"}"`,
              ),
              first.done ? h('p', {}, h('a', { href: '/dashboard/overview' }, 'See it on the overview')) : null,
            ]
          : h('p', { class: 'muted' }, 'Unlocks once the handler is running or your Shopify store is connected.'),
      ),
    ];
    replace(
      root,
      o.shopify.just_connected || o.shopify.connected
        ? notice(
            o.shopify.connected
              ? `Shopify store ${o.shopify.shop_domain} is connected.`
              : 'Shopify connected: step 3 is unlocked.',
            'ok',
          )
        : null,
      h('ol', { class: 'steps' }, items),
    );
  }
  await guarded(root, refresh);
  return () => guarded(root, refresh);
}

// ---------- webhooks ----------

export async function webhooks() {
  const root = content();
  const status = h('p', { id: 'webhook-status', role: 'status', class: 'muted' });
  const body = h('div');
  replace(root, status, body);
  const act = (label, fn) => async () => {
    try {
      await fn();
      status.textContent = label;
      await refresh();
    } catch (err) {
      if (err.status !== 401) status.textContent = `Failed: ${err.message}`;
    }
  };
  async function refresh() {
    const o = await api('GET', 'webhooks');
    const urlOf = new Map(o.endpoints.map((e) => [e.id, e.url]));
    replace(
      body,
      h(
        'section',
        { class: 'card' },
        h('h2', {}, 'Endpoints'),
        table(
          'Webhook endpoints',
          ['URL', 'State', 'Failed in a row', ''],
          o.endpoints.map((e) =>
            h(
              'tr',
              { 'data-endpoint-id': e.id },
              h('td', { class: 'wrap' }, e.url, e.description ? h('div', { class: 'muted' }, e.description) : null),
              h(
                'td',
                {},
                badge(e.status, e.status === 'active' ? 'ok' : 'bad'),
                e.disabled_at ? h('div', { class: 'muted' }, `since ${fmtTime(e.disabled_at)}`) : null,
              ),
              h('td', {}, String(e.consecutive_failures)),
              h(
                'td',
                {},
                e.status === 'disabled'
                  ? h(
                      'button',
                      {
                        type: 'button',
                        'aria-label': `Reactivate endpoint ${e.url}`,
                        onclick: act(`Endpoint ${e.url} reactivated.`, () =>
                          api('POST', `webhooks/${encodeURIComponent(e.id)}/reactivate`),
                        ),
                      },
                      'Reactivate',
                    )
                  : null,
              ),
            ),
          ),
        ),
      ),
      h(
        'section',
        { class: 'card' },
        h('h2', {}, 'Delivery log'),
        table(
          'Latest 50 deliveries, newest first',
          ['Event', 'Endpoint', 'Status', 'Attempts', 'Last response', ''],
          o.deliveries.map((d) =>
            h(
              'tr',
              { 'data-delivery-id': d.id, 'data-status': d.status },
              h('td', {}, h('code', {}, d.event), h('div', { class: 'muted' }, fmtTime(d.created_at))),
              h('td', { class: 'wrap' }, urlOf.get(d.endpoint_id) ?? d.endpoint_id),
              h('td', {}, badge(d.status, d.status === 'succeeded' ? 'ok' : d.status === 'failed' ? 'bad' : 'todo')),
              h(
                'td',
                {},
                d.attempts_log.length === 0
                  ? String(d.attempts)
                  : h(
                      'details',
                      {},
                      h('summary', {}, `${d.attempts} attempt${d.attempts === 1 ? '' : 's'}`),
                      h(
                        'ol',
                        { class: 'attempts' },
                        d.attempts_log.map((a) =>
                          h(
                            'li',
                            {},
                            `${fmtTime(a.attempted_at)}: ${a.status_code ?? 'no response'} in ${a.latency_ms} ms${a.error ? ` (${a.error})` : ''}`,
                          ),
                        ),
                      ),
                    ),
              ),
              h('td', {}, d.last_status_code === null ? (d.last_error ?? '—') : String(d.last_status_code)),
              h(
                'td',
                {},
                d.status === 'failed' || d.status === 'succeeded'
                  ? h(
                      'button',
                      {
                        type: 'button',
                        'aria-label': `Resend delivery ${d.id} of ${d.event}`,
                        onclick: act(`Delivery ${d.id} queued again.`, () =>
                          api('POST', `deliveries/${encodeURIComponent(d.id)}/resend`),
                        ),
                      },
                      'Resend',
                    )
                  : null,
              ),
            ),
          ),
        ),
      ),
    );
  }
  await guarded(body, refresh);
  return () => guarded(body, refresh);
}

// ---------- API keys ----------

export async function keys() {
  const root = content();
  const listEl = h('div');
  const reveal = h('div', { id: 'new-key', 'aria-live': 'polite' });
  let scopes = [];
  async function refresh() {
    const o = await api('GET', 'keys');
    scopes = o.scopes;
    replace(
      listEl,
      table(
        'API keys of this workspace (secrets are never shown again)',
        ['Name', 'Prefix', 'Scopes', 'Created', 'State', ''],
        o.data.map((k) =>
          h(
            'tr',
            { 'data-key-id': k.id },
            h('td', {}, k.name ?? h('span', { class: 'muted' }, 'unnamed')),
            h('td', {}, h('code', {}, k.prefix)),
            h('td', {}, k.scopes.join(', ')),
            h('td', {}, fmtTime(k.created_at)),
            h(
              'td',
              {},
              k.revoked_at ? badge('revoked', 'bad') : badge('live', 'ok'),
              k.id === o.current_key_id ? h('div', { class: 'muted' }, 'this session') : null,
            ),
            h(
              'td',
              {},
              k.revoked_at || k.id === o.current_key_id
                ? null
                : h(
                    'button',
                    {
                      type: 'button',
                      class: 'danger',
                      'aria-label': `Revoke key ${k.name ?? k.prefix}`,
                      onclick: async () => {
                        if (!confirm(`Revoke ${k.name ?? k.prefix}? Requests with it fail at once.`)) return;
                        try {
                          await api('DELETE', `keys/${encodeURIComponent(k.id)}`);
                        } catch (err) {
                          if (err.status !== 401) reveal.replaceChildren(notice(err.message, 'error'));
                        }
                        await refresh();
                      },
                    },
                    'Revoke',
                  ),
            ),
          ),
        ),
      ),
    );
  }
  await guarded(listEl, refresh);
  const form = h(
    'form',
    { class: 'card', id: 'create-key' },
    h('h2', {}, 'Create a key'),
    h('label', { for: 'key-name' }, 'Name'),
    h('input', { id: 'key-name', name: 'name', maxlength: 200, placeholder: 'e.g. production handler' }),
    h(
      'fieldset',
      {},
      h('legend', {}, 'Scopes'),
      scopes.map((s) =>
        h(
          'label',
          { class: 'check' },
          h('input', {
            type: 'checkbox',
            name: 'scopes',
            value: s,
            checked: s === 'meter:write' || s === 'meter:read',
          }),
          ` ${s}`,
        ),
      ),
    ),
    h('button', { type: 'submit' }, 'Create key'),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    const chosen = fd.getAll('scopes');
    if (chosen.length === 0) return reveal.replaceChildren(notice('Pick at least one scope.', 'error'));
    try {
      const { api_key: k } = await api('POST', 'keys', { name: String(fd.get('name') ?? ''), scopes: chosen });
      const out = h('input', {
        id: 'new-key-token',
        readonly: true,
        value: k.token,
        'aria-label': 'New API key token',
        spellcheck: 'false',
      });
      replace(
        reveal,
        h(
          'section',
          { class: 'card reveal' },
          h('h2', {}, 'Your new key'),
          h('p', {}, 'Copy it now: this is the only time it is shown.'),
          out,
          h(
            'button',
            {
              type: 'button',
              'aria-label': 'Copy the new key',
              onclick: async () => {
                out.select();
                try {
                  await navigator.clipboard.writeText(k.token);
                } catch {
                  document.execCommand('copy');
                }
              },
            },
            'Copy',
          ),
          h(
            'button',
            {
              type: 'button',
              class: 'link',
              'aria-label': 'Hide the new key',
              onclick: () => reveal.replaceChildren(),
            },
            'Done, hide it',
          ),
        ),
      );
      form.reset();
      await refresh();
    } catch (err) {
      if (err.status !== 401) reveal.replaceChildren(notice(err.message, 'error'));
    }
  });
  replace(root, form, reveal, h('section', { class: 'card' }, h('h2', {}, 'Keys'), listEl));
  // The key list is not polled: a refresh would not change what this page is for.
  return null;
}

// ---------- billing ----------

export async function billing() {
  const root = content();
  const me = await api('GET', 'me');
  const ov = await api('GET', 'overview?granularity=day').catch(() => null);
  const err = h('p', { id: 'billing-error', role: 'alert', class: 'error', hidden: true });
  const button = h(
    'button',
    { type: 'button', id: 'portal', disabled: !me.billing_portal_available, 'aria-describedby': 'portal-help' },
    'Open the Stripe billing portal',
  );
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const { url } = await api('POST', 'billing/portal');
      location.assign(url);
    } catch (e) {
      err.hidden = false;
      err.textContent = e.message;
      button.disabled = false;
    }
  });
  const used = ov && typeof ov.usage.used === 'number' ? ov.usage.used : null;
  const unbilled = await api('GET', 'billing/unbilled').catch(() => null);
  const ready = await api('GET', 'billing/readiness').catch(() => null);
  const readyCard = h(
    'section',
    { class: 'card', id: 'readiness', 'aria-labelledby': 'readiness-label' },
    h(
      'h2',
      { id: 'readiness-label' },
      ready === null ? 'Billing readiness' : `Billing readiness: ${ready.ready ? 'ready' : 'not ready'}`,
    ),
  );
  if (ready === null) readyCard.append(h('p', { class: 'error' }, 'The readiness check is unavailable right now.'));
  else
    readyCard.append(
      table(
        'Each check with its reason',
        ['Meter', 'Check', 'Result', 'Reason'],
        [
          ...ready.checks.map((c) => ['workspace', c]),
          ...ready.meters.flatMap((m) => m.checks.map((c) => [m.event_name, c])),
        ].map(([meter, c]) =>
          h(
            'tr',
            {},
            h('td', {}, meter),
            h('td', {}, c.check),
            h('td', {}, c.ok ? 'ok' : 'failing'),
            h('td', {}, c.reason),
          ),
        ),
      ),
    );
  if (unbilled) setCurrencyExponents(unbilled.currency_exponents);
  // Usage Stripe did not bill: unbillable (too old for Stripe) or rejected (Stripe's error reports).
  const unbilledCard = h(
    'section',
    { class: 'card', id: 'unbilled', 'aria-labelledby': 'unbilled-label' },
    h('h2', { id: 'unbilled-label' }, 'Usage Stripe did not bill'),
  );
  if (!unbilled) unbilledCard.append(h('p', { class: 'error' }, 'The billing ledger is unavailable right now.'));
  else if (unbilled.rows.length === 0)
    unbilledCard.append(h('p', { class: 'muted' }, 'None: every amount billing-sync recorded reached Stripe.'));
  else {
    unbilledCard.append(
      table(
        'Ledger rows recorded as unbillable or rejected, newest first',
        ['Window', 'Meter', 'Amount', 'Status', 'Reason'],
        unbilled.rows.map((r) =>
          h(
            'tr',
            { 'data-identifier': r.identifier },
            h('td', {}, fmtTime(r.window_start)),
            h('td', {}, r.event_name),
            h('td', {}, r.value_field === 'gmv_cents' ? fmtMoney(r.value, r.currency) : `${fmtInt(r.value)} units`),
            h('td', {}, r.status),
            h('td', {}, r.reason ?? ''),
          ),
        ),
      ),
    );
  }
  replace(
    root,
    h(
      'section',
      { class: 'card' },
      h('h2', {}, 'Current plan'),
      h('p', { class: 'big', id: 'plan-name' }, me.plan.name),
      h(
        'dl',
        { class: 'kv' },
        h('dt', {}, 'Events per month'),
        h('dd', {}, me.plan.events_per_period === null ? 'unlimited' : fmtInt(String(me.plan.events_per_period))),
        h('dt', {}, 'Used this month'),
        h('dd', {}, used === null ? '—' : fmtInt(String(used))),
        h('dt', {}, 'Handlers'),
        h('dd', {}, me.plan.handlers === null ? 'unlimited' : String(me.plan.handlers)),
        h('dt', {}, 'Stripe customer'),
        h('dd', {}, me.workspace.stripe_customer_id ?? 'none'),
      ),
      button,
      h(
        'p',
        { id: 'portal-help', class: 'muted' },
        me.billing_portal_available
          ? 'Change plan, payment method and invoices on Stripe; plan changes apply here automatically.'
          : 'The billing portal needs Stripe configured on this server and a Stripe customer for this workspace.',
      ),
      err,
    ),
    readyCard,
    unbilledCard,
  );
  return null;
}

// ---------- events ----------

export async function events() {
  const root = content();
  const filter = { event_type: '', idempotency_key: '' };
  const pages = [];
  const list = h('div', { id: 'event-list' });
  const older = h('button', { type: 'button', id: 'older', hidden: true }, 'Older events');
  const rejections = h('div', { id: 'rejection-list' });

  async function load(cursor) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v !== '') q.set(k, v);
    if (cursor) q.set('cursor', cursor);
    const page = await api('GET', `events?${q}`);
    if (!cursor) pages.length = 0;
    pages.push(...page.data);
    older.hidden = page.next_cursor === null;
    older.dataset.cursor = page.next_cursor ?? '';
    replace(
      list,
      table(
        'Stored events, newest first',
        ['Occurred', 'Event type', 'Idempotency key', 'Quantity', 'GMV', 'Event id'],
        pages.map((e) =>
          h(
            'tr',
            {},
            h('td', {}, fmtTime(Date.parse(e.occurred_at))),
            h('td', {}, e.event_type),
            h('td', {}, e.idempotency_key),
            h('td', {}, fmtInt(String(e.quantity))),
            h('td', {}, `${fmtInt(String(e.gmv_cents))} ${e.currency} minor units`),
            h('td', {}, h('code', {}, e.id)),
          ),
        ),
      ),
    );
  }

  async function loadRejections() {
    const r = await api('GET', 'events/rejections');
    replace(
      rejections,
      table(
        'Events ingest refused in the last 7 days, newest first',
        ['When', 'Code', 'Field', 'Event type', 'Idempotency key', 'Message'],
        r.data.map((x) =>
          h(
            'tr',
            {},
            h('td', {}, fmtTime(x.at)),
            h('td', {}, h('code', {}, x.code)),
            h('td', {}, x.field ?? ''),
            h('td', {}, x.event_type ?? ''),
            h('td', {}, x.idempotency_key ?? ''),
            h('td', {}, x.message),
          ),
        ),
      ),
    );
  }

  const form = h(
    'form',
    { id: 'event-filter', class: 'inline' },
    h('label', { for: 'f-type' }, 'Event type'),
    h('input', { id: 'f-type', name: 'event_type', autocomplete: 'off' }),
    h('label', { for: 'f-key' }, 'Idempotency key'),
    h('input', { id: 'f-key', name: 'idempotency_key', autocomplete: 'off' }),
    h('button', { type: 'submit' }, 'Filter'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    filter.event_type = String(fd.get('event_type') ?? '').trim();
    filter.idempotency_key = String(fd.get('idempotency_key') ?? '').trim();
    void guarded(root, () => load(undefined));
  });
  older.addEventListener('click', () => void guarded(root, () => load(older.dataset.cursor)));
  replace(
    root,
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'events-label' },
      h('h2', { id: 'events-label' }, 'Events'),
      form,
      list,
      older,
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'rejections-label' },
      h('h2', { id: 'rejections-label' }, 'Recent rejections'),
      rejections,
    ),
  );
  await guarded(root, async () => {
    await Promise.all([load(undefined), loadRejections()]);
  });
  // Rejections refresh on the timer; the event list stays where the reader paged to.
  return loadRejections;
}

// ---------- meters ----------

const meterView = { granularity: 'hour' };

/** "model=gpt-4, region=eu" → { model: "gpt-4", region: "eu" }; blank → null (the meter's total). */
function parseGroup(text) {
  const t = text.trim();
  if (t === '') return null;
  return Object.fromEntries(
    t.split(',').map((pair) => {
      const i = pair.indexOf('=');
      return i === -1 ? [pair.trim(), ''] : [pair.slice(0, i).trim(), pair.slice(i + 1).trim()];
    }),
  );
}

const groupText = (g) =>
  g === null || g === undefined
    ? 'total'
    : Object.entries(g)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ');

function backfillBadge(b) {
  const kind = { done: 'ok', failed: 'bad', running: 'todo', pending: 'muted' }[b.state] ?? 'muted';
  return badge(b.state, kind);
}

async function meterChartCard(m) {
  const el = h('section', { class: 'card', 'data-meter': m.slug, 'aria-labelledby': `chart-${m.slug}-label` });
  const title = h(
    'h2',
    { id: `chart-${m.slug}-label` },
    `${m.slug} — ${m.aggregation}${m.value_field ? ` of ${m.value_field}` : ''}`,
  );
  try {
    const c = await api('GET', `meters/${encodeURIComponent(m.slug)}/usage?granularity=${meterView.granularity}`);
    const summary = `${m.slug} per ${c.granularity}, ${c.series.length} series`;
    const svg = renderSeriesChart(c, { granularity: c.granularity, summary });
    replace(
      el,
      title,
      svg,
      h(
        'ul',
        { class: 'legend', 'aria-label': `Series of ${m.slug}` },
        c.series.map((sr, i) =>
          h('li', { 'data-series': sr.label }, h('span', { class: `key ${seriesClass(sr.label, i)}` }), ` ${sr.label}`),
        ),
      ),
      c.other.groups > 0 && !c.other.folded
        ? h(
            'p',
            { class: 'muted' },
            `${c.other.groups} more groups not shown: ${m.aggregation} values of different groups do not add up.`,
          )
        : null,
      c.series.length === 0 ? h('p', { class: 'muted' }, 'No usage in this range yet.') : null,
    );
  } catch (err) {
    if (err.status === 401) throw err;
    replace(el, title, notice(err.message, 'error'));
  }
  return el;
}

export async function meters() {
  const root = content();
  const listEl = h('div');
  const alertsEl = h('div');
  const chartsEl = h('div', { id: 'meter-charts' });
  const message = h('div', { 'aria-live': 'polite' });
  let state = { meters: [], alerts: [], can_manage: false, charts: false };

  function renderMeters() {
    replace(
      listEl,
      table(
        'Meters of this workspace (shared by its live and test environments)',
        ['Slug', 'Aggregation', 'Event types', 'Group by', 'Backfill', 'Stripe event name'],
        state.meters.map((m) =>
          h(
            'tr',
            { 'data-meter': m.slug },
            h('td', {}, h('code', {}, m.slug), m.name ? h('div', { class: 'muted' }, m.name) : null),
            h('td', {}, m.value_field ? `${m.aggregation}(${m.value_field})` : m.aggregation),
            h('td', { class: 'wrap' }, m.event_types.join(', ')),
            h('td', {}, m.group_by.length === 0 ? h('span', { class: 'muted' }, 'none') : m.group_by.join(', ')),
            h('td', {}, backfillBadge(m.backfill)),
            h(
              'td',
              {},
              m.stripe_event_name ? h('code', {}, m.stripe_event_name) : h('span', { class: 'muted' }, 'not billed'),
            ),
          ),
        ),
      ),
    );
  }

  function renderAlerts() {
    replace(
      alertsEl,
      table(
        'Usage alerts: meter.threshold.reached is sent once per period and threshold',
        ['Meter', 'Threshold', 'Period', 'Group', 'Last fired', ''],
        state.alerts.map((a) =>
          h(
            'tr',
            { 'data-alert-id': a.id },
            h('td', {}, h('code', {}, a.meter.slug)),
            h(
              'td',
              {},
              a.threshold_kind === 'quota_percent' ? `${a.threshold} % of the plan quota` : String(a.threshold),
            ),
            h('td', {}, a.period),
            h('td', {}, groupText(a.group_value)),
            h('td', {}, fmtTime(a.last_fired_at)),
            h(
              'td',
              {},
              state.can_manage
                ? h(
                    'button',
                    {
                      type: 'button',
                      class: 'danger',
                      'aria-label': `Delete the alert on ${a.meter.slug} at ${a.threshold}`,
                      onclick: async () => {
                        if (!confirm(`Delete this alert on ${a.meter.slug}?`)) return;
                        try {
                          await api('DELETE', `alerts/${encodeURIComponent(a.id)}`);
                        } catch (err) {
                          if (err.status !== 401) message.replaceChildren(notice(err.message, 'error'));
                        }
                        await refresh();
                      },
                    },
                    'Delete',
                  )
                : null,
            ),
          ),
        ),
      ),
    );
  }

  async function refresh() {
    state = await api('GET', 'meters');
    renderMeters();
    renderAlerts();
  }

  async function drawCharts() {
    if (!state.charts) return replace(chartsEl, notice('Meter charts are not available on this server yet.'));
    replace(chartsEl, ...(await Promise.all(state.meters.map(meterChartCard))));
  }

  await guarded(listEl, refresh);
  const field = (id, label, control) => h('div', {}, h('label', { for: id }, label), control);
  const form = h(
    'form',
    { class: 'card', id: 'create-alert' },
    h('h2', {}, 'Create an alert'),
    h(
      'div',
      { class: 'inline' },
      field(
        'alert-meter',
        'Meter',
        h(
          'select',
          { id: 'alert-meter', name: 'meter', required: true },
          state.meters.map((m) => h('option', { value: m.slug }, m.slug)),
        ),
      ),
      field(
        'alert-kind',
        'Threshold kind',
        h(
          'select',
          { id: 'alert-kind', name: 'threshold_kind' },
          h('option', { value: 'absolute' }, "absolute (the meter's unit)"),
          h('option', { value: 'quota_percent' }, 'percent of the plan quota (monthly)'),
        ),
      ),
      field(
        'alert-threshold',
        'Threshold',
        h('input', { id: 'alert-threshold', name: 'threshold', type: 'number', min: '0', step: 'any', required: true }),
      ),
      field(
        'alert-period',
        'Period (UTC)',
        h(
          'select',
          { id: 'alert-period', name: 'period' },
          h('option', { value: 'month' }, 'month'),
          h('option', { value: 'day' }, 'day'),
        ),
      ),
      field(
        'alert-group',
        'Group (optional)',
        h('input', { id: 'alert-group', name: 'group_value', placeholder: 'model=gpt-4', spellcheck: 'false' }),
      ),
    ),
    h('button', { type: 'submit' }, 'Create alert'),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    const group = parseGroup(String(fd.get('group_value') ?? ''));
    try {
      await api('POST', 'alerts', {
        meter: String(fd.get('meter')),
        threshold_kind: String(fd.get('threshold_kind')),
        threshold: Number(fd.get('threshold')),
        period: String(fd.get('period')),
        ...(group === null ? {} : { group_value: group }),
      });
      message.replaceChildren(notice('Alert created.', 'ok'));
      form.reset();
      await refresh();
    } catch (err) {
      if (err.status !== 401)
        message.replaceChildren(notice(err.field ? `${err.message} (${err.field})` : err.message, 'error'));
    }
  });
  const granularity = h(
    'p',
    { class: 'controls' },
    h('label', { for: 'meter-granularity' }, 'Charts per '),
    h(
      'select',
      {
        id: 'meter-granularity',
        onchange: async (e) => {
          meterView.granularity = e.target.value;
          await drawCharts();
        },
      },
      h('option', { value: 'hour', selected: meterView.granularity === 'hour' }, 'hour (48 h)'),
      h('option', { value: 'day', selected: meterView.granularity === 'day' }, 'day (30 d)'),
    ),
  );
  replace(
    root,
    h('section', { class: 'card' }, h('h2', {}, 'Meters'), listEl),
    h('section', { class: 'card' }, h('h2', {}, 'Alerts'), alertsEl, message),
    state.can_manage && state.meters.length > 0 ? form : null,
    granularity,
    chartsEl,
  );
  await drawCharts();
  // Backfill progress and last firings change by themselves: the lists follow; charts redraw on demand.
  return refresh;
}
