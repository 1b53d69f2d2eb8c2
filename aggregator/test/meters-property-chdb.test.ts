import { after, before, test } from 'node:test';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { openChdb, type Chdb } from '@meterd/core/testing/chdb';
import { checkMeterProperty } from './meters-property.js';

// The same property on the current engine (chDB, in-process): the SQL must run on both.
let stores: TestStores;
let chdb: Chdb;
before(async () => {
  stores = await openTestStores('metersprochdb');
  chdb = await openChdb('meters');
});
after(async () => {
  await chdb.close();
  await stores.close();
});

for (const seed of [11]) {
  test(`meters: random streams with duplicates, replays, late events, currencies and properties (chDB, seed ${seed})`, async () => {
    await checkMeterProperty(chdb.client, stores.pool, seed);
  });
}
