// This proxy's writes in flight, per key. A guarded write (one with compares)
// whose keys an earlier write of this proxy is still changing waits for that
// write to finish before it looks at the key cache. Otherwise both would take a
// revision at once, and when the first one changes the key, the second one's
// member guard fails in flight: its revision is used up although its branch
// then writes nothing (every conflicting update that arrives while the other is
// in flight — kube-apiserver's optimistic updates of one object). After the
// wait, the cache already holds the first write's result, so the conflict is
// known before a revision is taken and the answer comes from a snapshot, as in
// etcd. The wait costs nothing that was not lost anyway: the two writes could
// not share a member transaction (their keys overlap), and the second one's
// outcome depends on the first.
//
// Only the order of this proxy's own writes is known here; conflicts with other
// proxies (or workers) still leave the revision empty (README, "Empty revisions").
// A write waits only for writes that began before it, so waits cannot form a
// cycle, and never longer than `maxWaitMs`: the wait only saves a revision, the
// member's guard still decides.

import type { RequestOp, TxnRequest } from '../../proto/gen/rpc.js';
import { toMemberKey } from '../../store/keyspace.js';

interface InFlight {
  seq: number;
  done: Promise<void>;
}

/** A write's registration: `wait` for the earlier writes of its compared keys, `end` when it is done. */
export interface Turn {
  wait(): Promise<void> | undefined;
  end(): void;
}

const NO_TURN: Turn = { wait: () => undefined, end: () => undefined };

export class KeyTurns {
  private seq = 0;
  private readonly inFlight = new Map<string, InFlight[]>();

  constructor(private readonly maxWaitMs: number) {}

  /** Registers `req`'s single-key writes as in flight; its `wait` covers the keys it compares. */
  begin(req: TxnRequest): Turn {
    const { written, compared } = keysOf(req);
    if (written.size === 0 && compared.size === 0) return NO_TURN;
    const seq = ++this.seq;
    let finish!: () => void;
    const entry: InFlight = { seq, done: new Promise<void>((r) => (finish = r)) };
    for (const k of written) {
      const list = this.inFlight.get(k);
      if (list) list.push(entry);
      else this.inFlight.set(k, [entry]);
    }
    return {
      wait: () => this.earlier(seq, compared),
      end: () => {
        finish();
        for (const k of written) {
          const list = this.inFlight.get(k)!;
          const i = list.indexOf(entry);
          if (i >= 0) list.splice(i, 1);
          if (list.length === 0) this.inFlight.delete(k);
        }
      },
    };
  }

  /** The writes that began before `seq` and change one of `keys`, as one promise (undefined: none). */
  private earlier(seq: number, keys: Set<string>): Promise<void> | undefined {
    let waits: Promise<void>[] | undefined;
    for (const k of keys) {
      for (const e of this.inFlight.get(k) ?? []) if (e.seq < seq) (waits ??= []).push(e.done);
    }
    if (!waits) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((r) => (timer = setTimeout(r, this.maxWaitMs)));
    return Promise.race([Promise.all(waits).then(() => undefined), bound]).finally(() => clearTimeout(timer));
  }
}

/** latin1 member keys: single keys put or deleted on any branch, and single keys compared. */
function keysOf(req: TxnRequest): { written: Set<string>; compared: Set<string> } {
  const written = new Set<string>();
  const compared = new Set<string>();
  const visit = (t: TxnRequest) => {
    for (const c of t.compare) if (c.rangeEnd.length === 0) compared.add(memberKey(c.key));
    for (const ops of [t.success, t.failure]) for (const o of ops) visitOp(o);
  };
  const visitOp = (o: RequestOp) => {
    const r = o.request;
    if (r?.$case === 'requestPut') written.add(memberKey(r.value.key));
    else if (r?.$case === 'requestDeleteRange' && r.value.rangeEnd.length === 0) written.add(memberKey(r.value.key));
    else if (r?.$case === 'requestTxn') visit(r.value);
  };
  visit(req);
  return { written, compared };
}

function memberKey(clientKey: Buffer): string {
  return toMemberKey(clientKey).toString('latin1');
}
