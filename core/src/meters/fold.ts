import { hourOf, type EventRow } from '../clickhouse/batches.js';
import type { MeterDefinition } from './definition.js';
import type { MeterPartial } from './partials.js';
import { meterColumnInteger, meterInteger } from './value.js';

/**
 * meterPartials' fold, built for the shipper's thread (issue 20: with 10 meters, batch throughput
 * within 1.2× of none). What it costs and why, measured by bench/micro/meters.ts on 50,000 bench
 * events with the bench's 10 meters: the plain fold (a key string and a Map lookup per row and
 * meter, a regex and a BigInt per value, a key string per occurred_at tie) took ~25 µs per event;
 * this one takes under 2 µs. partials-reference.test.ts holds it to the plain fold on random batches.
 *
 * - A bucket's meters are planned once per batch and event type (RowPlan): which meters a row
 *   feeds, which properties they read (one indexOf per key and row), and each value field, parsed
 *   once per row for all the meters over it.
 * - Group values and currencies are interned per bucket to small ids, once per row; a meter finds
 *   its accumulator through arrays indexed by hour, currency and group ids, with no hashing.
 * - Sums stay in Number while exact and move to BigInt past 2^53; max and latest hold a Number or a
 *   BigInt, which compare exactly with each other.
 * - The latest row is kept by reference; its key string is built once, at the end.
 */

const EPOCH = '1970-01-01 00:00:00';
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

const COUNT = 0;
const UNIQUE = 1;
const NUMERIC = 2;
/** A non-count meter without a value field (not a valid definition): every event skipped, as meterValue says. */
const NO_VALUE = 3;
/** The trie level of the currency, in MeterPlan.levels. */
const CURRENCY = -1;

/** A value field of one RowPlan, with the current row's value in it. */
interface FieldPlan {
  /** 'quantity', 'gmv_cents', or the property's slot. */
  column: 'quantity' | 'gmv_cents' | number;
  /** The row's value as an integer (sum, max, latest), or undefined when not one. */
  int: number | bigint | undefined;
  /** The row's value as text (unique_count), or undefined when absent. */
  text: string | undefined;
  needsInt: boolean;
  needsText: boolean;
}

interface Acc {
  p: MeterPartial;
  events: number;
  valuesN: number;
  skipped: number;
  /** The sum: sumN while it stays a safe integer, plus what overflowed into sumB. */
  sumN: number;
  sumB: bigint;
  max: number | bigint;
  latest: number | bigint;
  /** The row holding the latest value, by reference. */
  latestRow: EventRow | undefined;
  /** Its occurred_at as the fold interned it (the same string object for equal texts, mostly). */
  latestAt: string;
  /** Whether its idempotency key has no code unit of U+D800–U+FFFF (see plainKey). */
  latestPlain: boolean;
  uniq: Set<string> | undefined;
}

/** A trie level (array indexed by the level's id) or the accumulator at the end. */
type Node = Acc | Node[];

/** Ids of one property's values (or of the currencies) in one bucket. */
type Interned = Map<string, number>;

interface Bucket {
  /** A meter's accumulators by hour index: per bucket and meter id, as the partials are. */
  roots: Map<string, (Node | undefined)[]>;
  /** Value ids per property key, and of the currencies. */
  ids: Map<string, Interned>;
  currencies: Interned;
  plans: Map<string, RowPlan>;
}

interface MeterPlan {
  m: MeterDefinition;
  kind: number;
  field: FieldPlan | undefined;
  byCurrency: boolean;
  groupSlots: number[];
  /** The trie's levels: CURRENCY, then the group_by keys' slots. */
  levels: number[];
  roots: (Node | undefined)[];
}

/** The meters one (bucket, event type) feeds, in the bucket's order, and what they read of a row. */
interface RowPlan {
  meters: MeterPlan[];
  /** Property keys any of them reads, and the current row's values and value ids in those slots. */
  props: string[];
  slots: (string | undefined)[];
  /** The ids of the slots some meter groups by (undefined for a slot only read as a value). */
  interned: (Interned | undefined)[];
  slotIds: number[];
  fields: FieldPlan[];
  byCurrency: boolean;
}

