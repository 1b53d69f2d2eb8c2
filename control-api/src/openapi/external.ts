import type { ErrorCode } from '@meterd/core/errors';

/**
 * The routes of the public base URL that other services serve (docs/control-api.md's front
 * router): ingest's meter endpoints and the aggregator's usage API. The control API cannot read
 * their route tables, so they are written here; control-api/test/openapi.test.ts fails when either
 * service registers a path this list lacks.
 */
export interface ExternalRoute {
  method: 'get' | 'post';
  path: string;
  service: 'ingest' | 'aggregator';
  summary: string;
  tags: string[];
  parameters?: unknown[];
  requestBody?: unknown;
  success: { status: number; description: string; schema: unknown; headers?: Record<string, unknown> };
  errors: readonly ErrorCode[];
}

const planHeaders = {
  'X-Plan-Events-Used': { schema: { type: 'string' }, description: 'Events counted against the plan this period.' },
  'X-Plan-Events-Limit': { schema: { type: 'string' }, description: "The plan's events per period, or `unlimited`." },
  'X-Plan-Events-Remaining': { schema: { type: 'string' }, description: 'Events left this period, or `unlimited`.' },
};

const SAFE = 9007199254740991;

const meterEvent = {
  type: 'object',
  required: ['workspace_id', 'event_type', 'idempotency_key'],
  additionalProperties: false,
  properties: {
    workspace_id: { type: 'string' },
    event_type: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,100}$' },
    idempotency_key: { type: 'string', minLength: 1, maxLength: 255 },
    quantity: { type: 'integer', minimum: -SAFE, maximum: SAFE },
    gmv_cents: { type: 'integer', minimum: -SAFE, maximum: SAFE },
    currency: { type: 'string', pattern: '^[A-Za-z]{3}$' },
    occurred_at: { type: 'string', format: 'date-time' },
  },
};

const storedEvent = {
  type: 'object',
  required: [
    'id',
    'workspace_id',
    'event_type',
    'quantity',
    'gmv_cents',
    'currency',
    'idempotency_key',
    'occurred_at',
    'received_at',
    'duplicate',
  ],
  additionalProperties: false,
  properties: {
    id: { type: 'string' },
    workspace_id: { type: 'string' },
    event_type: { type: 'string' },
    quantity: { type: 'integer' },
    gmv_cents: { type: 'integer' },
    currency: { type: 'string' },
    idempotency_key: { type: 'string' },
    occurred_at: { type: 'string' },
    received_at: { type: 'string' },
    duplicate: { type: 'boolean' },
  },
};

/** Per-event refusals: the answer of a single event, or one entry of a batch's results. */
const EVENT_ERRORS: readonly ErrorCode[] = [
  'missing_field',
  'invalid_field',
  'unknown_field',
  'integer_out_of_range',
  'invalid_timestamp',
  'timestamp_out_of_window',
  'invalid_currency',
  'workspace_mismatch',
  'idempotency_key_in_use',
  'plan_quota_exceeded',
  'service_unavailable',
];

const batchResult = {
  type: 'object',
  required: ['accepted', 'duplicates', 'rejected', 'results'],
  additionalProperties: false,
  properties: {
    accepted: { type: 'integer' },
    duplicates: { type: 'integer' },
    rejected: { type: 'integer' },
    results: {
      type: 'array',
      items: {
        oneOf: [
          {
            type: 'object',
            required: ['index', 'status', 'id', 'duplicate'],
            additionalProperties: false,
            properties: {
              index: { type: 'integer' },
              status: { const: 202 },
              id: { type: 'string' },
              duplicate: { type: 'boolean' },
            },
          },
          {
            type: 'object',
            required: ['index', 'status', 'error'],
            additionalProperties: false,
            properties: {
              index: { type: 'integer' },
              status: { type: 'integer' },
              error: {
                type: 'object',
                required: ['code', 'message'],
                additionalProperties: false,
                properties: {
                  code: { type: 'string', enum: [...EVENT_ERRORS] },
                  message: { type: 'string' },
                  field: { type: 'string' },
                },
              },
            },
          },
        ],
      },
    },
  },
};

/** What any meter request may be refused with before its events are looked at. */
const REQUEST_ERRORS: readonly ErrorCode[] = [
  'invalid_json',
  'invalid_body',
  'payload_too_large',
  'unsupported_media_type',
  'missing_api_key',
  'invalid_api_key',
  'too_many_auth_failures',
  'insufficient_scope',
  'workspace_not_found',
  'service_unavailable',
];

const usageRow = {
  type: 'object',
  required: ['event_type', 'currency', 'events', 'quantity', 'gmv_cents'],
  properties: {
    window_start: { type: 'string' },
    event_type: { type: 'string' },
    currency: { type: 'string' },
    events: { type: 'integer' },
    quantity: { type: 'integer' },
    gmv_cents: { type: 'integer' },
  },
};

