export {
  runService,
  startService,
  type Service,
  type ServiceContext,
  type ServiceSpec,
  type StartedService,
} from './run.js';
