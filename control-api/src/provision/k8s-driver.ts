import { readFileSync } from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import { ApiError, MeterdError } from '@meterd/core/errors';
import type { DeploySpec, HostSpec, ProvisionDriver } from './driver.js';
import { MAX_LABEL, apiPath, hostOf, namespaceOf, renderManifests, type RenderOptions } from './k8s-manifests.js';

export interface KubeOptions extends RenderOptions {
  apiUrl: string;
  token: string;
  caFile: string;
}

/**
 * Applies a tenant's manifests with server-side apply (PATCH application/apply-patch+yaml, which
 * accepts JSON): idempotent, so a resumed deploy simply re-applies. Deprovisioning deletes the
 * tenant namespace, which takes every object in it along.
 */
export class KubernetesDriver implements ProvisionDriver {
  readonly name = 'kubernetes' as const;
  private readonly agent: https.Agent | http.Agent;

  constructor(private readonly o: KubeOptions) {
    if (o.apiUrl === '')
      throw new MeterdError('METERD_KUBE_NOT_CONFIGURED', 'PROVISION_DRIVER=kubernetes needs KUBE_API_URL');
    this.agent = o.apiUrl.startsWith('https:')
      ? new https.Agent({ keepAlive: true, ...(o.caFile === '' ? {} : { ca: readFileSync(o.caFile) }) })
      : new http.Agent({ keepAlive: true });
  }

  hostOf(spec: HostSpec): string {
    const host = hostOf(spec, this.o.domain);
    const label = host.slice(0, host.indexOf('.'));
    if (label.length > MAX_LABEL) {
      const room = MAX_LABEL - (label.length - spec.customerId.length);
      throw new ApiError(
        'invalid_field',
        `customer_id is too long for the host ${label}: at most ${Math.max(room, 0)} characters with this service and workspace slug`,
        'customer_id',
      );
    }
    return host;
  }

  async deploy(spec: DeploySpec): Promise<{ url: string }> {
    for (const m of renderManifests(spec, this.o)) {
      await this.request(
        'PATCH',
        `${apiPath(m)}?fieldManager=meterd&force=true`,
        JSON.stringify(m),
        'application/apply-patch+yaml',
      );
    }
    return { url: `https://${hostOf(spec, this.o.domain)}` };
  }

  async destroy(spec: DeploySpec): Promise<void> {
    await this.request('DELETE', `/api/v1/namespaces/${namespaceOf(spec)}`, undefined, undefined, [404]);
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }

  private request(method: string, path: string, body?: string, type?: string, okAlso: number[] = []): Promise<void> {
    const u = new URL(path, this.o.apiUrl);
    const mod = u.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(
        u,
        {
          method,
          agent: this.agent,
          timeout: 15_000,
          headers: {
            accept: 'application/json',
            ...(this.o.token === '' ? {} : { authorization: `Bearer ${this.o.token}` }),
            ...(body === undefined ? {} : { 'content-type': type!, 'content-length': Buffer.byteLength(body) }),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text = (text + c).slice(0, 4096)));
          res.on('end', () => {
            const s = res.statusCode ?? 0;
            if ((s >= 200 && s < 300) || okAlso.includes(s)) return resolve();
            let reason = text;
            try {
              reason = (JSON.parse(text) as { message?: string }).message ?? text;
            } catch {
              /* keep raw text */
            }
            reject(
              new MeterdError('METERD_KUBE_REQUEST_FAILED', `${method} ${u.pathname}: ${s} ${reason}`, {
                retryable: s >= 500,
              }),
            );
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('Kubernetes API timeout')));
      req.on('error', (err) =>
        reject(
          new MeterdError('METERD_KUBE_REQUEST_FAILED', `${method} ${u.pathname}`, { retryable: true, cause: err }),
        ),
      );
      req.end(body);
    });
  }
}
