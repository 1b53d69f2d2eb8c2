import type { DeploySpec, HostSpec } from './driver.js';

export interface RenderOptions {
  domain: string;
  imagePrefix: string;
  clusterIssuer: string;
  /** Namespace of the ingress controller, the only one allowed to reach tenant pods. */
  ingressNamespace?: string;
}

export type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
} & Record<string, unknown>;

/** Namespace per (workspace, customer): `t-<customer>-<short workspace id>`, a DNS label. */
export function namespaceOf(spec: Pick<DeploySpec, 'customerId' | 'workspaceId'>): string {
  const ws = spec.workspaceId
    .replace(/^ws_/, '')
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '')
    .slice(0, 10);
  return `t-${spec.customerId}-${ws}`.slice(0, 63).replace(/-+$/, '');
}

/**
 * `<customer>-<service>-<workspace slug>.<domain>`: the slug ties the host to its workspace. Two
 * workspaces can still spell the same label (customer `a-b` + slug `c`, customer `a` + slug `b-c`),
 * which is why the provisions table keeps hosts unique (provisions_host_key).
 */
export function hostOf(spec: HostSpec, domain: string): string {
  return `${spec.customerId}-${spec.service.name}-${spec.workspaceSlug}.${domain}`;
}

/** DNS allows 63 characters per label. */
export const MAX_LABEL = 63;

/**
 * The tenant's objects, in apply order: an isolated namespace with a quota, the config as a
 * Secret, the Deployment reading it, a Service, an Ingress whose TLS certificate cert-manager
 * issues, and a NetworkPolicy admitting traffic only from the ingress controller.
 */
export function renderManifests(spec: DeploySpec, o: RenderOptions): Manifest[] {
  const ns = namespaceOf(spec);
  const app = spec.service.name;
  const labels = {
    'app.kubernetes.io/name': app,
    'app.kubernetes.io/managed-by': 'meterd',
    'meterd.dev/workspace': spec.workspaceId
      .toLowerCase()
      .replace(/[^a-z0-9._-]/g, '-')
      .slice(0, 63),
    'meterd.dev/provision': spec.provisionId
      .toLowerCase()
      .replace(/[^a-z0-9._-]/g, '-')
      .slice(0, 63),
  };
  const host = hostOf(spec, o.domain);
  const r = spec.service.resources;
  const meta = (name: string) => ({ name, namespace: ns, labels });
  return [
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: ns, labels: { ...labels, 'pod-security.kubernetes.io/enforce': 'restricted' } },
    },
    {
      apiVersion: 'v1',
      kind: 'ResourceQuota',
      metadata: meta('tenant-quota'),
      spec: {
        hard: {
          'requests.cpu': '1',
          'requests.memory': '1Gi',
          'limits.cpu': '2',
          'limits.memory': '2Gi',
          pods: '10',
          services: '5',
          secrets: '20',
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: meta(`${app}-config`),
      type: 'Opaque',
      stringData: { ...spec.config },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta(app),
      spec: {
        replicas: 2,
        selector: { matchLabels: { 'app.kubernetes.io/name': app } },
        template: {
          metadata: { labels },
          spec: {
            automountServiceAccountToken: false,
            securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
            containers: [
              {
                name: app,
                image: `${o.imagePrefix}/${spec.service.image}:latest`,
                ports: [{ name: 'http', containerPort: spec.service.port, protocol: 'TCP' }],
                env: [{ name: 'PORT', value: String(spec.service.port) }],
                envFrom: [{ secretRef: { name: `${app}-config` } }],
                resources: {
                  requests: { cpu: r.cpuRequest, memory: r.memoryRequest },
                  limits: { cpu: r.cpuLimit, memory: r.memoryLimit },
                },
                readinessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 5 },
                livenessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 10, failureThreshold: 3 },
                securityContext: {
                  allowPrivilegeEscalation: false,
                  readOnlyRootFilesystem: true,
                  capabilities: { drop: ['ALL'] },
                },
              },
            ],
          },
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(app),
      spec: {
        selector: { 'app.kubernetes.io/name': app },
        ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }],
      },
    },
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'Ingress',
      metadata: {
        ...meta(app),
        annotations: {
          'cert-manager.io/cluster-issuer': o.clusterIssuer,
          'nginx.ingress.kubernetes.io/ssl-redirect': 'true',
        },
      },
      spec: {
        ingressClassName: 'nginx',
        tls: [{ hosts: [host], secretName: `${app}-tls` }],
        rules: [
          {
            host,
            http: {
              paths: [{ path: '/', pathType: 'Prefix', backend: { service: { name: app, port: { name: 'http' } } } }],
            },
          },
        ],
      },
    },
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: meta('ingress-only'),
      spec: {
        podSelector: {},
        policyTypes: ['Ingress'],
        ingress: [
          {
            from: [
              {
                namespaceSelector: {
                  matchLabels: { 'kubernetes.io/metadata.name': o.ingressNamespace ?? 'ingress-nginx' },
                },
              },
            ],
          },
        ],
      },
    },
  ];
}

/** REST path of an object, for server-side apply. */
export function apiPath(m: Manifest): string {
  const plural: Record<string, string> = {
    Namespace: 'namespaces',
    ResourceQuota: 'resourcequotas',
    Secret: 'secrets',
    Service: 'services',
    Deployment: 'deployments',
    Ingress: 'ingresses',
    NetworkPolicy: 'networkpolicies',
  };
  const group = m.apiVersion.includes('/') ? `/apis/${m.apiVersion}` : `/api/${m.apiVersion}`;
  const ns = m.metadata.namespace === undefined ? '' : `/namespaces/${m.metadata.namespace}`;
  return `${group}${ns}/${plural[m.kind]}/${m.metadata.name}`;
}
