// The proxy's read path, in-process and without a server: clients and bootstrap,
// the clock, the KV context, and one member stream per member (for the member
// timelines that map meta revisions to member revisions), composed as app.ts
// composes them. Nothing is listened on, and nothing is written except what any
// read may write (a fence closing a revision a stalled write holds). The lease
// manager is not started: taking a snapshot does not reap expired leases' keys.

import { connectClusters } from '../../app/members.js';
import { StopStack } from '../../app/stack.js';
import { Clock } from '../../clock/clock.js';
import type { ProxyConfig } from '../../config.js';
import { CompactionState, type KvContext } from '../../kv/context.js';
import { KeyCache } from '../../kv/key-cache.js';
import { LeaseManager } from '../../lease/lease-manager.js';
import type { Logger } from '../../log.js';
import { MemberStream } from '../../members/member-stream.js';
import { Metrics } from '../../metrics.js';
import { Router } from '../../shard/layout.js';

export interface MetaReader {
  kv: KvContext;
  leases: LeaseManager;
  clusterId: string;
  close(): Promise<void>;
}

export async function openMetaReader(config: ProxyConfig, log: Logger): Promise<MetaReader> {
  const metrics = new Metrics();
  const stack = new StopStack(log);
  try {
    const { coordinator, members, boot } = await connectClusters(config, log, metrics, stack);
    const router = new Router(boot.layout);
    const compaction = new CompactionState();
    compaction.raiseStored(boot.compacted);
    const clock = new Clock({
      coordinator,
      members: members.clients,
      log,
      metrics,
      floor: () => Math.max(...members.map((m) => m.timeline.watermark)),
      watermark: (m) => members.get(m).timeline.watermark,
    });
    const keyCache = new KeyCache(1);
    const leases = new LeaseManager({
      kv: {
        router,
        members,
        keyCache,
        clock,
        compaction,
        limits: { maxRequestBytes: config.maxRequestBytes, maxTxnOps: config.maxTxnOps, requestTimeoutMs: config.requestTimeoutMs },
        metrics,
        log: log.child({ component: 'kv' }),
      },
    });
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
