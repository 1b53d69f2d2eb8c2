import { print } from './harness.js';
import { run as validate } from './validate.js';
import { run as rows } from './rows.js';
import { printSpool, run as spool } from './spool.js';
import { printDedupe, run as dedupe, runHashes as hashes } from './dedupe.js';
import { printMeters, run as meters } from './meters.js';

/** `npm run bench:micro`: every micro-benchmark of bench/micro, one table. */
print([...validate(), ...(await rows()), ...(await hashes())]);
printSpool(await spool());
printDedupe(await dedupe());
printMeters(await meters({ rounds: 15 }));
