import { ENVIRONMENTS, SCOPES } from '@meterd/core/keys';

/** JSON schemas more than one route validates with (the public API and the dashboard). */

/** Path parameters, all required strings. */
export function pathParams(...names: string[]) {
  return {
    type: 'object',
    required: names,
    properties: Object.fromEntries(names.map((k) => [k, { type: 'string' }])),
  } as const;
}

export const wsParams = pathParams('id');

export const httpUrl = { type: 'string', maxLength: 2_000, pattern: '^https?://' } as const;

/** Minting an API key: an optional name and scopes (MINTED_KEY_SCOPES when left out). */
export const mintKeyBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    name: { type: 'string', maxLength: 200 },
    scopes: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', enum: [...SCOPES] } },
  },
} as const;

/** What the event explorer filters and pages by (the public route and the dashboard's). */
export const eventFilterProps = {
  event_type: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,100}$' },
  idempotency_key: { type: 'string', minLength: 1, maxLength: 255 },
  cursor: { type: 'string', maxLength: 2000 },
} as const;

/**
 * `?environment=live|test` (docs/api.md §13), read by http/auth.ts's workspaceAccess. Every workspace
 * route takes it; a route with a querystring schema lists it so the schema does not refuse it.
 */
export const environmentQueryProp = {
  environment: {
    type: 'string',
    enum: [...ENVIRONMENTS],
    description:
      "Which environment of the workspace to act on. Without it, the key's own: a test key acts on the test environment. A live admin key may ask for test; a test key never reaches live.",
  },
} as const;
