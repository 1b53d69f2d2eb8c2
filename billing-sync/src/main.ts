import { runService } from '@meterd/core/service';
import { billingSyncService } from './service.js';

await runService(billingSyncService);
