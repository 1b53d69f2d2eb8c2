import type { LoadSummary, Sample } from '../load/run-load.js';

/**
 * A hand-written SVG: per second, throughput (left axis) and p50/p99 latency (right axis) of each
 * measured server, one panel per server, so a stall or a warm-up shows at a glance.
 */
const W = 860;
const PANEL_H = 200;
const PAD = { l: 70, r: 70, t: 34, b: 30 };
const COLORS = { thr: '#2563eb', p50: '#16a34a', p99: '#dc2626' };

export function renderSvg(
  title: string,
  runs: { name: string; summary: LoadSummary; perSecond: 'requests' | 'events' }[],
): string {
  const h = runs.length * (PANEL_H + PAD.t + PAD.b) + 40;
  let out = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" font-family="sans-serif" font-size="11">\n`;
  out += `<rect width="100%" height="100%" fill="white"/>\n<text x="${W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>\n`;
  runs.forEach((r, i) => {
    out += panel(r.name, r.summary.series, r.perSecond, 40 + i * (PANEL_H + PAD.t + PAD.b));
  });
  return out + '</svg>\n';
}

function panel(name: string, series: Sample[], unit: 'requests' | 'events', top: number): string {
  const x0 = PAD.l;
  const x1 = W - PAD.r;
  const y0 = top + PAD.t;
  const y1 = y0 + PANEL_H;
  const thr = series.map((s) => (unit === 'events' ? s.events : s.requests));
  const maxT = niceMax(Math.max(1, ...thr));
  const maxL = niceMax(Math.max(1, ...series.map((s) => s.p99Ms)));
  const maxX = Math.max(1, ...series.map((s) => s.t));
  const sx = (t: number) => x0 + (t / maxX) * (x1 - x0);
  const syT = (v: number) => y1 - (v / maxT) * PANEL_H;
  const syL = (v: number) => y1 - (v / maxL) * PANEL_H;
  const line = (vals: number[], sy: (v: number) => number, color: string, dash = '') =>
    `<polyline fill="none" stroke="${color}" stroke-width="1.8"${dash ? ` stroke-dasharray="${dash}"` : ''} points="${series.map((s, i) => `${sx(s.t).toFixed(1)},${sy(vals[i]!).toFixed(1)}`).join(' ')}"/>\n`;
  let g = `<text x="${x0}" y="${top + 22}" font-size="12" font-weight="bold">${esc(name)}</text>\n`;
  g += `<rect x="${x0}" y="${y0}" width="${x1 - x0}" height="${PANEL_H}" fill="none" stroke="#999"/>\n`;
  for (let k = 0; k <= 4; k++) {
    const y = y1 - (k / 4) * PANEL_H;
    g += `<line x1="${x0}" x2="${x1}" y1="${y}" y2="${y}" stroke="#eee"/>`;
    g += `<text x="${x0 - 6}" y="${y + 4}" text-anchor="end" fill="${COLORS.thr}">${short((maxT * k) / 4)}</text>`;
    g += `<text x="${x1 + 6}" y="${y + 4}" fill="${COLORS.p99}">${((maxL * k) / 4).toFixed(maxL < 8 ? 1 : 0)} ms</text>\n`;
  }
  g += `<text x="${(x0 + x1) / 2}" y="${y1 + 22}" text-anchor="middle">seconds</text>`;
  for (let t = 0; t <= maxX; t += Math.max(1, Math.ceil(maxX / 10)))
    g += `<text x="${sx(t)}" y="${y1 + 12}" text-anchor="middle">${t}</text>`;
  g += '\n';
  g += line(thr, syT, COLORS.thr);
  g += line(
    series.map((s) => s.p50Ms),
    syL,
    COLORS.p50,
    '4 3',
  );
  g += line(
    series.map((s) => s.p99Ms),
    syL,
    COLORS.p99,
    '4 3',
  );
  const lx = x1 - 250;
  g += `<text x="${lx}" y="${top + 22}"><tspan fill="${COLORS.thr}">━ ${unit}/s</tspan>  <tspan fill="${COLORS.p50}">┅ p50</tspan>  <tspan fill="${COLORS.p99}">┅ p99 latency</tspan></text>\n`;
  return g;
}

function niceMax(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function short(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v % 1e6 === 0 ? 0 : 1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v % 1e3 === 0 ? 0 : 1)}k`;
  return String(Math.round(v));
}

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}
