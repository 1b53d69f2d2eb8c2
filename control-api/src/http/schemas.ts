import { SCOPES } from '@meterd/core/keys';

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
