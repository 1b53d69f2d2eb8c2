import { after, before, test } from 'node:test';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { openChdb, type Chdb } from '@meterd/core/testing/chdb';
import { checkProperty } from './property.js';

// The same property on the current engine (chDB, in-process): the SQL must run on both.
let stores: TestStores;
let chdb: Chdb;

before(async () => {
  stores = await openTestStores('aggpropchdb');
  chdb = await openChdb('agg');
});
after(async () => {
  await chdb.close();
  await stores.close();
});

for (const seed of [11, 12]) {
  test(`random streams with duplicates, replays, late and out-of-order events (chDB, seed ${seed})`, async () => {
    await checkProperty(chdb.client, stores.pool, seed);
  });
}
