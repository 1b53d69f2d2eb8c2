export {
  hashKey,
  isWellFormedKey,
  keyEnvironment,
  SCOPES,
  DEFAULT_SCOPES,
  ENVIRONMENTS,
  type Environment,
  type Scope,
} from './api-key.js';