function slotOf(plan: RowPlan, key: string): number {
  let i = plan.props.indexOf(key);
  if (i === -1) {
    i = plan.props.push(key) - 1;
    plan.slots.push(undefined);
    plan.interned.push(undefined);
    plan.slotIds.push(0);
  }
  return i;
}

function kindOf(m: MeterDefinition): number {
  if (m.aggregation === 'count') return COUNT;
  if (m.value_field === null) return NO_VALUE;
  return m.aggregation === 'unique_count' ? UNIQUE : NUMERIC;
}

function rowPlan(list: readonly MeterDefinition[], eventType: string, b: Bucket): RowPlan {
  const plan: RowPlan = {
    meters: [],
    props: [],
    slots: [],
    interned: [],
    slotIds: [],
    fields: [],
    byCurrency: false,
  };
  const fields = new Map<string, FieldPlan>();
  for (const m of list) {
    if (!m.event_types.includes(eventType)) continue;
    let roots = b.roots.get(m.id);
    if (roots === undefined) b.roots.set(m.id, (roots = []));
    const kind = kindOf(m);
    const byCurrency = m.value_field === 'gmv_cents';
    plan.byCurrency ||= byCurrency;
    const groupSlots = m.group_by.map((k) => {
      const s = slotOf(plan, k);
      let ids = b.ids.get(k);
      if (ids === undefined) b.ids.set(k, (ids = new Map()));
      plan.interned[s] = ids;
      return s;
    });
    let field: FieldPlan | undefined;
    if (kind === UNIQUE || kind === NUMERIC) {
      const vf = m.value_field!;
      field = fields.get(vf);
      if (field === undefined) {
        const column = vf === 'quantity' || vf === 'gmv_cents' ? vf : slotOf(plan, vf.slice('properties.'.length));
        field = { column, int: undefined, text: undefined, needsInt: false, needsText: false };
        fields.set(vf, field);
        plan.fields.push(field);
      }
      if (kind === UNIQUE) field.needsText = true;
      else field.needsInt = true;
    }
    const levels = byCurrency ? [CURRENCY, ...groupSlots] : groupSlots;
    plan.meters.push({ m, kind, field, byCurrency, groupSlots, levels, roots });
  }
  return plan;
}

function idOf(ids: Interned, v: string): number {
  let id = ids.get(v);
  if (id === undefined) ids.set(v, (id = ids.size));
  return id;
}

/** Reads a row into the plan's slots, ids and fields (meterValue's rule, parsed once per row). */
function readRow(plan: RowPlan, r: EventRow): void {
  const keys = r.prop_keys;
  for (let i = 0; i < plan.props.length; i++) {
    const j = keys === undefined ? -1 : keys.indexOf(plan.props[i]!);
    const v = j === -1 ? undefined : r.prop_values![j];
    plan.slots[i] = v;
    const ids = plan.interned[i];
    // An absent property groups as '' (meterGroup), so both get the id of ''.
    if (ids !== undefined) plan.slotIds[i] = idOf(ids, v ?? '');
  }
  for (const f of plan.fields) {
    if (typeof f.column === 'number') {
      const raw = plan.slots[f.column];
      f.text = raw;
      if (f.needsInt) f.int = raw === undefined ? undefined : meterInteger(raw);
    } else {
      const x = f.column === 'quantity' ? r.quantity : r.gmv_cents;
      if (f.needsText) f.text = String(x);
      if (f.needsInt) f.int = meterColumnInteger(x);
    }
  }
}

function newAcc(st: MeterPlan, r: EventRow, hour: string, plan: RowPlan, batchId: string, attempt: number): Acc {
  return {
    p: {
      workspace_id: r.workspace_id,
      window_start: hour,
      meter_id: st.m.id,
      batch_id: batchId,
      currency: st.byCurrency ? r.currency : '',
      group_values: st.groupSlots.map((s) => plan.slots[s] ?? ''),
      events: 0,
      values_n: 0,
      value_sum: '0',
      value_max: '0',
      latest_at: EPOCH,
      latest_key: '',
      latest_value: '0',
      uniq_values: [],
      skipped: 0,
      attempt,
    },
    events: 0,
    valuesN: 0,
    skipped: 0,
    sumN: 0,
    sumB: 0n,
    max: 0,
    latest: 0,
    latestRow: undefined,
    latestAt: EPOCH,
    latestPlain: false,
    uniq: st.kind === UNIQUE ? new Set() : undefined,
  };
}

