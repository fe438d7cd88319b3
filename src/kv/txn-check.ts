// etcd's validation of KV requests, reproduced so that bad input gets etcd's own
// status and message before anything is sent upstream.
// Ref: etcd v3rpc key.go (checkRangeRequest, checkPutRequest, checkTxnRequest,
// checkRequestOp, checkIntervals).

import { isFromKey } from '../util/bytes.js';
import type { DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest } from '../proto/gen/rpc.js';
import { Errors } from '../errors/etcd-error.js';

export function checkRange(r: RangeRequest): void {
  if (r.key.length === 0) throw Errors.emptyKey();
}

export function checkPut(r: PutRequest): void {
  if (r.key.length === 0) throw Errors.emptyKey();
  if (r.ignoreValue && r.value.length !== 0) throw Errors.valueProvided();
  if (r.ignoreLease && r.lease !== 0n) throw Errors.leaseProvided();
}

export function checkDelete(r: DeleteRangeRequest): void {
  if (r.key.length === 0) throw Errors.emptyKey();
}

export function checkTxn(r: TxnRequest, maxTxnOps: number): void {
  checkTxnOps(r, maxTxnOps);
  // Overlap checks run after the cheap ones (as etcd does, to avoid quadratic work on bad input).
  checkIntervals(r.success, false);
  checkIntervals(r.failure, false);
  // etcd's check takes a from-key delete (range_end "\0") as an empty interval, so it lets a
  // put of a key inside it through; the members see a real range there and refuse it.
  try {
    checkIntervals(r.success, true);
    checkIntervals(r.failure, true);
  } catch {
    throw Errors.putInsideFromKeyDelete();
  }
}

function checkTxnOps(r: TxnRequest, maxTxnOps: number): void {
  const opc = Math.max(r.compare.length, r.success.length, r.failure.length);
  if (opc > maxTxnOps) throw Errors.tooManyOps();
  for (const c of r.compare) if (c.key.length === 0) throw Errors.emptyKey();
  for (const u of r.success) checkRequestOp(u, maxTxnOps - opc);
  for (const u of r.failure) checkRequestOp(u, maxTxnOps - opc);
}

function checkRequestOp(u: RequestOp, maxTxnOps: number): void {
  const req = u.request;
  switch (req?.$case) {
    case 'requestRange':
      return checkRange(req.value);
    case 'requestPut':
      return checkPut(req.value);
    case 'requestDeleteRange':
      return checkDelete(req.value);
    case 'requestTxn':
      return checkTxnOps(req.value, maxTxnOps);
    default:
      // An empty op (no request set) is refused with etcd's "key not found".
      throw Errors.keyNotFound();
  }
}

/**
 * A half-open byte interval with etcd's "affine" ordering: an empty end is +∞
 * (only used for the catch-all union), otherwise plain byte order. A delete with
 * range_end "\0" therefore yields an empty interval, exactly as in etcd.
 */
interface Interval {
  start: Buffer;
  end: Buffer;
}

function containsPoint(iv: Interval, k: Buffer): boolean {
  return Buffer.compare(iv.start, k) <= 0 && (iv.end.length === 0 || Buffer.compare(k, iv.end) < 0);
}

function intersects(dels: Interval[], k: Buffer): boolean {
  return dels.some((iv) => containsPoint(iv, k));
}

/**
 * Puts and deletes of one branch may not overlap; returns the branch's puts and
 * deletes for the parent. `fromKeyToEnd`: a from-key delete covers its range (as
 * in a member), instead of etcd's empty interval.
 */
function checkIntervals(reqs: RequestOp[], fromKeyToEnd: boolean): { puts: Set<string>; dels: Interval[] } {
  const dels: Interval[] = [];
  for (const r of reqs) {
    if (r.request?.$case !== 'requestDeleteRange') continue;
    const d = r.request.value;
    if (fromKeyToEnd && isFromKey(d.rangeEnd)) dels.push({ start: d.key, end: Buffer.alloc(0) });
    else dels.push(d.rangeEnd.length !== 0 ? { start: d.key, end: d.rangeEnd } : { start: d.key, end: Buffer.concat([d.key, Buffer.from([0])]) });
  }
  const puts = new Set<string>();
  for (const r of reqs) {
    if (r.request?.$case !== 'requestTxn') continue;
    const then = checkIntervals(r.request.value.success, fromKeyToEnd);
    const els = checkIntervals(r.request.value.failure, fromKeyToEnd);
    for (const k of then.puts) {
      if (puts.has(k) || intersects(dels, Buffer.from(k, 'latin1'))) throw Errors.duplicateKey();
      puts.add(k);
    }
    for (const k of els.puts) {
      // Then/else are exclusive, so a key put in both of one nested txn is fine.
      if (puts.has(k) && !then.puts.has(k)) throw Errors.duplicateKey();
      if (intersects(dels, Buffer.from(k, 'latin1'))) throw Errors.duplicateKey();
      puts.add(k);
    }
    dels.push(...then.dels, ...els.dels);
  }
  for (const r of reqs) {
    if (r.request?.$case !== 'requestPut') continue;
    const k = r.request.value.key;
    const ks = k.toString('latin1');
    if (puts.has(ks) || intersects(dels, k)) throw Errors.duplicateKey();
    puts.add(ks);
  }
  return { puts, dels };
}
