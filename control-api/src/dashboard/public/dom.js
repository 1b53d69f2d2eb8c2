// Tiny DOM helpers. Data always goes in through textContent/attributes, never innerHTML.

/** h('button', { type: 'button', onclick }, 'text', child…) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    // data-* keep booleans as text ("true"/"false"); elsewhere false means "attribute absent".
    if (k.startsWith('data-')) { el.setAttribute(k, String(v)); continue; }
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

/** Minor units to a decimal amount without floating point: "429901" cents → "4,299.01 USD". */
export function fmtMoney(cents, currency) {
  const v = BigInt(cents ?? 0);
  const neg = v < 0n;
  const a = neg ? -v : v;
  return `${neg ? '-' : ''}${(a / 100n).toLocaleString('en-US')}.${String(a % 100n).padStart(2, '0')} ${currency}`;
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
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows.length === 0 ? h('tr', {}, h('td', { colspan: headers.length, class: 'muted' }, 'Nothing yet.')) : rows)));
}
