// The state a transaction's op sees part-way through its branch: the state read
// before the transaction, with the puts and deletes of the ops before it applied.
//
// etcd refuses a transaction that puts a key twice or puts a key it also deletes,
// so usually every op sees the state from before the transaction. Not always:
// etcd's check takes a from-key delete (range_end "\0") as an empty interval, so
// a put after it of a key inside its range is accepted — etcd applies the delete,
// then the put creates the key anew (create_revision R, version 1, no prev_kv) —
// and a from-key delete after a put deletes the key just put. Pure: no I/O.

import type { KeyValue } from '../../proto/gen/kv.js';
import { toMemberKey, toMemberRange } from '../../store/keyspace.js';
import { compareBytes } from '../../util/bytes.js';
import { rangeId } from '../txn-plan.js';
import type { WriteState } from './write-state.js';

interface MemberSpan {
  key: Buffer;
  end: Buffer;
}

export class TxnEffects {
  /** latin1(member key) → the key's state after the ops so far (undefined: deleted). */
  private readonly changed = new Map<string, KeyValue | undefined>();
  /** Ranges deleted so far (member form). */
  private readonly deletedSpans: MemberSpan[] = [];

  constructor(private readonly before: WriteState) {}

  /** The member key-value of `memberKey` (latin1) as the next op sees it. */
  get(memberKey: string): KeyValue | undefined {
    if (this.changed.has(memberKey)) return this.changed.get(memberKey);
    const key = Buffer.from(memberKey, 'latin1');
    if (this.deletedSpans.some((s) => within(key, s))) return undefined;
    return this.before.keys.get(memberKey) ?? this.inBeforeRanges(key);
  }

  /** A put of `kv` (member form) by the current op. */
  put(kv: KeyValue): void {
    this.changed.set(kv.key.toString('latin1'), kv);
  }

  /**
   * A delete of the client range [key, rangeEnd) by the current op: the member
   * key-values it removes, in key order (a range's from the state read before the
   * transaction, which must hold it, and from the puts so far).
   */
  deleteRange(key: Buffer, rangeEnd: Buffer): KeyValue[] {
    if (rangeEnd.length === 0) {
      const mkey = toMemberKey(key).toString('latin1');
      const kv = this.get(mkey);
      this.changed.set(mkey, undefined);
      return kv ? [kv] : [];
    }
    const mr = toMemberRange(key, rangeEnd);
    const span: MemberSpan = { key: mr.key, end: mr.rangeEnd };
    const gone = new Map<string, KeyValue>();
    for (const kv of this.before.ranges.get(rangeId(key, rangeEnd)) ?? []) {
      const now = this.get(kv.key.toString('latin1'));
      if (now) gone.set(kv.key.toString('latin1'), now);
    }
    for (const [k, kv] of this.changed) if (kv && within(kv.key, span)) gone.set(k, kv);
    for (const k of gone.keys()) this.changed.set(k, undefined);
    this.deletedSpans.push(span);
    return [...gone.values()].sort((a, b) => compareBytes(a.key, b.key));
  }

  /** A key found in one of the ranges read before the transaction (for keys read only as part of a range). */
  private inBeforeRanges(key: Buffer): KeyValue | undefined {
    for (const kvs of this.before.ranges.values()) {
      const kv = kvs.find((x) => x.key.equals(key));
      if (kv) return kv;
    }
    return undefined;
  }
}

function within(key: Buffer, s: MemberSpan): boolean {
  return compareBytes(key, s.key) >= 0 && compareBytes(key, s.end) < 0;
}
