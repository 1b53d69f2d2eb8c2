import { pino, type Logger } from 'pino';

/**
 * Structured JSON logs. Paths that could carry a secret are redacted here, once, so that no call
 * site has to remember: an API key or signing secret must never reach a log line.
 */
const REDACT = [
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'headers.authorization',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'password',
  '*.password',
  'api_key',
  '*.api_key',
  'DEPLOY_API_KEY',
  '*.DEPLOY_API_KEY',
];

export function createLogger(service: string, level: string): Logger {
  return pino({ level, base: { service }, redact: { paths: REDACT, censor: '[redacted]' } });
}

export type { Logger };
