// Reading a member's keys of a set of partitions and writing them in marked
// transactions. Every transaction that writes client keys (or their lease index
// entries) for a move also puts m/move/marker = move id, so the proxies treat the
// member revision as bookkeeping (never delivered to watches or the key cache).

import type { EtcdClient } from '../members/etcd-client.js';
import { rangePages } from '../members/range-pages.js';
import type { KeyValue } from '../proto/gen/kv.js';
import { op, txn } from '../proto/build.js';
import type { RequestOp } from '../proto/gen/rpc.js';
import type { Layout } from '../shard/layout.js';
import { PlacementRules, route } from '../shard/placement.js';
import { InternalKey, isDataKey, LEASE_INDEX_PREFIX, parseLeaseIndexKey, toClientKey, toMemberRange } from '../store/keyspace.js';
import { EMPTY, prefixEnd } from '../util/bytes.js';

/** Client ops per member txn, the marker included (etcd's default --max-txn-ops is 128). */
export const MAX_OPS = 100;
/** Bytes of keys and values per txn, well under the members' request size limit. */
const MAX_BYTES = 1 << 20;
const PAGE = 1000;

const DATA = toMemberRange(EMPTY, Buffer.from([0]));
const LEASE_INDEX = { key: LEASE_INDEX_PREFIX, rangeEnd: prefixEnd(LEASE_INDEX_PREFIX) };

/**
 * Which keys of a member a move carries: data keys and lease index entries of
 * keys in P. A key under a placement rule belongs to no partition (it stays on
 * the rule's member), so a move never carries it.
 */
export class PartitionFilter {
  private readonly set: Set<number>;
  private readonly rules: PlacementRules;
  private readonly assignment: readonly number[];
  /** `layout`: the layout the move runs under (its rules and partition count), or just the partition count. */
  constructor(partitions: number[], layout: Layout | number) {
    this.set = new Set(partitions);
    this.rules = new PlacementRules(typeof layout === 'number' ? [] : layout.rules);
    // Only the partition numbers matter here (route's member is not used).
    this.assignment = typeof layout === 'number' ? new Array<number>(layout).fill(0) : layout.assignment;
  }

  /** True for a data key or lease index key (member key form) whose client key is in P. */
  carries(memberKey: Buffer): boolean {
    if (isDataKey(memberKey)) return this.inP(toClientKey(memberKey));
    const idx = parseLeaseIndexKey(memberKey);
    return idx !== undefined && this.inP(idx.clientKey);
  }

  private inP(clientKey: Buffer): boolean {
    const r = route(this.rules, this.assignment, clientKey);
    return r.partition !== undefined && this.set.has(r.partition);
  }
}

/** Visits the member's carried keys at member revision `revision` (0: now), one page at a time. */
export async function scanCarried(
  client: EtcdClient,
  filter: PartitionFilter,
  revision: number,
  o: { keysOnly?: boolean; visit: (kvs: KeyValue[]) => Promise<void> | void },
): Promise<void> {
  for (const r of [DATA, LEASE_INDEX]) {
    const req = { ...r, revision: BigInt(revision), keysOnly: o.keysOnly ?? false };
    for await (const page of rangePages(client, req, PAGE, { context: `reading ${client.name}'s keys at member revision ${revision}` })) {
      const kvs = page.filter((kv) => filter.carries(kv.key));
      if (kvs.length > 0) await o.visit(kvs);
    }
  }
}

/**
 * Buffers puts and deletes for one member and sends them in marked txns of at
 * most MAX_OPS ops. A key never appears twice in one txn (etcd refuses that), so
 * a repeated key flushes first, which also keeps the order of writes to a key.
 */
export class MarkedWriter {
  private ops: RequestOp[] = [];
  private keys = new Set<string>();
  private bytes = 0;
  /** Member revision of the last txn sent. */
  lastRevision = 0;
  written = 0;

  constructor(
    private readonly client: EtcdClient,
    private readonly moveId: string,
  ) {}

  async put(key: Buffer, value: Buffer): Promise<void> {
    await this.add(key, op.put(key, value), key.length + value.length);
  }

  async delete(key: Buffer): Promise<void> {
    await this.add(key, op.deleteRange(key), key.length);
  }

  async flush(): Promise<void> {
    if (this.ops.length === 0) return;
    const ops = [...this.ops, op.put(InternalKey.moveMarker, Buffer.from(this.moveId))];
    const n = this.ops.length;
    this.ops = [];
    this.keys.clear();
    this.bytes = 0;
    const resp = await this.client.txn(txn([], ops), { context: `writing ${n} keys for move ${this.moveId}` });
    this.lastRevision = Number(resp.header?.revision ?? 0n);
    this.written += n;
  }

  private async add(key: Buffer, o: RequestOp, size: number): Promise<void> {
    const k = key.toString('latin1');
    if (this.keys.has(k) || this.ops.length >= MAX_OPS - 1 || (this.ops.length > 0 && this.bytes + size > MAX_BYTES)) await this.flush();
    this.ops.push(o);
    this.keys.add(k);
    this.bytes += size;
  }
}

/** The member's current revision. */
export async function memberRevision(client: EtcdClient): Promise<number> {
  const resp = await client.range({ key: InternalKey.identity, countOnly: true }, { context: 'reading the member revision' });
  return Number(resp.header?.revision ?? 0n);
}

/** Deletes every carried key from a member in marked txns; returns how many. */
export async function deleteCarried(client: EtcdClient, filter: PartitionFilter, moveId: string): Promise<number> {
  const w = new MarkedWriter(client, moveId);
  await scanCarried(client, filter, 0, {
    keysOnly: true,
    visit: async (kvs) => {
      for (const kv of kvs) await w.delete(kv.key);
    },
  });
  await w.flush();
  return w.written;
}
