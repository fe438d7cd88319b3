// `metaetcd snapshot restore`: a snapshot file onto a fresh meta cluster, or into
// one plain etcd. The file is verified completely (checksum, structure, counts)
// before anything is written.
//
// Onto fresh member clusters and a fresh coordinator (any number of members):
//  1. every member and the coordinator must be empty (no key at all);
//  2. the meta cluster is bootstrapped as a proxy's first start does
//     (members/bootstrap.ts: layout agreed in the coordinator, identity, layout
//     and bookkeeping records in every member);
//  3. every key is written straight into its member in the member storage format
//     (store/keyspace.ts, store/envelope.ts) with its recorded meta create and mod
//     revisions and lease; the version is the member's own counter, so a key of
//     version V is put V times (the V-1 first with an empty value, several keys per
//     member transaction); a key with a lease gets its lease index entry;
//  4. each member's clock record and ceiling are set to R (a fence: no write can
//     land at or below R), its m/compacted to R (reads below R answer
//     "compacted", as no history before R exists), and the member is compacted at
//     its last revision (the repeated puts disappear from its history);
//  5. the coordinator's clock record is written at R, so the first write gets R+1;
//  6. leases are granted last (so they lose least of their TTL) on their home
//     member with their own IDs and the TTL they had left at save time, each with
//     its lease record. Keys whose lease had ended are restored with it and reaped
//     by the first proxy's lease sweep, as they would have been.
//
// Into one plain etcd (--etcd): etcd assigns revisions itself, so keys are put
// in mod-revision order, the keys of one meta revision (one original
// transaction) in one transaction: values, leases and the order of changes are
// kept, revisions and versions are renumbered (as with etcdctl make-mirror).

import { closeSync, openSync, readSync } from 'node:fs';
import { CLOCK_KEY, encodeCoordinatorRecord } from '../../clock/coordinator-record.js';
import { leaseHome } from '../../lease/lease-manager.js';
import type { Logger } from '../../log.js';
import { bootstrap } from '../../members/bootstrap.js';
import { parseCluster, parseClusters } from '../../members/endpoints.js';
import { EtcdClient } from '../../members/etcd-client.js';
import { cmp, op, txn } from '../../proto/build.js';
import type { RequestOp } from '../../proto/gen/rpc.js';
import { Router } from '../../shard/layout.js';
import { ClockKind, encodeClockRecord } from '../../store/clock-record.js';
import { encodeEnvelope } from '../../store/envelope.js';
import { InternalKey, leaseIndexKey, leaseRecordKey, toMemberKey } from '../../store/keyspace.js';
import { encodeU64BE } from '../../util/bytes.js';
import { parseRecordLine, readSnapshot, verifySnapshot, type SnapshotHeader, type SnapshotKv, type SnapshotLease } from './format.js';
import { Progress } from './progress.js';
import { loadTls, urls, type TlsFiles } from './tls.js';

const ALL = Buffer.from([0]);
const EMPTY = Buffer.alloc(0);
/** Bounds of one member transaction of the restore (etcd's defaults are 128 ops and 1.5 MiB). */
const MAX_OPS = 120;
const MAX_BYTES = 1024 * 1024;

export interface RestoreOptions {
  file: string;
  tls: TlsFiles;
  requestTimeoutMs: number;
  log: Logger;
  progress?: NodeJS.WriteStream;
}

export interface RestoreResult {
  revision: number;
  keys: number;
  leases: number;
}

async function requireEmpty(c: EtcdClient): Promise<void> {
  const resp = await c.range({ key: ALL, rangeEnd: ALL, countOnly: true });
  if (resp.count > 0n) {
    throw new Error(`${c.name} (${urls(c)}) is not empty (${resp.count} keys); a snapshot is restored only onto fresh, empty etcd clusters`);
  }
}

// ---------------------------------------------------------------------------
// Onto a fresh meta cluster

