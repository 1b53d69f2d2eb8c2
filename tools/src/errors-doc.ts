import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderErrorsDoc } from '@meterd/core/errors';
import { REPO_ROOT } from './paths.js';

writeFileSync(join(REPO_ROOT, 'docs', 'errors.md'), renderErrorsDoc());
console.log('wrote docs/errors.md');
