// Size limits shared by the KV path and the watch path, as etcd applies them.
//
// etcd refuses a write whose raft entry would exceed --max-request-bytes with
// "etcdserver: request is too large"; the entry is the request wrapped in an
// InternalRaftRequest with a request header. We account for that wrapper so the
// threshold matches a plain etcd's byte for byte (with a 3-byte key, a
// 1,572,838-byte value is the largest accepted at the default limit).

import { Errors } from './errors/etcd-error.js';
import { varintLength } from './util/varint.js';

/** gRPC framing allowance on top of --max-request-bytes, as etcd's (grpcOverheadBytes). */
export const GRPC_OVERHEAD_BYTES = 512 * 1024;

/** Bytes InternalRaftRequest adds around a request body: header field (2-byte tag, length, 10-byte id field) and the body's tag. */
const RAFT_WRAPPER_BYTES = 2 + 1 + 10 + 1;

export function checkRequestSize(encodedBodyLength: number, maxRequestBytes: number): void {
  const total = encodedBodyLength + varintLength(encodedBodyLength) + RAFT_WRAPPER_BYTES;
  if (total > maxRequestBytes) throw Errors.requestTooLarge();
}
