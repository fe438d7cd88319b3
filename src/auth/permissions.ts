// Key-range permission checks with etcd's interval semantics (etcd
// auth/range_perm_cache.go): a permission or request with an empty range_end is
// the single key, range_end "\0" means every key from `key` on, anything else is
// [key, range_end). A request is permitted when the union of the user's
// intervals of the needed kind covers all of it; an empty or inverted request
// range (end <= key) is never covered, as in etcd's interval tree.

import { Permission_Type } from '../proto/gen/rpc.js';

export interface KeyRange {
  key: Buffer;
  rangeEnd: Buffer;
}

/** A half-open interval of keys; `end` undefined = no upper bound. */
export interface Interval {
  start: Buffer;
  end: Buffer | undefined;
}

const ZERO = Buffer.from([0]);

export function toInterval(r: KeyRange): Interval {
  if (r.rangeEnd.length === 0) return { start: r.key, end: Buffer.concat([r.key, ZERO]) };
  if (r.rangeEnd.length === 1 && r.rangeEnd[0] === 0) return { start: r.key, end: undefined };
  return { start: r.key, end: r.rangeEnd };
}

/** Sorted, merged intervals: the union of a set of permissions, ready for `covers`. */
export class IntervalSet {
  private readonly merged: Interval[];

  constructor(ranges: Iterable<KeyRange>) {
    const ivs = [...ranges].map(toInterval).filter((iv) => iv.end === undefined || Buffer.compare(iv.start, iv.end) < 0);
    ivs.sort((a, b) => Buffer.compare(a.start, b.start));
    const out: Interval[] = [];
    for (const iv of ivs) {
      const last = out[out.length - 1];
      if (last && (last.end === undefined || Buffer.compare(iv.start, last.end) <= 0)) {
        if (last.end !== undefined && (iv.end === undefined || Buffer.compare(iv.end, last.end) > 0)) last.end = iv.end;
      } else {
        out.push({ start: iv.start, end: iv.end });
      }
    }
    this.merged = out;
  }

  get intervals(): readonly Interval[] {
    return this.merged;
  }

  /** Whether the request range (etcd conventions) lies entirely within the set. */
  covers(r: KeyRange): boolean {
    const want = toInterval(r);
    if (want.end !== undefined && Buffer.compare(want.start, want.end) >= 0) return false;
    // Merged intervals are disjoint and non-adjacent: one of them must hold all of it.
    for (const iv of this.merged) {
      if (Buffer.compare(iv.start, want.start) > 0) return false;
      if (iv.end === undefined) return true;
      if (Buffer.compare(want.start, iv.end) < 0) return want.end !== undefined && Buffer.compare(want.end, iv.end) <= 0;
    }
    return false;
  }
}

export interface StoredPermission {
  permType: Permission_Type;
  key: Buffer;
  rangeEnd: Buffer;
}

/** A user's effective read and write sets, from the permissions of all its roles. */
export interface UserPermissions {
  read: IntervalSet;
  write: IntervalSet;
}

export function userPermissions(perms: Iterable<StoredPermission>): UserPermissions {
  const read: KeyRange[] = [];
  const write: KeyRange[] = [];
  for (const p of perms) {
    if (p.permType === Permission_Type.READ || p.permType === Permission_Type.READWRITE) read.push(p);
    if (p.permType === Permission_Type.WRITE || p.permType === Permission_Type.READWRITE) write.push(p);
  }
  return { read: new IntervalSet(read), write: new IntervalSet(write) };
}
