// Catch-up: S's history (from, to] replayed onto T, partition-filtered. It is
// read with an etcd watch from member revision from+1 over S's whole keyspace
// (so every revision has at least one event and reaching `to` is seen), keeping
// P's data keys and lease index entries: puts become marked puts on T, deletes
// marked deletes. If S compacted past `from`, the history is gone: the caller
// restarts the copy (CompactedHistory).

import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { EtcdClient } from '../members/etcd-client.js';
import { Event_EventType, type Event } from '../proto/gen/kv.js';
import { WatchRequest, type WatchResponse } from '../proto/gen/rpc.js';
import { isDataKey } from '../store/keyspace.js';
import { putCopy, type TargetVersions } from './copy.js';
import { MarkedWriter, type PartitionFilter } from './member-io.js';

const ALL = Buffer.from([0]);

export class CompactedHistory extends Error {
  constructor(
    readonly member: string,
    readonly from: number,
    readonly compactRevision: number,
  ) {
    super(`${member} compacted its history to revision ${compactRevision}, past the catch-up's start ${from + 1}`);
  }
}

export interface CatchUpResult {
  /** Events of P applied to T. */
  applied: number;
}

export async function catchUp(o: {
  source: EtcdClient;
  target: EtcdClient;
  filter: PartitionFilter;
  moveId: string;
  versions: TargetVersions;
  from: number;
  to: number;
  signal?: AbortSignal | undefined;
}): Promise<CatchUpResult> {
  if (o.to <= o.from) return { applied: 0 };
  const w = new MarkedWriter(o.target, o.moveId);
  let applied = 0;
  await readHistory(o.source, o.from, o.to, o.signal, async (events) => {
    for (const ev of events) {
      const key = ev.kv!.key;
      if (!o.filter.carries(key)) continue;
      applied++;
      if (ev.type === Event_EventType.DELETE) {
        await w.delete(key);
        if (isDataKey(key)) o.versions.forget(key);
      } else {
        await putCopy(w, o.versions, ev.kv!);
      }
    }
    await w.flush();
  });
  await w.flush();
  return { applied };
}

/** Delivers S's events of revisions (from, to] in order, one watch response at a time. */
function readHistory(
  source: EtcdClient,
  from: number,
  to: number,
  signal: AbortSignal | undefined,
  handle: (events: Event[]) => Promise<void>,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const stream: ClientDuplexStream<WatchRequest, WatchResponse> = source.watch();
    let settled = false;
    // Responses are handled one after another: the next waits for the previous one's writes to T.
    let chain = Promise.resolve();
    const finish = (err?: unknown) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      stream.cancel();
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else resolve();
    };
    const onAbort = () => finish(signal?.reason ?? new Error('aborted'));
    signal?.addEventListener('abort', onAbort);
    stream.on('data', (resp: WatchResponse) => {
      if (resp.compactRevision > 0n) return finish(new CompactedHistory(source.name, from, Number(resp.compactRevision)));
      if (resp.canceled) return finish(new Error(`${source.name} cancelled the history watch: ${resp.cancelReason}`));
      if (resp.events.length === 0) return;
      const events = resp.events.filter((e) => Number(e.kv!.modRevision) <= to);
      const reached = Number(resp.events[resp.events.length - 1]!.kv!.modRevision) >= to;
      chain = chain
        .then(() => (settled ? undefined : handle(events)))
        .then(() => {
          if (reached) finish();
        }, finish);
    });
    stream.on('error', (err: Error) => finish(source.classify(err, `reading history from revision ${from + 1}`)));
    stream.on('end', () => finish(new Error(`${source.name} ended the history watch before revision ${to}`)));
    stream.write(
      WatchRequest.fromPartial({
        requestUnion: { $case: 'createRequest', value: { key: ALL, rangeEnd: ALL, startRevision: BigInt(from + 1) } },
      }),
    );
  });
}
