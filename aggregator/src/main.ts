import { runService } from '@meterd/core/service';
import { aggregatorService } from './app.js';

await runService(aggregatorService);
