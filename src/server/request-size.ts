// Request sizes. etcd refuses a write whose raft entry would exceed
// --max-request-bytes with "etcdserver: request is too large"; the entry is the
// request wrapped in an InternalRaftRequest with a request header. We account
// for that wrapper so the threshold matches a plain etcd's byte for byte (with a
// 3-byte key, a 1,572,838-byte value is the largest accepted at the default
// limit). The size of each request as received is recorded when it is
// deserialised, so it is never encoded again to be measured.

import type { ServiceDefinition } from '@grpc/grpc-js';
import { varintLength } from '../util/varint.js';
import { Errors } from './errors.js';

/** Bytes InternalRaftRequest adds around a request body: header field (2-byte tag, length, 10-byte id field) and the body's tag. */
const RAFT_WRAPPER_BYTES = 2 + 1 + 10 + 1;

const sizes = new WeakMap<object, number>();

/** The wire size of a request received through a definition wrapped by withRequestSizes. */
export function receivedSize(req: object): number | undefined {
  return sizes.get(req);
}

/** A copy of a service definition whose deserialisers record each request's wire size. */
export function withRequestSizes<D extends ServiceDefinition>(def: D): D {
  const out: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(def)) {
    const deserialize = method.requestDeserialize;
    out[name] = {
      ...method,
      requestDeserialize: (buf: Buffer) => {
        const msg = deserialize(buf) as object;
        sizes.set(msg, buf.length);
        return msg;
      },
    };
  }
  return out as D;
}

export function checkRequestSize(encodedBodyLength: number, maxRequestBytes: number): void {
  const total = encodedBodyLength + varintLength(encodedBodyLength) + RAFT_WRAPPER_BYTES;
  if (total > maxRequestBytes) throw Errors.requestTooLarge();
}
