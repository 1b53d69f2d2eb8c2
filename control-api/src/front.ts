import { runService } from '@meterd/core/service';
import { frontService } from './front/service.js';

await runService(frontService);
