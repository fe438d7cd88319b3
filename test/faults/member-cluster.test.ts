// A member that is itself a three-node etcd cluster (given to the proxy as
// "url;url;url"), and its leader killed (kill -9) while writes run through two
// proxies: the proxies follow the election to the new leader, their member
// streams move to a live node, and afterwards every acknowledged write is there,
// every failed one is either fully applied or absent, failures were retryable,
// and watches through both proxies saw every change once, in order. Then the
// killed node rejoins and a follower is killed too.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { EtcdProcess, freePort } from '../../src/sandbox/etcd-process.js';
import { memberEtcdSettings } from '../../src/sandbox/member-settings.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { Router } from '../../src/shard/layout.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { allKvs, killHard, sleep, Status, waitUntil } from '../harness/faults.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { prefixEnd, WatchRecorder } from '../harness/watch-checker.js';
import { keysOnMember } from '../lease/lease-helpers.js';
import { judgeWatch, judgeWrites, summarize, writerLoop, type WriteRecord } from './workload.js';

const BOUND = { timeout: 120_000 };
const REQUEST_TIMEOUT_MS = 3000;
/** The member slot the three-node cluster takes (its place in --members on a fresh bootstrap). */
const CLUSTER_SLOT = 1;

let set: EtcdSet;
let nodes: EtcdProcess[] = [];
let P: TestProxy;
let Q: TestProxy;
let p: EtcdClient;
let q: EtcdClient;
let router: Router;
const recorders: WatchRecorder[] = [];
const direct: EtcdClient[] = [];
let shutdown = false;

async function startCluster(root: string): Promise<EtcdProcess[]> {
  const names = ['mc-a', 'mc-b', 'mc-c'];
  const ports: { client: number; peer: number }[] = [];
  for (const _ of names) ports.push({ client: await freePort(), peer: await freePort() });
  const initialCluster = names.map((n, i) => `${n}=http://127.0.0.1:${ports[i]!.peer}`).join(',');
  const token = `mc-${randomBytes(4).toString('hex')}`;
  const settings = memberEtcdSettings(1.5 * 1024 * 1024, 128);
  // The nodes need each other to become healthy: start them together (and stop them all if one fails).
  const started = await Promise.allSettled(
    names.map((name, i) =>
      EtcdProcess.start({
        name,
        dataDir: join(root, name),
        clientPort: ports[i]!.client,
        peerPort: ports[i]!.peer,
        maxRequestBytes: settings.maxRequestBytes,
        // Later flags win: one cluster of three instead of the harness's single-node default.
        extraArgs: [...(settings.extraArgs ?? []), `--initial-cluster=${initialCluster}`, `--initial-cluster-token=${token}`],
      }),
    ),
  );
  const up = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(up.map((n) => n.stop()));
    throw failed.reason;
  }
  return up;
}

before(async () => {
  set = await startEtcdSet({ name: 'member-cluster', members: 2 });
  nodes = await startCluster(set.root);
  const members = [set.members[0]!.clientUrl, nodes.map((n) => n.clientUrl).join(';'), set.members[1]!.clientUrl].join(',');
  const cfg = { members, requestTimeoutMs: REQUEST_TIMEOUT_MS };
  P = await startTestProxy(set, cfg);
  Q = await startTestProxy(set, cfg);
  p = clientFor(P.url, 'proxy P', 20_000);
  q = clientFor(Q.url, 'proxy Q', 20_000);
  router = P.handle.router;
  for (const n of nodes) direct.push(clientFor(n.clientUrl, n.name, 3000));
});

after(async () => {
  shutdown = true;
  for (const r of recorders) r.close();
  for (const c of [p, q, ...direct]) c?.close();
  await Promise.all([P?.stop(), Q?.stop()]);
  await Promise.all(nodes.map((n) => n.stop()));
  await set?.stop();
});

