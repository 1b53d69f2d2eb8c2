export {
  mintKey,
  hashKey,
  isWellFormedKey,
  secretsEqual,
  KEY_PREFIX,
  SCOPES,
  DEFAULT_SCOPES,
  type MintedKey,
  type Scope,
} from './api-key.js';
