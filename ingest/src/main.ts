import { runService } from '@meterd/core/service';
import { ingestService } from './service.js';

/** Ingest entry point (see service.ts). The deadline is long: the spool keeps every acknowledged event anyway. */
await runService(ingestService);
