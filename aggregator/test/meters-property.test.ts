import { after, before, test } from 'node:test';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { checkMeterProperty } from './meters-property.js';

// Every meter aggregation equals the distinct-event reference on ClickHouse 18.16 (the running server).
let stores: TestStores;
before(async () => {
  stores = await openTestStores('metersprop');
});
after(async () => {
  await stores.close();
});

for (const seed of [1, 2]) {
  test(`meters: random streams with duplicates, replays, late events, currencies and properties (18.16, seed ${seed})`, async () => {
    await checkMeterProperty(stores.clickhouse, stores.pool, seed);
  });
}