export async function restoreToMetaCluster(o: RestoreOptions & { coordinator: string; members: string }): Promise<RestoreResult> {
  const header = await verifySnapshot(o.file);
  const R = header.revision;
  const clientOpts = { tls: loadTls(o.tls), requestTimeoutMs: o.requestTimeoutMs };
  const coordinator = new EtcdClient({ name: 'coordinator', endpoints: parseCluster(o.coordinator), ...clientOpts });
  const candidates = parseClusters(o.members).map((endpoints, i) => new EtcdClient({ name: `member ${i}`, endpoints, ...clientOpts }));
  try {
    await Promise.all([coordinator, ...candidates].map(requireEmpty));
    const boot = await bootstrap({ coordinator, candidates, log: o.log });
    const router = new Router(boot.layout);
    const members = boot.members;

    const progress = new Progress('snapshot restore', header.keys, o.progress);
    const batches = members.map(() => new MemberBatch());
    const leases: SnapshotLease[] = [];
    let keys = 0;
    for await (const item of readSnapshot(o.file)) {
      if (!('record' in item)) continue;
      const r = item.record;
      if (r.t === 'lease') {
        leases.push(r.lease);
        continue;
      }
      const m = router.memberOf(r.kv.key);
      const batch = batches[m]!;
      if (!batch.fits(r.kv)) await batch.flush(members[m]!);
      batch.add(r.kv);
      keys++;
      progress.add(1);
    }
    await Promise.all(batches.map((b, m) => b.drain(members[m]!)));

    // The clock at R in every member, the compaction at R, then the coordinator.
    const clock = encodeClockRecord({ revision: R, kind: ClockKind.Fence, allocation: [] });
    await Promise.all(
      members.map(async (client) => {
        const resp = await client.txn(
          txn([], [op.put(InternalKey.clock, clock), op.put(InternalKey.ceiling, encodeU64BE(R)), op.put(InternalKey.compacted, encodeU64BE(R + 1))]),
        );
        await client.compact({ revision: resp.header!.revision, physical: true });
      }),
    );
    const record = encodeCoordinatorRecord({ format: 1, revision: R, ceiling: R, last: members.map(() => R) });
    const created = await coordinator.txn(txn([cmp.createEqual(CLOCK_KEY, 0)], [op.put(CLOCK_KEY, record)]));
    if (!created.succeeded) throw new Error('the coordinator got a clock record while restoring: is a proxy running over these clusters?');

    for (const l of leases) {
      const home = members[leaseHome(router, l.id)]!;
      const granted = await home.leaseGrant({ ID: l.id, TTL: BigInt(Math.max(1, l.ttl)) });
      await home.txn(txn([], [op.put(leaseRecordKey(l.id), Buffer.from(JSON.stringify({ ttl: Number(granted.TTL) })), { lease: l.id })]));
    }
    progress.finish(`snapshot restored from ${o.file}: ${keys} keys, ${leases.length} leases at revision ${R} (meta cluster ${boot.layout.clusterId}, ${members.length} members)`);
    return { revision: R, keys, leases: leases.length };
  } finally {
    for (const c of [coordinator, ...candidates]) c.close();
  }
}

/**
 * Keys bound for one member, written in rounds: round j puts every key of the
 * batch whose version is at least j (an empty value before its last round), so a
 * key of version V ends with member version V; the last put of a key carries its
 * value and, with a lease, the lease index entry.
 */
class MemberBatch {
  private kvs: SnapshotKv[] = [];
  private bytes = 0;
  /** The previous batch's writes, still in flight (one at a time per member, while the next one fills). */
  private inflight: Promise<void> = Promise.resolve();
  private failure: unknown;

  fits(kv: SnapshotKv): boolean {
    return this.kvs.length === 0 || (2 * (this.kvs.length + 1) <= MAX_OPS && this.bytes + cost(kv) <= MAX_BYTES);
  }

  add(kv: SnapshotKv): void {
    this.kvs.push(kv);
    this.bytes += cost(kv);
  }

  /** Waits for the previous batch, then starts writing this one; `drain` waits for it too. */
  async flush(client: EtcdClient): Promise<void> {
    await this.inflight;
    if (this.failure !== undefined) throw this.failure;
    const kvs = this.kvs;
    this.kvs = [];
    this.bytes = 0;
    this.inflight = write(client, kvs).catch((err: unknown) => {
      this.failure = err;
    });
  }

