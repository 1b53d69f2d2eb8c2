/* global AbortSignal */
// preStop of ingest's pods. Kubernetes takes a terminating pod out of its Service's endpoints at once,
// but ingress controllers and kube-proxy learn it a little later, and ingest closes its listening socket
// on SIGTERM. So before the SIGTERM: keep serving while traffic moves away (MIN_MS), then wait until this
// pod's spool is shipped to ClickHouse (its unshipped bytes read 0), bounded by MAX_MS. ingest's own SIGTERM
// drain (readiness 503, in-flight requests finished, a last ship) then has little left to do, and whatever
// ClickHouse did not take stays on the pod's volume for the replacement pod of the same ordinal.
const port = process.env.INGEST_PORT ?? '8081';
const minMs = Number(process.env.PRESTOP_MIN_MS ?? 5000);
const maxMs = Number(process.env.PRESTOP_MAX_MS ?? 30000);
const started = Date.now();

async function unshippedBytes() {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) });
  const line = (await res.text()).split('\n').find((l) => l.startsWith('meterd_ingest_spool_unshipped_bytes'));
  return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
}

for (;;) {
  const elapsed = Date.now() - started;
  if (elapsed >= maxMs) break;
  if (elapsed >= minMs) {
    const bytes = await unshippedBytes().catch(() => NaN);
    // NaN: ingest does not answer; nothing to wait for, its SIGTERM handling takes over.
    if (!(bytes > 0)) break;
  }
  await new Promise((r) => setTimeout(r, 250));
}