export const EXTERNAL_ROUTES: readonly ExternalRoute[] = [
  {
    method: 'post',
    path: '/api/v1/meter',
    service: 'ingest',
    tags: ['ingest'],
    summary:
      'Meter one event (served by ingest). 202 once it is durable; a retry of its idempotency key answers the original with `duplicate: true`.',
    requestBody: { required: true, content: { 'application/json': { schema: meterEvent } } },
    success: {
      status: 202,
      description: 'Stored (or a duplicate of a stored event).',
      schema: storedEvent,
      headers: planHeaders,
    },
    errors: [...REQUEST_ERRORS, ...EVENT_ERRORS],
  },
  {
    method: 'post',
    path: '/api/v1/meter/batch',
    service: 'ingest',
    tags: ['ingest'],
    summary:
      'Meter 1–100 events (served by ingest). The batch is 202 with a result per event; per-event refusals never fail the batch.',
    requestBody: {
      required: true,
      content: {
        'application/json': {
          schema: {
            type: 'object',
            required: ['events'],
            additionalProperties: false,
            properties: { events: { type: 'array', minItems: 1, maxItems: 100, items: meterEvent } },
          },
        },
      },
    },
    success: { status: 202, description: 'A result per event, in order.', schema: batchResult, headers: planHeaders },
    errors: [...REQUEST_ERRORS, 'batch_too_large', 'unknown_field', 'workspace_mismatch'],
  },
  {
    method: 'get',
    path: '/api/v1/workspaces/{id}/usage',
    service: 'aggregator',
    tags: ['usage'],
    summary:
      'Usage rollups per bucket, event type and currency, with totals and freshness (served by the aggregator). `format=csv` or `Accept: text/csv` for CSV.',
    parameters: [
      { name: 'id', in: 'path', required: true, schema: { type: 'string' } },
      { name: 'granularity', in: 'query', schema: { type: 'string', enum: ['hour', 'day', 'month'] } },
      { name: 'from', in: 'query', schema: { type: 'string', format: 'date-time' } },
      { name: 'to', in: 'query', schema: { type: 'string', format: 'date-time' } },
      { name: 'event_type', in: 'query', schema: { type: 'string' } },
      { name: 'format', in: 'query', schema: { type: 'string', enum: ['json', 'csv'] } },
    ],
    success: {
      status: 200,
      description: 'A usage summary.',
      schema: {
        type: 'object',
        required: ['object', 'workspace_id', 'granularity', 'from', 'to', 'freshness', 'totals', 'data'],
        properties: {
          object: { const: 'usage_summary' },
          workspace_id: { type: 'string' },
          granularity: { type: 'string', enum: ['hour', 'day', 'month'] },
          from: { type: 'string' },
          to: { type: 'string' },
          event_type: { type: ['string', 'null'] },
          freshness: { type: 'object' },
          totals: { type: 'array', items: { type: 'object' } },
          data: { type: 'array', items: usageRow },
        },
      },
    },
    errors: [
      'invalid_field',
      'unknown_field',
      'missing_api_key',
      'invalid_api_key',
      'insufficient_scope',
      'workspace_mismatch',
      'workspace_not_found',
      'service_unavailable',
    ],
  },
  {
    method: 'get',
    path: '/api/v1/workspaces/{id}/meters/{slug}/usage',
    service: 'aggregator',
    tags: ['usage', 'meters'],
    summary:
      "One meter's usage per window and group (served by the aggregator; docs/meters.md). `filter[prop]=value` is repeatable per group-by property; `format=csv` or `Accept: text/csv` for CSV.",
    parameters: [
      { name: 'id', in: 'path', required: true, schema: { type: 'string' } },
      { name: 'slug', in: 'path', required: true, schema: { type: 'string' } },
      { name: 'window', in: 'query', schema: { type: 'string', enum: ['hour', 'day', 'month'] } },
      { name: 'from', in: 'query', schema: { type: 'string', format: 'date-time' } },
      { name: 'to', in: 'query', schema: { type: 'string', format: 'date-time' } },
      {
        name: 'group_by',
        in: 'query',
        schema: { type: 'string' },
        description: "A comma list of the meter's group-by properties.",
      },
      {
        name: 'tz',
        in: 'query',
        schema: { type: 'string' },
        description: 'An IANA time zone for day and month windows (default UTC).',
      },
      { name: 'format', in: 'query', schema: { type: 'string', enum: ['json', 'csv'] } },
    ],
    success: {
      status: 200,
      description: "The meter's usage.",
      schema: {
        type: 'object',
        required: ['object', 'workspace_id', 'meter', 'window', 'tz', 'from', 'to', 'group_by', 'filter', 'data'],
        properties: {
          object: { const: 'meter_usage' },
          workspace_id: { type: 'string' },
          meter: { type: 'object' },
          window: { type: 'string', enum: ['hour', 'day', 'month'] },
          tz: { type: 'string' },
          from: { type: 'string' },
          to: { type: 'string' },
          group_by: { type: 'array', items: { type: 'string' } },
          filter: { type: 'object', additionalProperties: { type: 'string' } },
          data: {
            type: 'array',
            items: {
              type: 'object',
              required: ['window_start', 'window_end', 'group', 'value'],
              properties: {
                window_start: { type: 'string' },
                window_end: { type: 'string' },
                group: { type: 'object', additionalProperties: { type: 'string' } },
                currency: { type: 'string' },
                currency_exponent: { type: 'integer' },
                value: { type: 'number' },
              },
            },
          },
        },
      },
    },
    errors: [
      'invalid_field',
      'invalid_timestamp',
      'unknown_field',
      'resource_not_found',
      'missing_api_key',
      'invalid_api_key',
      'insufficient_scope',
      'workspace_mismatch',
      'workspace_not_found',
      'service_unavailable',
    ],
  },
];
