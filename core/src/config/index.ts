export {
  loadConfig,
  ConfigError,
  str,
  int,
  bool,
  oneOf,
  url,
  optionalUrl,
  addressList,
  commaSeparated,
  hostPortList,
  type Spec,
  type VarSpec,
  type ConfigOf,
} from './env.js';
export { storeVars, redisKeyPrefixVar, authVars, aggregatorShardsVar } from './common.js';
