import { after, before, test } from 'node:test';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { checkProperty } from './property.js';

// Rollups equal the distinct-event reference on ClickHouse 18.16 (the running server).
let stores: TestStores;
before(async () => {
  stores = await openTestStores('aggprop');
});
after(async () => {
  await stores.close();
});

for (const seed of [1, 2, 3]) {
  test(`random streams with duplicates, replays, late and out-of-order events (18.16, seed ${seed})`, async () => {
    await checkProperty(stores.clickhouse, stores.pool, seed);
  });
}
