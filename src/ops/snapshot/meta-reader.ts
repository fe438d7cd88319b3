// The proxy's read path, in-process and without a server: clients and bootstrap,
// the clock, the KV context, and one member stream per member (for the member
// timelines that map meta revisions to member revisions), composed as app.ts
// composes them. Nothing is listened on, and nothing is written except what any
// read may write (a fence closing a revision a stalled write holds). The lease
// manager is not started: taking a snapshot does not reap expired leases' keys.

import { buildKvCore } from '../../app/kv-core.js';
import { connectClusters } from '../../app/members.js';
import { StopStack } from '../../app/stack.js';
import type { ProxyConfig } from '../../config.js';
import type { KvContext } from '../../kv/context.js';
import type { LeaseManager } from '../../lease/lease-manager.js';
import type { Logger } from '../../log.js';
import { parseClusters } from '../../members/endpoints.js';
import { EtcdClient } from '../../members/etcd-client.js';
import { MemberStream } from '../../members/member-stream.js';
import { Metrics } from '../../metrics.js';
import { InternalKey } from '../../store/keyspace.js';
import { loadTls, urls } from './tls.js';

export interface MetaReader {
  kv: KvContext;
  leases: LeaseManager;
  clusterId: string;
  close(): Promise<void>;
}

/** Refuses clusters no proxy has bootstrapped: opening them the proxy's way would make them a new, empty meta cluster. */
async function requireMetaCluster(config: ProxyConfig): Promise<void> {
  const tls = loadTls(config);
  const clients = parseClusters(config.members).map((endpoints, i) => new EtcdClient({ name: `member ${i}`, endpoints, tls, requestTimeoutMs: config.requestTimeoutMs }));
  try {
    const counts = await Promise.all(clients.map(async (c) => (await c.range({ key: InternalKey.layout, countOnly: true })).count));
    if (counts.every((n) => n === 0n)) {
      throw new Error(`no member cluster holds a metaetcd layout (${clients.map(urls).join(', ')}): not a meta cluster, nothing to save`);
    }
  } finally {
    for (const c of clients) c.close();
  }
}

export async function openMetaReader(config: ProxyConfig, log: Logger): Promise<MetaReader> {
  await requireMetaCluster(config);
  const metrics = new Metrics();
  const stack = new StopStack(log);
  try {
    const clusters = await connectClusters(config, log, metrics, stack);
    const { members, boot } = clusters;
    // No write path runs here: the key cache is never consulted.
    const { compaction, leases } = buildKvCore(config, clusters, log, metrics, 1);
    const streams = members.map(
      (m) =>
        new MemberStream({
          member: m.index,
          client: m.client,
          timeline: m.timeline,
          log,
          metrics,
          onCompacted: (stored) => compaction.raiseStored(stored),
        }),
    );
    stack.defer('member streams', () => streams.forEach((s) => s.stop()));
    await Promise.all(streams.map((s) => s.start()));
    return { kv: leases.context, leases, clusterId: boot.layout.clusterId, close: () => stack.stop() };
  } catch (err) {
    await stack.stop();
    throw err;
  }
}
