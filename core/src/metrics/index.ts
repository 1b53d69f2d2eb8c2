export { MetricsRegistry, Counter, Gauge, Histogram } from './registry.js';
export { METRICS_CONTENT_TYPE, parsePrometheus, sumOf, type Sample } from './text.js';
