// The parts of etcd responses that do not depend on revision numbering, for
// comparing the proxy with a plain etcd (whose revisions differ: the proxy has
// empty revisions, per-member deletes, and its own bootstrap writes).

import type { KeyValue } from '../../src/proto/gen/kv.js';
import {
  DeleteRangeResponse,
  LeaseGrantResponse,
  LeaseTimeToLiveResponse,
  PutResponse,
  RangeRequest_SortOrder as Order,
  RangeRequest_SortTarget as Target,
  RangeResponse,
  type RangeRequest,
  type RequestOp,
  type ResponseOp,
  type TxnRequest,
  TxnResponse,
} from '../../src/proto/gen/rpc.js';
import { KV } from '../harness/faults.js';

export const LEASE = {
  grant: '/etcdserverpb.Lease/LeaseGrant',
  revoke: '/etcdserverpb.Lease/LeaseRevoke',
  ttl: '/etcdserverpb.Lease/LeaseTimeToLive',
};

export const kvShape = (kv: KeyValue | undefined): string | null =>
  kv ? `${kv.key.toString('hex')}=${kv.value.toString('hex')} v${kv.version} l${kv.lease}${kv.createRevision === kv.modRevision ? ' new' : ''}` : null;

/**
 * A range's keys in a comparable form. Sorted by a target other than the key,
 * etcd's sort is not stable, so keys that tie on the target are compared as a
 * set (ties are told apart by each side's own values, which order alike).
 */
export function rangeKvs(kvs: KeyValue[], req?: Partial<RangeRequest>): (string | null)[] | string[][] {
  const target = req?.sortTarget ?? Target.KEY;
  const order = req?.sortOrder ?? Order.NONE;
  const sorted = (order === Order.ASCEND || order === Order.DESCEND || (order === Order.NONE && target !== Target.KEY)) && target !== Target.KEY;
  if (!sorted) return kvs.map(kvShape);
  const value = (kv: KeyValue): string => {
    switch (target) {
      case Target.VERSION:
        return String(kv.version);
      case Target.CREATE:
        return String(kv.createRevision);
      case Target.MOD:
        return String(kv.modRevision);
      case Target.VALUE:
        return kv.value.toString('hex');
      default:
        return kv.key.toString('hex');
    }
  };
  const groups: string[][] = [];
  let last: string | undefined;
  for (const kv of kvs) {
    const v = value(kv);
    if (v !== last || groups.length === 0) groups.push([]);
    groups.at(-1)!.push(kvShape(kv)!);
    last = v;
  }
  const out = groups.map((g) => g.sort());
  // A limit that cuts through a tied run keeps an arbitrary part of it (etcd's
  // sort is not stable): there, only how many keys were kept, and their value, compare.
  const limit = Number(req?.limit ?? 0);
  if (limit > 0 && kvs.length >= limit && out.length > 0) {
    // (Revisions differ between the two sides by design; versions and values do not.)
    const at = target === Target.CREATE || target === Target.MOD ? 'one revision' : last;
    out[out.length - 1] = [`${out.at(-1)!.length} key(s) sorted at ${at}`];
  }
  return out;
}

export function rangeShape(r: RangeResponse, req?: Partial<RangeRequest>): unknown {
  return { kvs: rangeKvs(r.kvs, req), count: String(r.count), more: r.more };
}

export function opShape(r: ResponseOp, req?: RequestOp): unknown {
  const x = r.response;
  const q = req?.request;
  switch (x?.$case) {
    case 'responseRange':
      return { range: rangeShape(x.value, q?.$case === 'requestRange' ? q.value : undefined) };
    case 'responsePut':
      return { put: kvShape(x.value.prevKv) };
    case 'responseDeleteRange':
      return { deleted: String(x.value.deleted), prev: x.value.prevKvs.map(kvShape) };
    case 'responseTxn':
      return { txn: txnShape(x.value, q?.$case === 'requestTxn' ? q.value : undefined) };
    default:
      return null;
  }
}

/** With the request, ranges inside the transaction are compared as their sort asks. */
export function txnShape(r: TxnResponse, req?: TxnRequest): unknown {
  const ops = req ? (r.succeeded ? req.success : req.failure) : [];
  return { succeeded: r.succeeded, ops: r.responses.map((o, i) => opShape(o, ops[i])) };
}

/** The revision-independent parts of a successful response, decoded from its bytes. */
export function shapeOf(path: string, body: Buffer, req?: Partial<RangeRequest>): unknown {
  switch (path) {
    case KV.range:
      return rangeShape(RangeResponse.decode(body), req);
    case KV.put:
      return { prev: kvShape(PutResponse.decode(body).prevKv) };
    case KV.deleteRange: {
      const r = DeleteRangeResponse.decode(body);
      return { deleted: String(r.deleted), prev: r.prevKvs.map(kvShape) };
    }
    case KV.txn:
      return txnShape(TxnResponse.decode(body));
    case LEASE.grant: {
      const r = LeaseGrantResponse.decode(body);
      return { TTL: String(r.TTL), error: r.error };
    }
    case LEASE.ttl: {
      const r = LeaseTimeToLiveResponse.decode(body);
      return { TTL: String(r.TTL), grantedTTL: String(r.grantedTTL) };
    }
    default:
      return null;
  }
}
