// etcd refuses a write whose raft entry would exceed --max-request-bytes with
// "etcdserver: request is too large". The entry is the request wrapped in an
// InternalRaftRequest with a request header (a 64-bit id); we account for that
// wrapper so the threshold matches a plain etcd's.

import { varintLength } from '../util/varint.js';
import { Errors } from './errors.js';

/** Bytes InternalRaftRequest adds around a request body: header field (2-byte tag, length, id) and the body's tag. */
const RAFT_WRAPPER_BYTES = 2 + 1 + 1 + 10 + 1;

export function checkRequestSize(encodedBodyLength: number, maxRequestBytes: number): void {
  const total = encodedBodyLength + varintLength(encodedBodyLength) + RAFT_WRAPPER_BYTES;
  if (total > maxRequestBytes) throw Errors.requestTooLarge();
}
