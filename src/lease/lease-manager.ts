// Leases across member clusters.
//
// A lease lives in one "home" member, chosen by hashing its ID: it is a real
// etcd lease there (so TTLs, rounding, keep-alives and expiry are etcd's own),
// with a record key ("m/leases/<id>") attached to it. Client keys are never
// attached to member leases; instead a put with a lease writes an index entry
// ("m/lease/<id>/<key>") next to the key, in the key's member and transaction.
// When the lease expires or is revoked, its record disappears from the home
// member's stream and the proxy deletes the lease's keys in every member through
// the ordinary write path, so each deletion gets a proper meta revision and
// DELETE events with prev_kv, in order with everything else.
//
// Nothing is lost if a proxy or member is down at that moment: failed
// deletions are retried, and a periodic sweep (also run at start) deletes the
// keys of every indexed lease that no longer exists.
//
// Cost: a grant is one lease grant and one put on the home member; keep-alives
// go to the home member only; a put with a lease adds one small index entry to
// its own transaction; an expiry reads the index range of each member (cheap)
// and writes only where the lease has keys.

import { randomBytes } from 'node:crypto';
import type { KvContext, LeaseChecker } from '../kv/context.js';
import { toClientKv } from '../kv/translate.js';
import type { Logger } from '../log.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { rangePages } from '../members/range-pages.js';
import { asRange, op, txn } from '../proto/build.js';
import { isKind, messageOf } from '../errors/etcd-error.js';
import { deleteAttached, REAP_CHUNK, reapSteps } from './lease-deletion.js';
import { partitionOf } from '../shard/hash.js';
import type { Router } from '../shard/layout.js';
import { LEASE_INDEX_PREFIX, leaseIndexPrefix, leaseRecordKey, parseLeaseIndexKey, toMemberKey } from '../store/keyspace.js';
import { prefixEnd } from '../util/bytes.js';

export interface LeaseManagerOptions {
  /**
   * The KV context the lease manager deletes ended leases' keys through (the
   * ordinary write path); the manager is the context's lease checker itself.
   */
  kv: Omit<KvContext, 'leases'>;
  sweepIntervalMs?: number;
}

/**
 * Leases whose keys are deleted at once without a caller waiting (expiries). A
 * lease's keys on several members go in a cross-member transaction, which holds
 * back every later write on those members until it commits: many leases ending
 * together, all reaped at once, would queue up that many such commits ahead of
 * every other write. Reaped a few at a time, a write waits for at most a few.
 */
const BACKGROUND_REAPS = 2;
/** Index keys read per member range request. */
const INDEX_PAGE = 5000;

/**
 * The member holding lease `id` (the hash of its 8-byte big-endian ID). Lease homes
 * are fixed at bootstrap: partition moves never move lease records.
 */
export function leaseHome(router: Router, id: bigint): number {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt.asUintN(64, id));
  const homes = router.layout.leaseAssignment ?? router.layout.assignment;
  return homes[partitionOf(b, router.layout.partitions)]!;
}

export class LeaseManager implements LeaseChecker {
  private readonly o: LeaseManagerOptions;
  private readonly log: Logger;
  private readonly kv: KvContext;
  private readonly router: Router;
  private readonly members: EtcdClient[];
  /** Lease ID → time (ms) until which it is known to exist. */
  private readonly aliveUntil = new Map<bigint, number>();
  private readonly reaping = new Map<bigint, Promise<number | undefined>>();
  private readonly retry = new Map<bigint, NodeJS.Timeout>();
  /** Ended leases waiting for a background reap, in the order they ended. */
  private readonly backlog = new Set<bigint>();
  private backgroundReaps = 0;
  private sweepTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(o: LeaseManagerOptions) {
    this.o = o;
    this.kv = { ...o.kv, leases: this };
    this.router = o.kv.router;
    this.members = o.kv.members.clients;
    this.log = o.kv.log.child({ component: 'leases' });
  }

  /** The KV context whose writes check leases with this manager. */
  get context(): KvContext {
    return this.kv;
  }

