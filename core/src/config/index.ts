export {
  loadConfig,
  ConfigError,
  str,
  int,
  bool,
  oneOf,
  url,
  addressList,
  type Spec,
  type VarSpec,
  type ConfigOf,
} from './env.js';
export { storeVars, redisKeyPrefixVar } from './common.js';
