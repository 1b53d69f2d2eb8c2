export { openTestStores, type TestStores } from './stores.js';
export { runUntilExit, moduleUrl, type ExitReport } from './exits.js';
export { GateProxy } from './gate-proxy.js';
