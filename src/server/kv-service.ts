// The KV service: thin handlers that validate, delegate to kv/*, and build
// responses with full headers.

import { DeleteRangeRequest, KVService, PutRequest, TxnRequest, type KVServer } from '../proto/gen/rpc.js';
import { encodeRangeResponse } from '../proto/range-response-codec.js';

import { compact } from '../kv/compact.js';
import type { KvContext } from '../kv/context.js';
import { deleteRange, put } from '../kv/put-delete.js';
import { range, toRangeResponse } from '../kv/range.js';
import { executeTxn } from '../kv/txn/execute.js';
import { checkTxn } from '../kv/txn-check.js';
import type { HeaderFactory } from '../proto/header.js';
import { checkRequestSize } from '../limits.js';
import { receivedSize, withRequestSizes } from './request-size.js';
import { unary, type HandlerDeps } from './unary.js';

export interface KvServiceDeps extends HandlerDeps {
  kv: KvContext;
  header: HeaderFactory;
}

const sized = withRequestSizes(KVService);

/** The KV service's definition as served: requests record their wire size; Range answers are encoded in one buffer of their exact size. */
export const KV_SERVICE_DEFINITION: typeof KVService = { ...sized, range: { ...sized.range, responseSerialize: encodeRangeResponse } };

export function createKvService(d: KvServiceDeps): KVServer {
  const max = d.kv.limits.maxRequestBytes;
  return {
    range: unary('Range', d, async (req) => {
      const r = await range(d.kv, req);
      return toRangeResponse(r, d.header.make(r.header));
    }),
    put: unary('Put', d, async (req) => {
      checkRequestSize(sizeOf(req, PutRequest), max);
      const r = await put(d.kv, req);
      return { header: d.header.make(r.revision), prevKv: r.prevKv };
    }),
    deleteRange: unary('DeleteRange', d, async (req) => {
      checkRequestSize(sizeOf(req, DeleteRangeRequest), max);
      const r = await deleteRange(d.kv, req);
      return { header: d.header.make(r.revision), deleted: BigInt(r.deleted), prevKvs: r.prevKvs };
    }),
    txn: unary('Txn', d, async (req) => {
      checkTxn(req, d.kv.limits.maxTxnOps);
      if (hasWrites(req)) checkRequestSize(sizeOf(req, TxnRequest), max);
      const r = await executeTxn(d.kv, req);
      return { header: d.header.make(r.revision), succeeded: r.succeeded, responses: r.responses };
    }),
    compact: unary('Compact', d, async (req) => {
      const revision = await compact(d.kv, req);
      return { header: d.header.make(revision) };
    }),
  };
}

type Encoder<T> = { encode(m: T): { finish(): Uint8Array } };

/** The request's size as received (or as encoded, for requests built in-process). */
function sizeOf<T extends object>(req: T, codec: Encoder<T>): number {
  return receivedSize(req) ?? codec.encode(req).finish().length;
}

function hasWrites(t: TxnRequest): boolean {
  return [...t.success, ...t.failure].some((o) => {
    const r = o.request;
    return r?.$case === 'requestPut' || r?.$case === 'requestDeleteRange' || (r?.$case === 'requestTxn' && hasWrites(r.value));
  });
}
