// kube-apiserver's use of leases (kubernetes-contract.md §2.12): one cached
// lease per resource store, granted with TTL = ttl + reuse and ID 0, reused
// while it outlives now+ttl, attached to a few puts each; never kept alive,
// never revoked, never asked about. Keys must simply go when their lease ends,
// on every member, each deletion delivered once to watchers.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { Compare_CompareResult, Compare_CompareTarget } from '../../src/proto/gen/rpc.js';
import { prefixEnd } from '../../src/util/bytes.js';
import { countUnder, sleep, waitFor, WatchRecorder } from './lease-helpers.js';

/** Every test is bounded (node:test fails it after this long). */
const BOUND = { timeout: 90_000 };

const STORES = 200;
const OBJECTS_PER_STORE = 3;
/** The objects' TTL and kube's reuse window (seconds): LeaseGrant asks for TTL + reuse. */
const TTL = 2;
const REUSE = 1;

let set: EtcdSet;
let proxy: TestProxy;
let client: EtcdClient;

before(async () => {
  set = await startEtcdSet({ name: 'lease-kube' });
  proxy = await startTestProxy(set);
  client = clientFor(proxy.url, 'proxy');
});
after(async () => {
  client?.close();
  await proxy?.stop();
  await set?.stop();
});

/** kube's leaseManager (etcd3/lease_manager.go), one per store. */
class LeaseManager {
  private id = 0n;
  private expiry = 0;
  private objects = 0;
  grants = 0;
  constructor(private readonly c: EtcdClient) {}

  async getLease(ttl: number): Promise<bigint> {
    const now = Date.now();
    if (this.id !== 0n && this.expiry > now + ttl * 1000 && this.expiry < now + (ttl + REUSE) * 1000 && this.objects < 1000) {
      this.objects++;
      return this.id;
    }
    const g = await this.c.leaseGrant({ TTL: BigInt(ttl + REUSE), ID: 0n });
    this.grants++;
    this.id = g.ID;
    this.expiry = now + (ttl + REUSE) * 1000;
    this.objects = 1;
    return this.id;
  }
}

async function pool<T>(items: T[], concurrency: number, f: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await f(items[next++]!);
    }),
  );
}

test(`${STORES} stores each granting a TTL+reuse lease for ${OBJECTS_PER_STORE} puts, never kept alive: after expiry every key is gone, each DELETE seen once`, BOUND, async () => {
  const start = (await client.range({ key: Buffer.from('/registry/') })).header!.revision;
  const w = await new WatchRecorder(client, { key: Buffer.from('/registry/'), prefix: true, prevKv: true, startRevision: start + 1n }).ready();
  try {
    const managers = Array.from({ length: STORES }, () => new LeaseManager(client));
    const written = new Map<string, { lease: bigint; rev: bigint }>();
    const t0 = Date.now();
    await pool(
      managers.map((m, s) => ({ m, s })),
      16,
      async ({ m, s }) => {
        for (let j = 0; j < OBJECTS_PER_STORE; j++) {
          const key = `/registry/events/ns-${s}/obj-${j}`;
          const lease = await m.getLease(TTL);
          const r = await client.txnPartial({
            compare: [{ key: Buffer.from(key), target: Compare_CompareTarget.MOD, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'modRevision', value: 0n } }],
            success: [{ request: { $case: 'requestPut', value: { key: Buffer.from(key), value: Buffer.from(`event ${s}/${j}`), lease } } }],
            failure: [{ request: { $case: 'requestRange', value: { key: Buffer.from(key) } } }],
          });
          assert.ok(r.succeeded, `create of ${key}`);
          written.set(key, { lease, rev: r.header!.revision });
        }
      },
    );
    const writeMs = Date.now() - t0;
    const grants = managers.reduce((a, m) => a + m.grants, 0);
    assert.ok(grants >= STORES, `${grants} grants`);
    const members = new Set([...written.keys()].map((k) => proxy.handle.router.memberOf(Buffer.from(k))));
    assert.equal(members.size, 3, 'the keys span every member');

    await waitFor('every key to expire', async () => (await countUnder(client, '/registry/')) === 0, 30_000, 250);
    const goneMs = Date.now() - t0;
    await w.waitForEvents('a DELETE for every key', (evs) => evs.filter((e) => e.type === 'DELETE').length >= written.size, 20_000);
    await sleep(500);

    const puts = new Map<string, number>();
    const deletes = new Map<string, number>();
    for (const e of w.events) {
      const m = e.type === 'PUT' ? puts : deletes;
      m.set(e.key, (m.get(e.key) ?? 0) + 1);
      if (e.type === 'DELETE') {
        const wr = written.get(e.key)!;
        assert.ok(e.modRevision > wr.rev, `DELETE ${e.key}@${e.modRevision} above its create@${wr.rev}`);
        assert.equal(e.prevKv?.lease, wr.lease, `prev_kv.lease of ${e.key}`);
      }
    }
    assert.equal(puts.size, written.size);
    assert.equal(deletes.size, written.size, 'a DELETE for every key');
    assert.deepEqual([...deletes.values()].filter((n) => n !== 1), [], 'no key deleted twice');
    assert.deepEqual([...puts.values()].filter((n) => n !== 1), [], 'no key created twice');
    let last = 0n;
    let lastResponse = -1;
    for (const e of w.events) {
      if (e.response !== lastResponse) {
        assert.ok(e.modRevision > last, `revisions increase: ${e.modRevision} after ${last}`);
        last = e.modRevision;
        lastResponse = e.response;
      }
    }
    // Leases the store granted are gone too.
    const live = new Set((await client.leaseLeases()).leases.map((l) => l.ID));
    const ours = new Set([...written.values()].map((x) => x.lease));
    assert.deepEqual([...ours].filter((id) => live.has(id)), [], 'no granted lease is still listed');
    console.log(`# ${grants} grants, ${written.size} keys written in ${writeMs} ms; all gone ${goneMs} ms after the first grant`);
  } finally {
    w.close();
  }
});

test('ended leases leave no lease bookkeeping behind in any member', BOUND, async () => {
  // After the previous test every lease ended and its keys were deleted: the lease index
  // ("m/lease/") and lease records ("m/leases/") in the members must be empty again.
  await waitFor(
    'the members to hold no lease index entries or lease records',
    async () => {
      for (const m of set.members) {
        const raw = clientFor(m.clientUrl, m.name);
        try {
          for (const prefix of ['m/lease/', 'm/leases/']) {
            const key = Buffer.from(prefix);
            const r = await raw.range({ key, rangeEnd: prefixEnd(key), countOnly: true });
            if (r.count !== 0n) return false;
          }
        } finally {
          raw.close();
        }
      }
      return true;
    },
    10_000,
    250,
  );
});
