export { hashKey, isWellFormedKey, SCOPES, DEFAULT_SCOPES, type Scope } from './api-key.js';
