import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../paths.js';
import { renderErrorsDoc } from './docs.js';

writeFileSync(join(REPO_ROOT, 'docs', 'errors.md'), renderErrorsDoc());
console.log('wrote docs/errors.md');
