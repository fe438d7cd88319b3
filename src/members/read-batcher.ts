// Coalesces concurrent single-key reads of one member into one read-only member
// transaction (group commit for reads): each HTTP/2 call costs the proxy more
// CPU than anything it does with the answer, so under load N reads that wait
// together cost one call instead of N.
//
// A read goes out at once while fewer than two batches are in flight; reads
// that arrive meanwhile go out together when one returns. One read alone is sent
// as it always was, so a lone client pays nothing, and two in flight keep a
// read that just missed a batch from waiting a whole round trip for the next. Every read keeps its own revision (a
// range op inside a transaction reads at its own `revision`), and all of them
// are serializable reads of the member's applied state, exactly as when sent
// alone; a batch only shares the call. The member's clock record, which reads
// of the current state need beside their key, is read once per batch.
//
// When a batch fails as a whole (one read's revision is compacted or in the
// future fails the transaction), its reads are sent again one by one, so each
// gets its own answer and error.

import { asRange, op, txn } from '../proto/build.js';
import type { RangeRequest, RangeResponse, RequestOp } from '../proto/gen/rpc.js';
import { InternalKey } from '../store/keyspace.js';
import type { EtcdClient } from './etcd-client.js';

/** Most reads in one batch; etcd's --max-txn-ops defaults to 128 (one op is the clock record). */
const MAX_BATCH = 64;

export interface BatchedRead {
  /** The key's range response (at `revision` when it is set, else the member's current state). */
  range: RangeResponse;
  /** The member's clock record at the same point, when it was asked for. */
  clock?: RangeResponse;
}

interface Pending {
  req: SingleKeyRead;
  withClock: boolean;
  resolve: (r: BatchedRead) => void;
  reject: (e: unknown) => void;
}

/** A serializable read of one key (no range end), optionally at a member revision. */
export type SingleKeyRead = Pick<RangeRequest, 'key'> & Partial<Pick<RangeRequest, 'revision' | 'limit' | 'countOnly' | 'keysOnly'>>;

export class MemberReadBatcher {
  private queue: Pending[] = [];
  private inFlight = 0;

  constructor(
    private readonly client: EtcdClient,
    /** Batches in flight at once. */
    private readonly maxInFlight = 2,
  ) {}

  /** Reads one key; with `withClock`, also the member's clock record from the same snapshot. */
  read(req: SingleKeyRead, withClock: boolean): Promise<BatchedRead> {
    return new Promise((resolve, reject) => {
      this.queue.push({ req, withClock, resolve, reject });
      if (this.inFlight < this.maxInFlight) this.flush();
    });
  }

  private flush(): void {
    const batch = this.queue.splice(0, MAX_BATCH);
    if (batch.length === 0) return;
    this.inFlight++;
    this.send(batch).finally(() => {
      this.inFlight--;
      this.flush();
    });
  }

  private async send(batch: Pending[]): Promise<void> {
    const withClock = batch.some((p) => p.withClock);
    const ops: RequestOp[] = withClock ? [op.range(InternalKey.clock, { serializable: true })] : [];
    for (const p of batch) ops.push(op.range(p.req.key, { ...p.req, serializable: true }));
    let responses;
    try {
      responses = (await this.client.txn(txn([], ops), { readOnly: true })).responses;
    } catch (err) {
      if (batch.length === 1) batch[0]!.reject(err);
      else await Promise.all(batch.map((p) => this.send([p])));
      return;
    }
    const clock = withClock ? asRange(responses[0]) : undefined;
    const first = withClock ? 1 : 0;
    batch.forEach((p, i) => p.resolve({ range: asRange(responses[first + i]), ...(p.withClock ? { clock } : {}) }));
  }
}