/** The index in `nodes` of the cluster's current leader, asked of the running nodes. */
async function leaderIndex(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const ids = await Promise.all(
      nodes.map(async (n, i) => {
        if (!n.running) return undefined;
        const s = await direct[i]!.status().catch(() => undefined);
        return s && { self: s.header!.memberId, leader: s.leader };
      }),
    );
    const leader = ids.find((x) => x && x.leader !== 0n)?.leader;
    const at = ids.findIndex((x) => x?.self === leader);
    if (at >= 0) return at;
    await sleep(100);
  }
  throw new Error('the member cluster has no leader');
}

function member(rec: WriteRecord): number {
  return router.memberOf(Buffer.from(rec.keys[0]!));
}

test('the member slot given as three endpoints is that three-node cluster (its keys are stored there)', BOUND, async () => {
  const [k] = keysOnMember(router, 'mc-probe/', CLUSTER_SLOT, 1) as [Buffer];
  await p.put({ key: k, value: Buffer.from('here') });
  const stored = await direct[0]!.range({ key: Buffer.concat([Buffer.from('d'), k]) });
  assert.equal(stored.kvs.length, 1, `key ${k} of slot ${CLUSTER_SLOT} is stored in the three-node cluster`);
});

test('leader of a member cluster killed (kill -9), then a follower: writes move to the new leader, nothing acknowledged lost, failures retryable, watches complete', BOUND, async () => {
  const prefix = 'mc/';
  const r0 = (await p.range({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix) })).header!.revision;
  const wp = new WatchRecorder(p, 'watch via P');
  const wq = new WatchRecorder(q, 'watch via Q');
  recorders.push(wp, wq);
  for (const w of [wp, wq]) w.create({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix), startRevision: r0 + 1n, prevKv: true });

  const records: WriteRecord[] = [];
  let stop = false;
  const writers = Array.from({ length: 6 }, (_, i) =>
    writerLoop({ name: `w${i}`, via: i % 2 ? 'Q' : 'P', client: () => (i % 2 ? q : p), router, prefix, stop: () => stop || shutdown, out: records }),
  );
  try {
    await sleep(700);
    const steps: string[] = [];
    for (const role of ['leader', 'follower'] as const) {
      const leader = await leaderIndex();
      const victim = role === 'leader' ? leader : nodes.findIndex((n, i) => i !== leader && n.running);
      await killHard(nodes[victim]!);
      const downAt = performance.now();
      await waitUntil(
        `a write to the member cluster succeeds after its ${role} died`,
        () => records.some((w) => w.rev !== undefined && member(w) === CLUSTER_SLOT && w.start > downAt),
        30_000,
      );
      const movedMs = performance.now() - downAt;
      await sleep(1000);
      const during = records.filter((w) => w.start > downAt && member(w) === CLUSTER_SLOT);
      steps.push(`${role} ${nodes[victim]!.name} killed: first write to the cluster after it succeeded in ${movedMs.toFixed(0)} ms; its writes since: ${summarize(during)}`);
      await nodes[victim]!.restart();
      await sleep(500);
    }
    console.log(steps.join('\n'));
  } finally {
    stop = true;
    await Promise.all(writers);
  }

  const final = (await allKvs(p, Buffer.from(prefix))).kvs;
  judgeWrites(records, final, 'member cluster leader kill');
  for (const w of records) if (w.error) assert.equal(w.code, Status.UNAVAILABLE, `${w.error} (a failover must look retryable)`);
  assert.ok(records.some((w) => w.rev !== undefined && member(w) === CLUSTER_SLOT), 'writes to the member cluster succeeded');
  for (const w of [wp, wq]) {
    await waitUntil(`${w.label} caught up`, () => w.events(0n).length >= final.length, 15_000).catch(() => undefined);
    assert.equal(w.error, undefined, `${w.label} ended: ${w.error?.message}`);
    judgeWatch(w.forId(0n), final, r0, w.label);
  }
});
