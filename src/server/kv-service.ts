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
import type { AuthGuard, CallInfo } from '../auth/guard.js';
import type { LeaseManager } from '../lease/lease-manager.js';

export interface KvServiceDeps extends HandlerDeps {
  kv: KvContext;
  header: HeaderFactory;
  /** Permission checks (nothing is checked while auth is disabled). */
  auth?: AuthGuard | undefined;
  /** For etcd's check that a put may attach a lease (the caller may write the lease's keys). */
  leases?: LeaseManager | undefined;
}

const sized = withRequestSizes(KVService);

/** The KV service's definition as served: requests record their wire size; Range answers are encoded in one buffer of their exact size. */
export const KV_SERVICE_DEFINITION: typeof KVService = { ...sized, range: { ...sized.range, responseSerialize: encodeRangeResponse } };

export function createKvService(d: KvServiceDeps): KVServer {
  const max = d.kv.limits.maxRequestBytes;
  const auth = d.auth;
  const leaseKeys = async (call: CallInfo, lease: bigint) => {
    if (!auth?.enabled || lease === 0n || !d.leases) return;
    let keys: Buffer[];
    try {
      keys = (await d.leases.timeToLive(lease, true)).keys;
    } catch {
      return; // no such lease: the put reports it
    }
    auth.checkWriteKeys(call, keys);
  };
  return {
    range: unary('Range', d, async (req, call) => {
      // An empty key is refused first (etcd validates before it checks permissions).
      if (req.key.length > 0) auth?.checkRead(call, req.key, req.rangeEnd);
      const r = await range(d.kv, req);
      return toRangeResponse(r, d.header.make(r.header));
    }),
    put: unary('Put', d, async (req, call) => {
      checkRequestSize(sizeOf(req, PutRequest), max);
      if (req.key.length > 0) auth?.checkPut(call, req.key, req.prevKv);
      await leaseKeys(call, req.lease);
      const r = await put(d.kv, req);
      return { header: d.header.make(r.revision), prevKv: r.prevKv };
    }),
    deleteRange: unary('DeleteRange', d, async (req, call) => {
      checkRequestSize(sizeOf(req, DeleteRangeRequest), max);
      if (req.key.length > 0) auth?.checkDelete(call, req.key, req.rangeEnd, req.prevKv);
      const r = await deleteRange(d.kv, req);
      return { header: d.header.make(r.revision), deleted: BigInt(r.deleted), prevKvs: r.prevKvs };
    }),
    txn: unary('Txn', d, async (req, call) => {
      checkTxn(req, d.kv.limits.maxTxnOps);
      auth?.checkTxn(call, req);
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
