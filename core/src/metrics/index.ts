export { MetricsRegistry, Counter, Gauge, Histogram } from './registry.js';
