import { print } from './harness.js';
import { run as validate } from './validate.js';
import { run as rows } from './rows.js';
import { printSpool, run as spool } from './spool.js';

/** `npm run bench:micro`: every micro-benchmark of bench/micro, one table. */
print([...validate(), ...(await rows())]);
printSpool(await spool());
