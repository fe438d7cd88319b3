// The composition root's second part, shared by the proxy and by tools that read
// the meta cluster in-process (`metaetcd snapshot save`): the layout's router,
// the compaction state, the clock, and the KV context with its lease manager.

import { Clock } from '../clock/clock.js';
import type { ProxyConfig } from '../config.js';
import { CompactionState } from '../kv/context.js';
import { KeyCache } from '../kv/key-cache.js';
import { KeyTurns } from '../kv/txn/key-turns.js';
import { LeaseManager } from '../lease/lease-manager.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { Router } from '../shard/layout.js';
import type { Clusters } from './members.js';

export interface KvCore {
  router: Router;
  compaction: CompactionState;
  clock: Clock;
  /** Owns the KV context (`leases.context`); started separately, by whoever reaps leases. */
  leases: LeaseManager;
}

export function buildKvCore(config: ProxyConfig, { members, coordinator, boot }: Clusters, log: Logger, metrics: Metrics, keyCacheEntries: number): KvCore {
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
  const leases = new LeaseManager({
    kv: {
      router,
      members,
      keyCache: new KeyCache(keyCacheEntries),
      writeTurns: new KeyTurns(config.requestTimeoutMs),
      clock,
      compaction,
      limits: { maxRequestBytes: config.maxRequestBytes, maxTxnOps: config.maxTxnOps, requestTimeoutMs: config.requestTimeoutMs, batchWrites: config.writeBatching === 'on' },
      metrics,
      log: log.child({ component: 'kv' }),
    },
  });
  return { router, compaction, clock, leases };
}
