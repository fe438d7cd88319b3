// Everything the KV executors need, wired once by app.ts.

import type { Clock } from '../clock/clock.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { MemberSet } from '../members/member.js';
import type { Router } from '../shard/layout.js';
import type { KeyCache } from './key-cache.js';
import type { KeyTurns } from './txn/key-turns.js';

/**
 * The meta revision the meta cluster is compacted at, as far as this proxy knows;
 * -1 when it never was (as etcd's compactMainRev). Members store it plus one in
 * m/compacted, so that 0 there means "never".
 */
export class CompactionState {
  private rev = -1;
  private readonly listeners = new Set<(rev: number) => void>();

  get revision(): number {
    return this.rev;
  }

  /** Learns the value stored in a member's m/compacted. */
  raiseStored(stored: number): void {
    this.raise(stored - 1);
  }

  raise(rev: number): void {
    if (rev <= this.rev) return;
    this.rev = rev;
    for (const l of this.listeners) l(rev);
  }

  onRaise(l: (rev: number) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}

/** What the write path needs from the lease manager. */
export interface LeaseChecker {
  /** Whether a meta lease exists (a Put with an unknown lease fails like etcd's). */
  exists(id: bigint): Promise<boolean>;
  /** A write attached keys to these leases; re-check them, in case one ended meanwhile. */
  attached(ids: Iterable<bigint>): void;
}

export interface KvLimits {
  /** etcd's --max-request-bytes: larger requests fail with "request is too large". */
  maxRequestBytes: number;
  /** etcd's --max-txn-ops. */
  maxTxnOps: number;
  /** Bound on waiting for member clusters within one request. */
  requestTimeoutMs: number;
  /** Whether writes to one member are grouped into shared member transactions (members/write-batcher.ts). */
  batchWrites: boolean;
}

export interface KvContext {
  router: Router;
  members: MemberSet;
  /** Recently seen key metadata, to write without reading first. */
  keyCache: KeyCache;
  /** This proxy's writes in flight per key, which guarded writes on those keys wait for. */
  writeTurns: KeyTurns;
  clock: Clock;
  compaction: CompactionState;
  leases: LeaseChecker;
  limits: KvLimits;
  metrics: Metrics;
  log: Logger;
}
