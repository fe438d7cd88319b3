// Group commit of this proxy's writes to one member (docs/notes/write-batching.md).
//
// One member transaction is in flight per member at a time. Writes that become
// ready while one is in flight queue up, in the order the sequencer lets them
// out (revision order), and go out together when it returns: consecutive
// batchable writes as one batch transaction in which each write keeps its own
// guards and its own meta revision, any other write alone (its own transaction,
// unchanged). So a proxy's writes to a member can no longer overtake each other,
// and N concurrent writes cost one member round trip, one raft entry and one
// HTTP/2 stream instead of N.
//
//   if   VALUE(m/clock) < r1                       -- per-member order, for the lowest
//   then txn(w1's guards, w1's ops @ r1, read m/clock + w1's state)
//        …
//        txn(wk's guards, wk's ops @ rk, …)
//        m/clock := {rk, Batch, A(rk), [r1..rk]}
//   else read m/clock
//
// A batch holds writes on pairwise disjoint keys only (etcd evaluates every
// compare of a transaction, nested ones included, before applying any of it), so
// it is equivalent to its writes applied one by one in revision order.

import { cmp, op, txn } from '../proto/build.js';
import type { Compare, RequestOp, TxnRequest, TxnResponse } from '../proto/gen/rpc.js';
import { ClockKind, clockGuardValue, encodeClockRecord } from '../store/clock-record.js';
import { InternalKey } from '../store/keyspace.js';
import type { EtcdClient } from './etcd-client.js';

/** Most writes in one batch: etcd checks each level of a transaction against --max-txn-ops (default 128). */
export const MAX_BATCH_WRITES = 64;
/** Most request bytes in one batch, well under etcd's default --max-request-bytes (1.5 MiB). */
export const MAX_BATCH_BYTES = 512 * 1024;

/** One write's part of a batch. */
export interface BatchPart {
  revision: number;
  /** The clock's allocation vector at `revision`. */
  allocation: number[];
  /** The write's own guards (its state), checked in its nested transaction. */
  guards: Compare[];
  /** The write's member ops at `revision` (client ops, lease index entries). */
  ops: RequestOp[];
  /** What its nested transaction reads when a guard fails (its state again). */
  reads: RequestOp[];
  /** Every member key the write compares, reads or writes. */
  keys: string[];
  /** Encoded size of ops and guards, roughly. */
  bytes: number;
}

/** What became of one part. */
export type BatchOutcome =
  /** The batch was applied: the part's nested transaction response (succeeded: its guards held). */
  | { kind: 'applied'; nested: TxnResponse; header: TxnResponse['header'] }
  /** The member's clock had passed the batch's lowest revision: nothing was applied. */
  | { kind: 'order-lost'; resp: TxnResponse };

interface QueuedPart {
  kind: 'part';
  part: BatchPart;
  resolve: (o: BatchOutcome) => void;
  reject: (e: unknown) => void;
}

interface QueuedSolo {
  kind: 'solo';
  request: TxnRequest;
  resolve: (r: TxnResponse) => void;
  reject: (e: unknown) => void;
}

type Queued = QueuedPart | QueuedSolo;

export class MemberWriteBatcher {
  private queue: Queued[] = [];
  private busy = false;

  constructor(
    private readonly client: EtcdClient,
    private readonly onBatch: (writes: number) => void = () => undefined,
  ) {}

  /** Queues one write's part of the next batch. */
  submit(part: BatchPart): Promise<BatchOutcome> {
    return new Promise<BatchOutcome>((resolve, reject) => {
      this.queue.push({ kind: 'part', part, resolve, reject });
      this.pump();
    });
  }

  /** Queues a write that goes alone, in its turn. */
  submitSolo(request: TxnRequest): Promise<TxnResponse> {
    return new Promise<TxnResponse>((resolve, reject) => {
      this.queue.push({ kind: 'solo', request, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    if (this.busy || this.queue.length === 0) return;
    this.busy = true;
    const head = this.queue[0]!;
    const sent = head.kind === 'solo' ? this.sendSolo() : this.sendBatch();
    void sent.finally(() => {
      this.busy = false;
      this.pump();
    });
  }

  private async sendSolo(): Promise<void> {
    const q = this.queue.shift() as QueuedSolo;
    this.onBatch(1);
    try {
      q.resolve(await this.client.txn(q.request));
    } catch (err) {
      q.reject(err);
    }
  }

  private async sendBatch(): Promise<void> {
    const parts = this.take();
    this.onBatch(parts.length);
    const first = parts[0]!.part;
    const last = parts[parts.length - 1]!.part;
    const record = encodeClockRecord({
      revision: last.revision,
      kind: ClockKind.Batch,
      allocation: last.allocation,
      batch: parts.map((p) => p.part.revision),
    });
    const request = txn(
      [cmp.valueLess(InternalKey.clock, clockGuardValue(first.revision))],
      [...parts.map((p) => op.txn(txn(p.part.guards, p.part.ops, [op.range(InternalKey.clock), ...p.part.reads]))), op.put(InternalKey.clock, record)],
      [op.range(InternalKey.clock)],
    );
    let resp: TxnResponse;
    try {
      resp = await this.client.txn(request);
    } catch (err) {
      for (const p of parts) p.reject(err);
      return;
    }
    parts.forEach((p, i) => {
      if (!resp.succeeded) return p.resolve({ kind: 'order-lost', resp });
      const r = resp.responses[i]?.response;
      if (r?.$case !== 'responseTxn') return p.reject(new Error(`batch response ${i} is not a transaction response`));
      p.resolve({ kind: 'applied', nested: r.value, header: resp.header });
    });
  }

  /** The longest run of parts at the queue's head that may share a batch. */
  private take(): QueuedPart[] {
    const out: QueuedPart[] = [];
    const keys = new Set<string>();
    let bytes = 0;
    while (out.length < MAX_BATCH_WRITES) {
      const q = this.queue[0];
      if (!q || q.kind !== 'part') break;
      if (out.length > 0 && (bytes + q.part.bytes > MAX_BATCH_BYTES || q.part.keys.some((k) => keys.has(k)))) break;
      for (const k of q.part.keys) keys.add(k);
      bytes += q.part.bytes;
      out.push(q);
      this.queue.shift();
    }
    return out;
  }
}
