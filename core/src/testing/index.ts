export { openTestStores, type TestStores } from './stores.js';
