import { runService } from '@meterd/core/service';
import { stripeLocalService } from './service.js';

await runService(stripeLocalService);
