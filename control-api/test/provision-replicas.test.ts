import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '@meterd/core/log';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { SecretBox } from '../src/crypto/secret-box.js';
import type { DeploySpec, ProvisionDriver } from '../src/provision/driver.js';
import { Provisioner } from '../src/services/provisions.js';

/**
 * Provision resume with several control API replicas: a replica starting while another is still
 * deploying leaves that provision alone; once the deploying replica is gone (its lease ran out),
 * the next resume deploys it, exactly once.
 */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('ctlprvreplicas');
});
after(async () => {
  await stores?.close();
});

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A deploy backend that counts deploys and holds each one until released (a slow rollout). */
class HeldDriver implements ProvisionDriver {
  readonly name = 'local';
  deploys: string[] = [];
  private release!: () => void;
  private readonly released = new Promise<void>((r) => (this.release = r));
  hostOf(): null {
    return null;
  }
  async deploy(spec: DeploySpec): Promise<{ url: string }> {
    this.deploys.push(spec.provisionId);
    await this.released;
    return { url: 'http://127.0.0.1:1' };
  }
  async destroy(): Promise<void> {}
  async close(): Promise<void> {
    this.release();
  }
  finish(): void {
    this.release();
  }
}

test('a replica starting mid-deploy does not deploy it again; after the deployer is gone, one resume does', async () => {
  const log = createLogger('provision-replicas', 'silent');
  const box = new SecretBox('');
  const { workspace } = await stores.workspace('growth');
  const a = new HeldDriver();
  const b = new HeldDriver();
  const c = new HeldDriver();
  const replicaA = new Provisioner(stores.pool, a, box, log);
  const replicaB = new Provisioner(stores.pool, b, box, log);
  const replicaC = new Provisioner(stores.pool, c, box, log);
  try {
    const row = await replicaA.create(workspace.id, 'acp-handler', 'cust1', {
      METER_URL: 'http://127.0.0.1:8080',
      METER_WORKSPACE_ID: workspace.id,
      METER_API_KEY: 'sks_x',
    });
    await until(() => a.deploys.length === 1, 'A deploys what it created');
    assert.deepEqual(a.deploys, [row.id]);
    // B starts while A is still deploying.
    await replicaB.resume();
    assert.deepEqual(b.deploys, [], 'B leaves a provision under deploy alone');
    // A dies mid-deploy: its lease runs out (moved to the past here instead of waiting 15 min).
    await stores.pool.query(`UPDATE provisions SET deploy_lease_until = now() - interval '1 second' WHERE id = $1`, [
      row.id,
    ]);
    await Promise.all([replicaB.resume(), replicaC.resume()]);
    await until(() => b.deploys.length + c.deploys.length > 0, 'a resume takes it over');
    b.finish();
    c.finish();
    await Promise.all([replicaB.settle(), replicaC.settle()]);
    assert.deepEqual([...b.deploys, ...c.deploys], [row.id], 'exactly one deploy by the replicas that resumed');
    assert.equal((await replicaB.get(row.id))!.status, 'running');
  } finally {
    a.finish();
    await Promise.all([replicaA.close(), replicaB.close(), replicaC.close()]);
  }
});
