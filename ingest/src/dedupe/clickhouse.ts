import { CH_TABLES } from '@meterd/core/contracts';
import { lit, type createClickHouse } from '@meterd/core/clickhouse';
import type { StoredEvent } from '@meterd/core/event';
import type { StoredRowQuery, StoredRows } from './deduper.js';

type ClickHouseClient = ReturnType<typeof createClickHouse>;

interface Found {
  event_type: string;
  idempotency_key: string;
  id: string;
  q: string;
  g: string;
  c: string;
  o: number;
  r: number;
}

/**
 * Original rows of duplicates older than the hot window, one query per workspace per tick. Each
 * condition names the workspace, the occurred hour, the event type and the key: the whole prefix
 * of the events sort key, so ClickHouse reads a granule or so per key however long the history.
 * Among copies of a triple in that hour the winner (highest `ver`, the first received) is the
 * answer, as every reader takes it.
 */
export class ClickHouseStoredRows implements StoredRows {
  constructor(private readonly ch: ClickHouseClient) {}

  async find(workspaceId: string, items: StoredRowQuery[]): Promise<(StoredEvent | undefined)[]> {
    const byHour = new Map<string, string[]>();
    for (const it of items)
      for (const h of it.hours) {
        const k = `${h}|${it.eventType}`;
        let keys = byHour.get(k);
        if (keys === undefined) byHour.set(k, (keys = []));
        keys.push(lit(it.idempotencyKey));
      }
    const conds: string[] = [];
    for (const [k, keys] of byHour) {
      const bar = k.indexOf('|');
      conds.push(
        `(toStartOfHour(occurred_at) = toDateTime(${Number(k.slice(0, bar)) * 3600}) AND event_type = ${lit(k.slice(bar + 1))} AND idempotency_key IN (${keys.join(',')}))`,
      );
    }
    return this.select(workspaceId, items, conds.join(' OR '));
  }

  /**
   * The same by triple alone, for when Redis lost its data and no hour is known: bounded by the
   * window (`sinceMs`), so ClickHouse reads only the workspace's granules of those hours.
   */
  findAnyHour(workspaceId: string, items: StoredRowQuery[], sinceMs: number): Promise<(StoredEvent | undefined)[]> {
    const byType = new Map<string, string[]>();
    for (const it of items) {
      let keys = byType.get(it.eventType);
      if (keys === undefined) byType.set(it.eventType, (keys = []));
      keys.push(lit(it.idempotencyKey));
    }
    const conds = [...byType].map(([t, keys]) => `(event_type = ${lit(t)} AND idempotency_key IN (${keys.join(',')}))`);
    return this.select(
      workspaceId,
      items,
      `occurred_at >= toDateTime(${Math.floor(sinceMs / 1000)}) AND (${conds.join(' OR ')})`,
    );
  }

  /**
   * Whether the workspace has any event occurred from `sinceMs` on: one granule of the sort key at
   * most, so recovering a workspace new to ClickHouse costs next to nothing.
   */
  async hasAny(workspaceId: string, sinceMs: number): Promise<boolean> {
    const rs = await this.ch.query({
      query: `SELECT 1 FROM ${CH_TABLES.events}
        WHERE workspace_id = ${lit(workspaceId)} AND occurred_at >= toDateTime(${Math.floor(sinceMs / 1000)}) LIMIT 1`,
      format: 'JSONEachRow',
    });
    return (await rs.json()).length > 0;
  }

  /**
   * Distinct triples received from `periodStartMs` on (a period's event count, rebuilt). Bounded on
   * occurred_at (the sort key after the workspace) by the window an event may occur before it is
   * received, so ClickHouse reads the workspace's granules of those hours only.
   */
  async periodCount(workspaceId: string, periodStartMs: number, windowSeconds: number): Promise<number> {
    const from = Math.floor(periodStartMs / 1000);
    const rs = await this.ch.query({
      query: `SELECT uniqExact(event_type, idempotency_key) AS n FROM ${CH_TABLES.events}
        WHERE workspace_id = ${lit(workspaceId)} AND occurred_at >= toDateTime(${from - windowSeconds - 3600})
          AND received_at >= toDateTime(${from})`,
      format: 'JSONEachRow',
    });
    const [row] = await rs.json<{ n: string | number }>();
    return Number(row?.n ?? 0);
  }

  /**
   * Every triple occurred in [fromMs, toMs) and received from `sinceMs` on, with the hour of its
   * occurred_at (hours since the epoch): a range of the sort key, for rebuilding the dedupe tier a
   * day of occurred hours at a time.
   */
  async storedKeys(
    workspaceId: string,
    fromMs: number,
    toMs: number,
    sinceMs: number,
  ): Promise<{ keys: string[]; hours: number[] }> {
    const rs = await this.ch.query({
      query: `SELECT event_type, idempotency_key, intDiv(toUInt32(argMax(occurred_at, ver)), 3600) AS h FROM ${CH_TABLES.events}
        WHERE workspace_id = ${lit(workspaceId)} AND occurred_at >= toDateTime(${Math.floor(fromMs / 1000)})
          AND occurred_at < toDateTime(${Math.floor(toMs / 1000)}) AND received_at >= toDateTime(${Math.floor(sinceMs / 1000)})
        GROUP BY event_type, idempotency_key`,
      format: 'JSONEachRow',
    });
    const keys: string[] = [];
    const hours: number[] = [];
    for (const r of await rs.json<{ event_type: string; idempotency_key: string; h: string | number }>()) {
      keys.push(`${r.event_type}:${r.idempotency_key}`);
      hours.push(Number(r.h));
    }
    return { keys, hours };
  }

  private async select(
    workspaceId: string,
    items: StoredRowQuery[],
    where: string,
  ): Promise<(StoredEvent | undefined)[]> {
    const rs = await this.ch.query({
      query: `SELECT event_type, idempotency_key, argMax(event_id, ver) AS id, argMax(quantity, ver) AS q,
          argMax(gmv_cents, ver) AS g, argMax(currency, ver) AS c,
          toUInt32(argMax(occurred_at, ver)) AS o, toUInt32(argMax(received_at, ver)) AS r
        FROM ${CH_TABLES.events}
        WHERE workspace_id = ${lit(workspaceId)} AND (${where})
        GROUP BY event_type, idempotency_key`,
      format: 'JSONEachRow',
    });
    const found = new Map<string, Found>();
    for (const f of await rs.json<Found>()) found.set(`${f.event_type}:${f.idempotency_key}`, f);
    return items.map((it) => {
      const f = found.get(`${it.eventType}:${it.idempotencyKey}`);
      if (f === undefined) return undefined;
      return {
        id: f.id,
        workspace_id: workspaceId,
        event_type: f.event_type,
        idempotency_key: f.idempotency_key,
        quantity: Number(f.q),
        gmv_cents: Number(f.g),
        currency: f.c,
        occurred_at_ms: Number(f.o) * 1000,
        received_at_ms: Number(f.r) * 1000,
      };
    });
  }
}
