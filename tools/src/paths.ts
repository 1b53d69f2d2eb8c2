import { fileURLToPath } from 'node:url';

/** The repository root, found from this file's place in tools/dist/src. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
