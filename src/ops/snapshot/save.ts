// `metaetcd snapshot save`: the whole logical keyspace at one meta revision R.
//
// The keys are read through the proxy's own read path (meta-reader.ts): R is the
// clock's revision when the save starts (a linearizable count of every key), and
// every page is then a Range pinned at R, so the pages together are exactly the
// keyspace at R across all members, however long the save takes and whatever is
// written meanwhile (unless the meta cluster is compacted past R during the save,
// which fails it). Memory holds one page at a time. Leases are listed after R was
// fixed, with their remaining TTL; a lease that ends meanwhile is left out (its
// keys keep their lease ID, and are reaped after a restore as they would be).
//
// The file is written as FILE.partial and renamed to FILE once complete and synced.

import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import type { ProxyConfig } from '../../config.js';
import { isKind } from '../../errors/etcd-error.js';
import { range } from '../../kv/range.js';
import type { Logger } from '../../log.js';
import { rangeRequest } from '../../proto/build.js';
import { nextKey } from '../../util/bytes.js';
import { encodeHeader, encodeKv, encodeLease, encodeTrailer, SnapshotHasher, type SnapshotLease } from './format.js';
import { openMetaReader } from './meta-reader.js';
import { Progress } from './progress.js';

const ALL = Buffer.from([0]);

export interface SaveOptions {
  file: string;
  config: ProxyConfig;
  log: Logger;
  /** Keys per Range page (default 1000). */
  pageSize?: number;
  progress?: NodeJS.WriteStream;
}

export interface SaveResult {
  revision: number;
  keys: number;
  leases: number;
}

export async function saveSnapshot(o: SaveOptions): Promise<SaveResult> {
  const pageSize = o.pageSize ?? 1000;
  const reader = await openMetaReader(o.config, o.log);
  const partial = `${o.file}.partial`;
  let fd: number | undefined;
  try {
    const ctx = reader.kv;
    const counted = await range(ctx, rangeRequest(ALL, { rangeEnd: ALL, countOnly: true }));
    const revision = counted.header;
    const total = counted.count;

    const leases: SnapshotLease[] = [];
    for (const id of await reader.leases.leases()) {
      try {
        const t = await reader.leases.timeToLive(id, false);
        if (t.ttl >= 0n) leases.push({ id, ttl: Number(t.ttl), grantedTtl: Number(t.grantedTtl) });
      } catch (err) {
        if (!isKind(err, 'lease-not-found')) throw err;
      }
    }

    fd = openSync(partial, 'w', 0o600);
    const hasher = new SnapshotHasher();
    const write = (line: string) => writeSync(fd!, hasher.update(line));
    write(encodeHeader({ revision, created: new Date().toISOString(), keys: total, leases: leases.length }));
    for (const l of leases) write(encodeLease(l));

    const progress = new Progress('snapshot save', total, o.progress);
    let keys = 0;
    let start: Buffer = ALL;
    for (;;) {
      const page = await range(ctx, rangeRequest(start, { rangeEnd: ALL, revision: BigInt(revision), limit: BigInt(pageSize) }));
      let buf = '';
      for (const kv of page.kvs) {
        buf += encodeKv({
          key: kv.key,
          value: kv.value,
          createRevision: Number(kv.createRevision),
          modRevision: Number(kv.modRevision),
          version: Number(kv.version),
          lease: kv.lease,
        });
      }
      if (buf) write(buf);
      keys += page.kvs.length;
      progress.add(page.kvs.length);
      if (!page.more || page.kvs.length === 0) break;
      start = nextKey(page.kvs[page.kvs.length - 1]!.key);
    }
    if (keys !== total) throw new Error(`read ${keys} keys at revision ${revision} but counted ${total} there; the snapshot is not consistent`);
    writeSync(fd, encodeTrailer(keys, leases.length, hasher.digest()));
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(partial, o.file);
    progress.finish(`snapshot saved to ${o.file}: ${keys} keys, ${leases.length} leases at revision ${revision}`);
    return { revision, keys, leases: leases.length };
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(partial, { force: true });
    throw err;
  } finally {
    await reader.close();
  }
}
