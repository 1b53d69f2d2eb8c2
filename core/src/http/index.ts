export { createServiceApp, listenOn } from './app.js';
export { serveProbes, type Checks, type Probes } from './probes.js';
