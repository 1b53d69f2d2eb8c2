// A hand-written SVG chart: bars for events per window, a line for GMV, both scaled to their own
// maximum. Each bar carries its numbers in data-* attributes and a <title> (tooltip, screen readers).
import { fmtInt, fmtMoney } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 720,
  H = 240,
  PAD_L = 8,
  PAD_R = 8,
  PAD_T = 16,
  PAD_B = 28;

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** windows: [{ t, events: "n", gmv_cents: "n" }] in time order, one per window of the range. */
export function renderChart(windows, { currency, granularity, summary }) {
  const maxE = windows.reduce((m, w) => (BigInt(w.events) > m ? BigInt(w.events) : m), 0n);
  const maxG = windows.reduce((m, w) => (BigInt(w.gmv_cents) > m ? BigInt(w.gmv_cents) : m), 0n);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary, class: 'chart' });
  svg.append(s('title', {}, summary));
  const plotW = W - PAD_L - PAD_R,
    plotH = H - PAD_T - PAD_B;
  const step = plotW / Math.max(1, windows.length);
  // Ratios in floating point are fine here: they only place pixels; labels use the exact strings.
  const y = (v, max) => PAD_T + plotH - (max === 0n ? 0 : (Number(v) / Number(max)) * plotH);
  for (let i = 0; i <= 4; i++)
    svg.append(
      s('line', { x1: PAD_L, x2: W - PAD_R, y1: PAD_T + (plotH * i) / 4, y2: PAD_T + (plotH * i) / 4, class: 'grid' }),
    );
  const points = [];
  windows.forEach((w, i) => {
    const x = PAD_L + i * step;
    const top = y(w.events, maxE);
    const label = `${new Date(w.t)
      .toISOString()
      .slice(0, granularity === 'hour' ? 13 : 10)
      .replace(
        'T',
        ' ',
      )}${granularity === 'hour' ? ':00' : ''} UTC: ${fmtInt(w.events)} events, ${fmtMoney(w.gmv_cents, currency)}`;
    const bar = s('rect', {
      x: x + step * 0.15,
      y: top,
      width: Math.max(1, step * 0.7),
      height: PAD_T + plotH - top,
      class: 'bar',
      'data-t': w.t,
      'data-events': w.events,
      'data-gmv-cents': w.gmv_cents,
    });
    bar.append(s('title', {}, label));
    svg.append(bar);
    points.push(`${(x + step / 2).toFixed(1)},${y(w.gmv_cents, maxG).toFixed(1)}`);
    const every = Math.ceil(windows.length / 8);
    if (i % every === 0) {
      const d = new Date(w.t);
      const text =
        granularity === 'hour'
          ? `${String(d.getUTCHours()).padStart(2, '0')}:00`
          : `${d.getUTCMonth() + 1}/${d.getUTCDate()}`;
      svg.append(
        s(
          'text',
          { x: i === 0 ? x : x + step / 2, y: H - 8, class: 'axis', 'text-anchor': i === 0 ? 'start' : 'middle' },
          text,
        ),
      );
    }
  });
  if (maxG > 0n) svg.append(s('polyline', { points: points.join(' '), class: 'gmv-line' }));
  svg.append(
    s(
      'text',
      { x: PAD_L + 2, y: PAD_T - 4, class: 'axis' },
      `max ${fmtInt(maxE.toString())} events · ${fmtMoney(maxG.toString(), currency)}`,
    ),
  );
  return svg;
}

/** The colour class of a series (style.css .s0–.s9, .s-other): classes, since the CSP refuses inline styles. */
export const seriesClass = (label, k) => (label === 'other' ? 's-other' : `s${k % 10}`);

/**
 * A meter's usage: one line per group (the top groups, then "other" in grey), over the windows of
 * the range. chart: { windows: [ms], series: [{ label, values: ["n"] }] }. Each line carries its
 * label and values in data-* attributes and a <title>.
 */
export function renderSeriesChart(chart, { granularity, summary }) {
  const { windows, series } = chart;
  const max = series.reduce((m, sr) => sr.values.reduce((a, v) => Math.max(a, Number(v)), m), 0);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary, class: 'chart' });
  svg.append(s('title', {}, summary));
  const plotW = W - PAD_L - PAD_R,
    plotH = H - PAD_T - PAD_B;
  const step = plotW / Math.max(1, windows.length);
  // Pixels only: the exact values are in the titles and data attributes.
  const y = (v) => PAD_T + plotH - (max === 0 ? 0 : (Number(v) / max) * plotH);
  for (let i = 0; i <= 4; i++)
    svg.append(
      s('line', { x1: PAD_L, x2: W - PAD_R, y1: PAD_T + (plotH * i) / 4, y2: PAD_T + (plotH * i) / 4, class: 'grid' }),
    );
  series.forEach((sr, k) => {
    const points = sr.values.map((v, i) => `${(PAD_L + i * step + step / 2).toFixed(1)},${y(v).toFixed(1)}`);
    const line = s('polyline', {
      points: points.join(' '),
      class: `series-line ${seriesClass(sr.label, k)}`,
      'data-series': sr.label,
      'data-values': sr.values.join(','),
    });
    line.append(s('title', {}, `${sr.label}: ${sr.values.join(', ')}`));
    svg.append(line);
  });
  const every = Math.ceil(windows.length / 8);
  windows.forEach((t, i) => {
    if (i % every !== 0) return;
    const d = new Date(t);
    const text =
      granularity === 'hour'
        ? `${String(d.getUTCHours()).padStart(2, '0')}:00`
        : `${d.getUTCMonth() + 1}/${d.getUTCDate()}`;
    svg.append(s('text', { x: PAD_L + i * step + step / 2, y: H - 8, class: 'axis', 'text-anchor': 'middle' }, text));
  });
  svg.append(s('text', { x: PAD_L + 2, y: PAD_T - 4, class: 'axis' }, `max ${max.toLocaleString('en-US')}`));
  return svg;
}
