import { runService } from '@meterd/core/service';
import { controlService } from './server.js';

await runService(controlService);