  start(): void {
    void this.sweep();
    const interval = this.o.sweepIntervalMs ?? 30_000;
    this.sweepTimer = setInterval(() => void this.sweep(), interval);
    this.sweepTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    this.backlog.clear();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const t of this.retry.values()) clearTimeout(t);
    this.retry.clear();
  }

  /** The client of the member holding lease `id`. */
  private home(id: bigint): EtcdClient {
    return this.kv.members.get(this.homeOf(id)).client;
  }

  /** The member holding lease `id`. */
  homeOf(id: bigint): number {
    return leaseHome(this.router, id);
  }

  async grant(ttl: bigint, requestedId: bigint): Promise<{ id: bigint; ttl: bigint }> {
    for (let attempt = 0; ; attempt++) {
      const id = requestedId !== 0n ? requestedId : randomLeaseId();
      const home = this.home(id);
      let granted;
      try {
        granted = await home.leaseGrant({ ID: id, TTL: ttl });
      } catch (err) {
        // A random ID that happens to exist already: pick another.
        if (requestedId === 0n && attempt < 5 && isKind(err, 'lease-exists')) continue;
        throw err;
      }
      try {
        await home.txn(txn([], [op.put(leaseRecordKey(id), Buffer.from(JSON.stringify({ ttl: Number(granted.TTL) })), { lease: id })]));
      } catch (err) {
        await home.leaseRevoke({ ID: id }).catch(() => undefined);
        throw err;
      }
      this.aliveUntil.set(id, Date.now() + Number(granted.TTL) * 1000 - 500);
      this.kv.metrics.leaseGrants.inc();
      return { id, ttl: granted.TTL };
    }
  }

  /**
   * Revokes the lease and deletes its keys in every member before returning (as
   * etcd does). Returns the highest revision of those deletions, if any.
   */
  async revoke(id: bigint): Promise<number | undefined> {
    const home = this.home(id);
    await home.leaseRevoke({ ID: id });
    this.aliveUntil.delete(id);
    return this.reap(id);
  }

  async timeToLive(id: bigint, withKeys: boolean): Promise<{ ttl: bigint; grantedTtl: bigint; keys: Buffer[] }> {
    const home = this.home(id);
    const resp = await home.leaseTimeToLive({ ID: id, keys: false });
    const keys = withKeys && resp.TTL >= 0n ? await this.keysOf(id) : [];
    return { ttl: resp.TTL, grantedTtl: resp.grantedTTL, keys };
  }

  async leases(): Promise<bigint[]> {
    const all = await Promise.all(
      this.members.map(async (m) => (await m.leaseLeases()).leases.map((l) => l.ID)),
    );
    const ids = all.flat().sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    this.kv.metrics.leasesLive.set(ids.length);
    return ids;
  }

  /**
   * Keep-alive and TimeToLive answers tell how long a lease lives on; remember it
   * for puts. etcd rounds the remaining TTL down, so 0 means "in its last second".
   */
  observeTtl(id: bigint, ttl: bigint): void {
    if (ttl > 0n) this.aliveUntil.set(id, Date.now() + Number(ttl) * 1000 - 500);
    else this.aliveUntil.delete(id);
  }

  async exists(id: bigint, fresh = false): Promise<boolean> {
    if (!fresh && (this.aliveUntil.get(id) ?? 0) > Date.now()) return true;
    const home = this.home(id);
    let resp;
    try {
      resp = await home.leaseTimeToLive({ ID: id, keys: false });
    } catch (err) {
      if (isKind(err, 'lease-not-found')) return false;
      throw err;
    }
    this.observeTtl(id, resp.TTL);
    // -1: no such lease; 0: alive, in its last second.
    return resp.TTL >= 0n;
  }

  attached(ids: Iterable<bigint>): void {
    const now = Date.now();
    for (const id of ids) {
      // The write has landed. A lease whose known life still runs past now existed then (a
      // revoke meanwhile is caught by the reapers' second pass, see onLeaseGone); otherwise
      // it may have ended between the check and the write, and then its new key must go too.
      if ((this.aliveUntil.get(id) ?? 0) > now) continue;
      this.exists(id, true).then(
        (alive) => {
          if (!alive) this.reapInBackground(id);
        },
        () => undefined,
      );
    }
  }

  /**
   * The home member's stream showed the lease record disappear. Besides reaping
   * now, reap once more when any put that was accepted with the lease just before
   * it ended (the lease still existed when checked) has had time to land.
   */
  onLeaseGone(id: bigint): void {
    this.aliveUntil.delete(id);
    this.reapInBackground(id);
    const grace = this.kv.limits.requestTimeoutMs + 1000;
    setTimeout(() => {
      if (!this.stopped) this.reapInBackground(id);
    }, grace).unref();
  }

  /**
   * Reaps without a caller waiting, BACKGROUND_REAPS at a time: failures are logged
   * and retried by reap() itself.
   */
  private reapInBackground(id: bigint): void {
    if (this.stopped) return;
    this.backlog.add(id);
    this.drainBacklog();
  }

  private drainBacklog(): void {
    for (const next of this.backlog) {
      if (this.backgroundReaps >= BACKGROUND_REAPS) return;
      this.backlog.delete(next);
      this.backgroundReaps++;
      this.reap(next)
        .catch(() => undefined)
        .finally(() => {
          this.backgroundReaps--;
          if (!this.stopped) this.drainBacklog();
        });
    }
  }

  /**
   * Deletes every key still attached to lease `id`, in every member; retried
   * until it succeeds. Resolves with the highest revision of the deletions.
   */
  reap(id: bigint): Promise<number | undefined> {
    let p = this.reaping.get(id);
    if (p) return p;
    p = this.doReap(id).then(
      (revision) => {
        this.reaping.delete(id);
        const t = this.retry.get(id);
        if (t) clearTimeout(t);
        this.retry.delete(id);
        return revision;
      },
      (err: unknown) => {
        this.reaping.delete(id);
        this.log.warn({ lease: id.toString(), err: messageOf(err) }, 'could not delete the keys of an ended lease yet; will retry');
        this.scheduleRetry(id);
        throw err;
      },
    );
    this.reaping.set(id, p);
    return p;
  }

  private scheduleRetry(id: bigint): void {
    if (this.stopped || this.retry.has(id)) return;
    this.retry.set(
      id,
      setTimeout(() => {
        this.retry.delete(id);
        this.reapInBackground(id);
      }, 1000).unref(),
    );
  }

  private async doReap(id: bigint): Promise<number | undefined> {
    // A lease ID may be granted again (clients may choose IDs): then its keys are the new lease's.
    if (await this.exists(id, true)) return undefined;
    let deleted = 0;
    let revision: number | undefined;
    // Every attached key on every member, in steps (reapSteps: one transaction and one
    // revision each, over several members a cross-member one).
    // A member that cannot be read keeps its keys until it is back (the reap is retried);
    // the others' go now.
    const found = await Promise.allSettled(this.members.map((client) => this.attachedKeys(client, id)));
    for (const step of reapSteps(found.map((f) => (f.status === 'fulfilled' ? f.value : [])))) {
      const out = await deleteAttached(this.kv, id, step);
      revision = Math.max(revision ?? 0, out.revision);
      deleted += step.length;
    }
    const unread = found.find((f): f is PromiseRejectedResult => f.status === 'rejected');
    if (unread) throw unread.reason;
    const prefix = leaseIndexPrefix(id);
    await Promise.all(this.members.map((client) => client.txn(txn([], [op.deleteRange(prefix, prefixEnd(prefix))]))));
    if (deleted > 0) {
      this.kv.metrics.leaseExpiries.inc();
      this.kv.metrics.leaseKeysDeleted.inc(deleted);
      this.log.info({ lease: id.toString(), keys: deleted }, 'deleted the keys of an ended lease');
    }
    return revision;
  }

  /** Client keys in `member` whose index says lease `id` and whose value still carries it. */
  private async attachedKeys(client: EtcdClient, id: bigint): Promise<Buffer[]> {
    const candidates: Buffer[] = [];
    for await (const key of indexKeys(client, leaseIndexPrefix(id))) candidates.push(parseLeaseIndexKey(key)!.clientKey);
    return (await this.currentLeases(client, candidates)).filter((c) => c.lease === id).map((c) => c.key);
  }

  /** The current lease of each of `keys` (absent keys are left out). */
  private async currentLeases(client: EtcdClient, keys: Buffer[]): Promise<{ key: Buffer; lease: bigint }[]> {
    const out: { key: Buffer; lease: bigint }[] = [];
    for (let i = 0; i < keys.length; i += REAP_CHUNK) {
      const chunk = keys.slice(i, i + REAP_CHUNK);
      const resp = await client.txn(txn([], chunk.map((k) => op.range(toMemberKey(k)))), { readOnly: true });
      chunk.forEach((key, j) => {
        const kv = asRange(resp.responses[j]).kvs[0];
        if (kv) out.push({ key, lease: toClientKv(kv).lease });
      });
    }
    return out;
  }

  private async keysOf(id: bigint): Promise<Buffer[]> {
    const perMember = await Promise.all(this.members.map((client) => this.attachedKeys(client, id)));
    return perMember.flat().sort(Buffer.compare);
  }

  /** Finds indexed leases that no longer exist and deletes their keys. */
  private async sweep(): Promise<void> {
    if (this.stopped) return;
    try {
      const ids = new Set<bigint>();
      await Promise.all(
        this.members.map(async (client) => {
          for await (const key of indexKeys(client, LEASE_INDEX_PREFIX)) {
            const parsed = parseLeaseIndexKey(key);
            if (parsed) ids.add(parsed.lease);
          }
        }),
      );
      for (const id of ids) {
        if (!(await this.exists(id, true))) await this.reap(id).catch(() => undefined); // retried by reap() on failure
      }
      await this.leases();
    } catch (err) {
      this.log.warn({ err: messageOf(err) }, 'lease sweep failed; will try again');
    }
  }
}

/**
 * The keys under `prefix` in one member, read in pages of INDEX_PAGE so that a
 * large index never makes one huge response. Pages are read at their own
 * revisions: an entry written meanwhile may be missed, which the second reap pass
 * and the sweep catch.
 */
async function* indexKeys(client: EtcdClient, prefix: Buffer): AsyncGenerator<Buffer> {
  for await (const kvs of rangePages(client, { key: prefix, rangeEnd: prefixEnd(prefix), keysOnly: true }, INDEX_PAGE)) {
    for (const kv of kvs) yield kv.key;
  }
}

function randomLeaseId(): bigint {
  for (;;) {
    const id = randomBytes(8).readBigUInt64BE() & 0x7fffffffffffffffn;
    if (id !== 0n) return id;
  }
}
