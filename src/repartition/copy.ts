// Step 1 of a move: the copy of P's keys from S (read at one member revision s0)
// into T, with their envelopes (mod/create revision, lease) and a versionBase so
// each reports the source's version, and P's lease index entries.

import type { EtcdClient } from '../members/etcd-client.js';
import type { KeyValue } from '../proto/gen/kv.js';
import { isDataKey } from '../store/keyspace.js';
import { retargetEnvelope } from './copy-envelope.js';
import { MarkedWriter, memberRevision, scanCarried, type PartitionFilter } from './member-io.js';

/**
 * T's member version of every data key of P the move put there: what a later
 * put of the key makes it (+1), so catch-up puts can set the right versionBase.
 * Only the mover writes P's keys on T until the flip, so this is exact.
 */
export class TargetVersions {
  private readonly versions = new Map<string, number>();

  /** The version T will give the key's next put. */
  next(memberKey: Buffer): number {
    return (this.versions.get(memberKey.toString('latin1')) ?? 0) + 1;
  }

  record(memberKey: Buffer, version: number): void {
    this.versions.set(memberKey.toString('latin1'), version);
  }

  forget(memberKey: Buffer): void {
    this.versions.delete(memberKey.toString('latin1'));
  }
}

/** Puts one source key (as S holds it) into T through the writer. */
export async function putCopy(w: MarkedWriter, versions: TargetVersions, kv: KeyValue): Promise<void> {
  if (!isDataKey(kv.key)) {
    await w.put(kv.key, kv.value); // a lease index entry: copied as it is
    return;
  }
  const version = versions.next(kv.key);
  await w.put(kv.key, retargetEnvelope(kv.value, Number(kv.version), version));
  versions.record(kv.key, version);
}

export interface CopyResult {
  /** Source member revision the copy read at (s0). */
  at: number;
  keys: number;
}

/** Counts P's keys on S at `at` (the progress total). */
export async function countCarried(source: EtcdClient, filter: PartitionFilter, at: number): Promise<number> {
  let n = 0;
  await scanCarried(source, filter, at, { keysOnly: true, visit: (kvs) => void (n += kvs.length) });
  return n;
}

export async function copyPartitions(o: {
  source: EtcdClient;
  target: EtcdClient;
  filter: PartitionFilter;
  moveId: string;
  versions: TargetVersions;
  onProgress: (copied: number, total: number) => void;
  signal?: AbortSignal | undefined;
}): Promise<CopyResult> {
  const at = await memberRevision(o.source);
  const total = await countCarried(o.source, o.filter, at);
  const w = new MarkedWriter(o.target, o.moveId);
  let copied = 0;
  o.onProgress(0, total);
  await scanCarried(o.source, o.filter, at, {
    visit: async (kvs) => {
      o.signal?.throwIfAborted();
      for (const kv of kvs) await putCopy(w, o.versions, kv);
      await w.flush();
      copied += kvs.length;
      o.onProgress(copied, total);
    },
  });
  await w.flush();
  return { at, keys: copied };
}