const NOT_PLAIN = /[\ud800-\uffff]/;

/**
 * Whether a key has no code unit of U+D800–U+FFFF: between two such keys UTF-16 order (JS's `<`)
 * is UTF-8 byte order, and byteCompare's per-unit walk is not needed. Measured: the walk was a
 * sixth of the fold's CPU with the bench's 10 meters, whose events all tie on occurred_at.
 */
function plainKey(k: string): boolean {
  return !NOT_PLAIN.test(k);
}

/**
 * Whether row r comes after row l in (event_type, idempotency_key) order, as the key string
 * `<event_type>\n<idempotency_key>` compares in ClickHouse (bytes of UTF-8). With equal event types
 * that is the keys' order, and no string is built.
 */
function laterKey(r: EventRow, rPlain: boolean, l: EventRow, lPlain: boolean): boolean {
  if (r.event_type !== l.event_type)
    return byteCompare(`${r.event_type}\n${r.idempotency_key}`, `${l.event_type}\n${l.idempotency_key}`) > 0;
  return rPlain && lPlain
    ? r.idempotency_key > l.idempotency_key
    : byteCompare(r.idempotency_key, l.idempotency_key) > 0;
}

/** One usable numeric value into an accumulator: the sum, the max and the latest. */
function addValue(a: Acc, v: number | bigint, r: EventRow, at: string, plain: () => boolean): void {
  a.valuesN++;
  if (typeof v === 'number') {
    const s = a.sumN + v;
    // Both are safe integers: a result within ±(2^53 − 1) is exact, and one past it cannot round
    // back inside, so this catches every inexact sum.
    if (s <= MAX_SAFE && s >= -MAX_SAFE) a.sumN = s;
    else {
      a.sumB += BigInt(a.sumN) + BigInt(v);
      a.sumN = 0;
    }
  } else a.sumB += v;
  const l = a.latestRow;
  if (l === undefined) {
    a.max = v;
  } else {
    if (v > a.max) a.max = v;
    // `at` and latestAt are mostly the same string object, which compares at once.
    if (at === a.latestAt) {
      const rp = plain();
      if (!laterKey(r, rp, l, a.latestPlain)) return;
      a.latestPlain = rp;
    } else if (at > a.latestAt) a.latestPlain = plain();
    else return;
  }
  if (l === undefined) a.latestPlain = plain();
  a.latestRow = r;
  a.latestAt = at;
  a.latest = v;
}

/**
 * The partials of a batch's winners (see meterPartials in partials.ts): one per bucket, hour, meter,
 * currency and group values, in the order the plain fold first meets them.
 */
