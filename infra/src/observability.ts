import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

export const OBSERVABILITY_DIR = new URL('../../k8s/observability/', import.meta.url).pathname;

export interface Rule {
  alert: string;
  expr: string;
}

/** Every alert of infra/k8s/observability/prometheus-rule.yaml. */
export function alertRules(): Rule[] {
  const doc = parseAllDocuments(readFileSync(join(OBSERVABILITY_DIR, 'prometheus-rule.yaml'), 'utf8'))[0]!.toJSON() as {
    spec: { groups: { rules: Rule[] }[] };
  };
  return doc.spec.groups.flatMap((g) => g.rules);
}

/** Every query of the Grafana dashboard, by panel title. */
export function dashboardQueries(): { panel: string; expr: string }[] {
  const d = JSON.parse(readFileSync(join(OBSERVABILITY_DIR, 'grafana-dashboard.json'), 'utf8')) as {
    panels: { title: string; targets: { expr: string }[] }[];
  };
  return d.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, expr: t.expr })));
}
