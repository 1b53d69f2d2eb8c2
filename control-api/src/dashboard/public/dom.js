// Tiny DOM helpers. Data always goes in through textContent/attributes, never innerHTML.

/** h('button', { type: 'button', onclick }, 'text', child…) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    // data-* keep booleans as text ("true"/"false"); elsewhere false means "attribute absent".
    if (k.startsWith('data-')) {
      el.setAttribute(k, String(v));
      continue;
    }
    if (v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Integer strings from the API stay exact: BigInt for arithmetic, grouping for display. */
export function fmtInt(s) {
  return BigInt(s ?? 0).toLocaleString('en-US');
}

// ISO 4217 minor units per currency, from the server's table (core/src/money/currency.ts): the
// API answers carry `currency_exponents` for every currency they contain.
const exponents = new Map();
export function setCurrencyExponents(o) {
  for (const [c, e] of Object.entries(o ?? {})) exponents.set(c, e);
}

/** A whole number of minor units in major units: 4299 USD → 42.99 USD, 4299 JPY → 4,299 JPY, 4299 KWD → 4.299 KWD. */
export function fmtMoney(minor, currency) {
  const v = BigInt(minor ?? 0);
  const e = exponents.get(currency);
  if (e === undefined) return `${v.toLocaleString('en-US')} minor units of ${currency}`;
  const neg = v < 0n;
  const a = neg ? -v : v;
  const scale = 10n ** BigInt(e);
  const frac = e === 0 ? '' : `.${String(a % scale).padStart(e, '0')}`;
  return `${neg ? '-' : ''}${(a / scale).toLocaleString('en-US')}${frac} ${currency}`;
}

export function fmtTime(v) {
  if (v === null || v === undefined) return '—';
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? '—' : d.toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
}

export function fmtAgo(ms) {
  if (ms === null || ms === undefined) return 'never';
  if (ms < 1500) return `${ms} ms ago`;
  if (ms < 120_000) return `${Math.round(ms / 1000)} s ago`;
  return `${Math.round(ms / 60_000)} min ago`;
}

export function badge(text, kind) {
  return h('span', { class: `badge ${kind}` }, text);
}

export function table(caption, headers, rows) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      h('caption', {}, caption),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          headers.map((x) => h('th', { scope: 'col' }, x)),
        ),
      ),
      h(
        'tbody',
        {},
        rows.length === 0 ? h('tr', {}, h('td', { colspan: headers.length, class: 'muted' }, 'Nothing yet.')) : rows,
      ),
    ),
  );
}