  async drain(client: EtcdClient): Promise<void> {
    await this.flush(client);
    await this.inflight;
    if (this.failure !== undefined) throw this.failure;
  }
}

async function write(client: EtcdClient, kvs: SnapshotKv[]): Promise<void> {
  const rounds = Math.max(0, ...kvs.map((kv) => kv.version));
  for (let j = 1; j <= rounds; j++) {
    const ops: RequestOp[] = [];
    for (const kv of kvs) {
      if (kv.version < j) continue;
      const last = kv.version === j;
      const envelope = encodeEnvelope({ modRevision: kv.modRevision, createRevision: kv.createRevision, lease: kv.lease, versionBase: 0, value: last ? kv.value : EMPTY });
      ops.push(op.put(toMemberKey(kv.key), envelope));
      if (last && kv.lease !== 0n) ops.push(op.put(leaseIndexKey(kv.lease, kv.key), EMPTY));
    }
    await client.txn(txn([], ops));
  }
}

function cost(kv: SnapshotKv): number {
  return 2 * kv.key.length + kv.value.length + 64;
}

// ---------------------------------------------------------------------------
// Into one plain etcd

interface Located {
  modRevision: number;
  offset: number;
  length: number;
}

export async function restoreToEtcd(o: RestoreOptions & { etcd: string }): Promise<RestoreResult & { skipped: number }> {
  // Pass 1 verifies the file and notes where each key's record is, to read them in mod-revision order.
  let header: SnapshotHeader | undefined;
  const located: Located[] = [];
  const leases: SnapshotLease[] = [];
  for await (const item of readSnapshot(o.file)) {
    if (!('record' in item)) header = item;
    else if (item.record.t === 'lease') leases.push(item.record.lease);
    else located.push({ modRevision: item.record.kv.modRevision, offset: item.offset, length: item.length });
  }
  located.sort((a, b) => a.modRevision - b.modRevision || a.offset - b.offset);

  const client = new EtcdClient({ name: 'etcd', endpoints: parseCluster(o.etcd), tls: loadTls(o.tls), requestTimeoutMs: o.requestTimeoutMs });
  const fd = openSync(o.file, 'r');
  try {
    await requireEmpty(client);
    const alive = new Set<bigint>();
    for (const l of leases) {
      await client.leaseGrant({ ID: l.id, TTL: BigInt(Math.max(1, l.ttl)) });
      alive.add(l.id);
    }
    const progress = new Progress('snapshot restore', located.length, o.progress);
    let keys = 0;
    let skipped = 0;
    let ops: RequestOp[] = [];
    let bytes = 0;
    let group = -1;
    const flush = async () => {
      if (ops.length > 0) await client.txn(txn([], ops));
      progress.add(ops.length);
      ops = [];
      bytes = 0;
    };
    for (const loc of located) {
      const buf = Buffer.alloc(loc.length);
      readSync(fd, buf, 0, loc.length, loc.offset);
      const r = parseRecordLine(buf.toString('utf8'));
      if (r.t !== 'kv') throw new Error(`${o.file} changed while restoring from it`);
      const kv = r.kv;
      // A key whose lease ended before the save would be reaped with it: left out.
      if (kv.lease !== 0n && !alive.has(kv.lease)) {
        skipped++;
        continue;
      }
      const size = kv.key.length + kv.value.length + 32;
      if (kv.modRevision !== group || ops.length >= MAX_OPS || bytes + size > MAX_BYTES) await flush();
      group = kv.modRevision;
      ops.push(op.put(kv.key, kv.value, { lease: kv.lease }));
      bytes += size;
      keys++;
    }
    await flush();
    const revision = header!.revision;
    progress.finish(
      `snapshot restored from ${o.file} into ${o.etcd}: ${keys} keys, ${leases.length} leases (revisions renumbered; the snapshot was at revision ${revision})` +
        (skipped > 0 ? `; ${skipped} keys of leases that had ended left out` : ''),
    );
    return { revision, keys, leases: leases.length, skipped };
  } finally {
    closeSync(fd);
    client.close();
  }
}
