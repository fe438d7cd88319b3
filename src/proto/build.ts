// Small constructors for the etcd messages metaetcd sends upstream (member and
// coordinator requests), and accessors for the responses it reads back. They
// keep transaction code readable: `cmp.valueLess(key, v)`, `op.put(key, v)`.

import type { KeyValue } from './gen/kv.js';
import {
  type Compare,
  Compare_CompareResult as Result,
  Compare_CompareTarget as Target,
  type DeleteRangeResponse,
  type PutResponse,
  type RangeRequest,
  type RangeResponse,
  type RequestOp,
  type ResponseOp,
  type TxnRequest,
  type TxnResponse,
} from './gen/rpc.js';

const NONE = Buffer.alloc(0);

type Partial2<T> = { [K in keyof T]?: T[K] };

export const cmp = {
  valueLess(key: Buffer, value: Buffer): Compare {
    return { key, rangeEnd: NONE, target: Target.VALUE, result: Result.LESS, targetUnion: { $case: 'value', value } };
  },
  valueGreater(key: Buffer, value: Buffer): Compare {
    return { key, rangeEnd: NONE, target: Target.VALUE, result: Result.GREATER, targetUnion: { $case: 'value', value } };
  },
  valueEqual(key: Buffer, value: Buffer): Compare {
    return { key, rangeEnd: NONE, target: Target.VALUE, result: Result.EQUAL, targetUnion: { $case: 'value', value } };
  },
  modEqual(key: Buffer, revision: number): Compare {
    return {
      key,
      rangeEnd: NONE,
      target: Target.MOD,
      result: Result.EQUAL,
      targetUnion: { $case: 'modRevision', value: BigInt(revision) },
    };
  },
  /** Every key in [key, rangeEnd) was last modified before `revision`. */
  modLess(key: Buffer, rangeEnd: Buffer, revision: number): Compare {
    return {
      key,
      rangeEnd,
      target: Target.MOD,
      result: Result.LESS,
      targetUnion: { $case: 'modRevision', value: BigInt(revision) },
    };
  },
  /** No key exists in [key, rangeEnd) (etcd compares an empty range against a zero create revision). */
  noKeyIn(key: Buffer, rangeEnd: Buffer): Compare {
    return { key, rangeEnd, target: Target.CREATE, result: Result.EQUAL, targetUnion: { $case: 'createRevision', value: 0n } };
  },
  createEqual(key: Buffer, revision: number): Compare {
    return {
      key,
      rangeEnd: NONE,
      target: Target.CREATE,
      result: Result.EQUAL,
      targetUnion: { $case: 'createRevision', value: BigInt(revision) },
    };
  },
};

/** A RangeRequest with etcd's defaults (single key, latest revision, no limit) and the given fields. */
export function rangeRequest(key: Buffer, extra: Partial2<RangeRequest> = {}): RangeRequest {
  return {
    key,
    rangeEnd: NONE,
    limit: 0n,
    revision: 0n,
    sortOrder: 0,
    sortTarget: 0,
    serializable: false,
    keysOnly: false,
    countOnly: false,
    minModRevision: 0n,
    maxModRevision: 0n,
    minCreateRevision: 0n,
    maxCreateRevision: 0n,
    ...extra,
  };
}

export const op = {
  range(key: Buffer, extra: Partial2<RangeRequest> = {}): RequestOp {
    return { request: { $case: 'requestRange', value: rangeRequest(key, extra) } };
  },
  put(key: Buffer, value: Buffer, o: { lease?: bigint; prevKv?: boolean } = {}): RequestOp {
    return {
      request: {
        $case: 'requestPut',
        value: { key, value, lease: o.lease ?? 0n, prevKv: o.prevKv ?? false, ignoreValue: false, ignoreLease: false },
      },
    };
  },
  deleteRange(key: Buffer, rangeEnd: Buffer = NONE, prevKv = false): RequestOp {
    return { request: { $case: 'requestDeleteRange', value: { key, rangeEnd, prevKv } } };
  },
  txn(t: TxnRequest): RequestOp {
    return { request: { $case: 'requestTxn', value: t } };
  },
};

export function txn(compare: Compare[], success: RequestOp[], failure: RequestOp[] = []): TxnRequest {
  return { compare, success, failure };
}

export function asRange(r: ResponseOp | undefined): RangeResponse {
  if (r?.response?.$case !== 'responseRange') throw new Error('expected a range response');
  return r.response.value;
}

export function asPut(r: ResponseOp | undefined): PutResponse {
  if (r?.response?.$case !== 'responsePut') throw new Error('expected a put response');
  return r.response.value;
}

export function asDeleteRange(r: ResponseOp | undefined): DeleteRangeResponse {
  if (r?.response?.$case !== 'responseDeleteRange') throw new Error('expected a delete response');
  return r.response.value;
}

export function asTxn(r: ResponseOp | undefined): TxnResponse {
  if (r?.response?.$case !== 'responseTxn') throw new Error('expected a txn response');
  return r.response.value;
}

/** The single kv of a range response over one key, if the key exists. */
export function firstKv(r: ResponseOp | undefined): KeyValue | undefined {
  return asRange(r).kvs[0];
}

/** The member revision a response header names. */
export function headerRevision(resp: { header?: { revision: bigint } | undefined }): number {
  return Number(resp.header?.revision ?? 0n);
}
