// The size of each request as received, recorded when it is deserialised, so
// that the request-size limit (limits.ts) never needs it encoded again.

import type { ServiceDefinition } from '@grpc/grpc-js';

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
