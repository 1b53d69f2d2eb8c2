import type { TypeInfo } from './stripe-types.js';

/**
 * The conformance rule: an object stripe-local returns has exactly the fields of Stripe's own
 * example of that object type (fixtures-billing.json, from stripe/openapi), recursively, with the
 * same JSON types, where:
 * - a field may be null when the example has null there or stripe-node declares it `| null`;
 * - where the example has null, a non-null value must be of a JSON kind stripe-node allows;
 * - a field missing from the example is allowed only when stripe-node declares it optional (`?`:
 *   Stripe sends it only in some cases, e.g. an event's `previous_attributes`);
 * - maps (metadata, payload: an index signature in stripe-node, or `{}` in the example) have free
 *   keys: only their values' types are compared;
 * - a nested object with its own `object` field is compared under its own type, not here;
 * - array elements are compared with the example's first element.
 * Without stripe-node information (a type it does not have), only the example counts.
 */
export function jsonKind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

export function compare(
  got: unknown,
  want: unknown,
  type: TypeInfo | undefined,
  path: string,
  problems: string[],
  root = true,
): void {
  const g = jsonKind(got);
  const w = jsonKind(want);
  if (g === 'null') return; // nullability is decided by the caller, which knows the field
  if (w === 'null') {
    if (type !== undefined && type.kinds.size > 0 && !type.kinds.has(g))
      problems.push(`${path}: ${g}, where stripe-node allows ${[...type.kinds].join('|')}`);
    return;
  }
  if (g !== w) {
    problems.push(`${path}: ${g}, Stripe has ${w}`);
    return;
  }
  if (g === 'array') {
    const gotArr = got as unknown[];
    const wantArr = want as unknown[];
    if (wantArr.length === 0) return;
    gotArr.forEach((x, i) => {
      if (x === null) {
        problems.push(`${path}[${i}]: null element`);
        return;
      }
      compare(x, wantArr[0], type?.element, `${path}[${i}]`, problems, false);
    });
    return;
  }
  if (g !== 'object') return;
  const go = got as Record<string, unknown>;
  const wo = want as Record<string, unknown>;
  if (!root && typeof wo.object === 'string') return;
  const isMap = type?.map === true || (Object.keys(wo).length === 0 && type?.fields === undefined);
  if (isMap) return;
  for (const k of Object.keys(wo)) {
    if (!(k in go)) {
      problems.push(`${path}.${k}: missing`);
      continue;
    }
    const field = type?.fields?.get(k);
    if (go[k] === null && wo[k] !== null && !(field?.nullable ?? false)) {
      problems.push(`${path}.${k}: null, where Stripe's is ${jsonKind(wo[k])} and stripe-node does not allow null`);
      continue;
    }
    compare(go[k], wo[k], field?.type, `${path}.${k}`, problems, false);
  }
  for (const k of Object.keys(go)) {
    if (k in wo) continue;
    const field = type?.fields?.get(k);
    if (field?.optional !== true)
      problems.push(`${path}.${k}: extra (not in Stripe's example${field ? ', and not optional in stripe-node' : ''})`);
  }
}

/**
 * For an object type Stripe's fixtures lack (the v2 meter objects and events): the same check
 * against stripe-node's declaration alone — every required field present, no undeclared field,
 * null only where declared nullable, JSON kinds as declared.
 */
export function compareToType(got: unknown, type: TypeInfo, path: string, problems: string[], root = true): void {
  const g = jsonKind(got);
  if (type.kinds.size > 0 && !type.kinds.has(g)) {
    problems.push(`${path}: ${g}, where stripe-node has ${[...type.kinds].join('|')}`);
    return;
  }
  if (g === 'array' && type.element)
    (got as unknown[]).forEach((x, i) => compareToType(x, type.element!, `${path}[${i}]`, problems, false));
  if (g !== 'object' || type.map || type.fields === undefined) return;
  const o = got as Record<string, unknown>;
  // A nested API object (a list's items) is checked under its own type.
  if (!root && typeof o.object === 'string') return;
  for (const [k, f] of type.fields) {
    if (!(k in o)) {
      if (!f.optional) problems.push(`${path}.${k}: missing`);
      continue;
    }
    if (o[k] === null) {
      if (!f.nullable) problems.push(`${path}.${k}: null, not nullable in stripe-node`);
      continue;
    }
    if (f.type) compareToType(o[k], f.type, `${path}.${k}`, problems, false);
  }
  for (const k of Object.keys(o)) if (!type.fields.has(k)) problems.push(`${path}.${k}: not declared by stripe-node`);
}
