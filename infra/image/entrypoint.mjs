// The image's entry point: the first argument names the meterd process to run, the rest are its arguments.
// One image for every service, so a deployment pins one tag and every process runs the same build.
const COMMANDS = {
  ingest: 'ingest/dist/src/main.js',
  aggregator: 'aggregator/dist/src/main.js',
  'billing-sync': 'billing-sync/dist/src/main.js',
  'control-api': 'control-api/dist/src/main.js',
  front: 'control-api/dist/src/front.js',
  'stripe-local': 'stripe-local/dist/src/main.js',
  migrate: 'tools/dist/src/migrate.js',
  reconcile: 'aggregator/dist/src/reconcile.js',
  'reconcile-stripe': 'billing-sync/dist/src/reconcile-cli.js',
  'secrets-rewrap': 'control-api/dist/src/crypto/rewrap-cli.js',
  'spool-lost': 'ingest/dist/src/spool/identity-cli.js',
};

const [command, ...args] = process.argv.slice(2);
const main = COMMANDS[command ?? ''];
if (main === undefined) {
  console.error(`usage: <image> ${Object.keys(COMMANDS).join('|')} [arguments]`);
  process.exit(command === undefined ? 0 : 64);
}
const url = new URL(`../../${main}`, import.meta.url);
// The command's own argument parsing reads process.argv.slice(2), as when it is run with node directly.
process.argv = [process.argv[0], url.pathname, ...args];
await import(url.href);