export function foldMeterPartials(
  batchId: string,
  attempt: number,
  winners: Iterable<EventRow>,
  meters: ReadonlyMap<string, readonly MeterDefinition[]>,
): MeterPartial[] {
  const out: Acc[] = [];
  const buckets = new Map<string, Bucket | null>();
  const hours = new Map<string, number>();
  let lastWs: string | undefined;
  let lastType: string | undefined;
  let bucket: Bucket | null = null;
  let plan: RowPlan | undefined;
  let at = '';
  let hour = '';
  let hi = 0;
  let lastCurrency: string | undefined;
  let currencyId = 0;
  let row: EventRow;
  let rowPlain = -1;
  // Whether the current row's key is plain, worked out at most once per row and only on a tie.
  const plain = (): boolean => {
    if (rowPlain === -1) rowPlain = plainKey(row.idempotency_key) ? 1 : 0;
    return rowPlain === 1;
  };
  for (const r of winners) {
    if (r.workspace_id !== lastWs || r.event_type !== lastType) {
      if (r.workspace_id !== lastWs) {
        lastWs = r.workspace_id;
        let b = buckets.get(lastWs);
        if (b === undefined) {
          const list = meters.get(lastWs);
          b =
            list === undefined || list.length === 0
              ? null
              : { roots: new Map(), ids: new Map(), currencies: new Map(), plans: new Map() };
          buckets.set(lastWs, b);
        }
        bucket = b;
        lastCurrency = undefined;
      }
      lastType = r.event_type;
      if (bucket === null) plan = undefined;
      else {
        plan = bucket.plans.get(lastType);
        if (plan === undefined) bucket.plans.set(lastType, (plan = rowPlan(meters.get(lastWs)!, lastType, bucket)));
      }
    }
    if (plan === undefined || plan.meters.length === 0) continue;
    if (r.occurred_at !== at) {
      // Interned for the latest's compare: equal texts in a row stay the first one's string object.
      at = r.occurred_at;
      const h = hourOf(r);
      if (h !== hour) {
        hour = h;
        let i = hours.get(hour);
        if (i === undefined) hours.set(hour, (i = hours.size));
        hi = i;
      }
    }
    if (plan.byCurrency && r.currency !== lastCurrency) {
      lastCurrency = r.currency;
      currencyId = idOf(bucket!.currencies, lastCurrency);
    }
    readRow(plan, r);
    row = r;
    rowPlain = -1;
    const ids = plan.slotIds;
    for (const st of plan.meters) {
      const levels = st.levels;
      let a: Acc;
      if (levels.length === 0) {
        let leaf = st.roots[hi] as Acc | undefined;
        if (leaf === undefined) out.push((st.roots[hi] = leaf = newAcc(st, r, hour, plan, batchId, attempt)));
        a = leaf;
      } else {
        let node = st.roots[hi] as Node[] | undefined;
        if (node === undefined) st.roots[hi] = node = [];
        const last = levels.length - 1;
        for (let l = 0; l < last; l++) {
          const s = levels[l]!;
          const k = s === CURRENCY ? currencyId : ids[s]!;
          let next = node[k] as Node[] | undefined;
          if (next === undefined) node[k] = next = [];
          node = next;
        }
        const s = levels[last]!;
        const k = s === CURRENCY ? currencyId : ids[s]!;
        let leaf = node[k] as Acc | undefined;
        if (leaf === undefined) out.push((node[k] = leaf = newAcc(st, r, hour, plan, batchId, attempt)));
        a = leaf;
      }
      a.events++;
      if (st.kind === COUNT) continue;
      if (st.kind === UNIQUE) {
        const t = st.field!.text;
        if (t === undefined) a.skipped++;
        else {
          a.valuesN++;
          a.uniq!.add(t);
        }
        continue;
      }
      const v = st.kind === NUMERIC ? st.field!.int : undefined;
      if (v === undefined) a.skipped++;
      else addValue(a, v, r, at, plain);
    }
  }
  return out.map((a) => {
    const p = a.p;
    p.events = a.events;
    p.values_n = a.valuesN;
    p.skipped = a.skipped;
    const l = a.latestRow;
    if (l !== undefined) {
      p.value_sum = a.sumB === 0n ? String(a.sumN) : String(a.sumB + BigInt(a.sumN));
      p.value_max = String(a.max);
      p.latest_at = l.occurred_at;
      p.latest_key = `${l.event_type}\n${l.idempotency_key}`;
      p.latest_value = String(a.latest);
    }
    if (a.uniq !== undefined) p.uniq_values = [...a.uniq];
    return p;
  });
}

/**
 * ClickHouse's String order (memcmp of UTF-8), without encoding: UTF-16 code-unit order is UTF-8
 * byte order except between a surrogate (a code point past U+FFFF, F0–F4 in UTF-8) and a code unit
 * of U+E000–U+FFFF (EE–EF), where it is reversed. A common prefix: the shorter is less in both.
 */
export function byteCompare(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const sx = x >= 0xd800 && x <= 0xdfff;
    const sy = y >= 0xd800 && y <= 0xdfff;
    if (sx !== sy && (x >= 0xe000 || y >= 0xe000)) return sx ? 1 : -1;
    return x < y ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}
