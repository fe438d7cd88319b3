// The gRPC status a call to the proxy ends with: an EtcdError's code and message
// unchanged (etcd's own strings, see etcd-error.ts), a gRPC status passed
// through, anything else Internal. Used by the gRPC services and by watch
// sessions, which end their client streams themselves.

import { Metadata, type ServiceError } from '@grpc/grpc-js';
import { EtcdError, isServiceError, messageOf, Status } from './etcd-error.js';

/** Whether an error is one the proxy meant to return (not a bug). */
export function isExpected(err: unknown): boolean {
  return err instanceof EtcdError || isServiceError(err);
}

/** The object grpc-js handlers pass to their callback / `destroy` to end a call with a status. */
export function toServiceStatus(err: unknown): Partial<ServiceError> {
  const code = err instanceof EtcdError ? err.code : isServiceError(err) ? err.code : Status.INTERNAL;
  const details = isExpected(err) ? messageOf(err) : `metaetcd: internal error: ${messageOf(err)}`;
  return { code, details, metadata: new Metadata() };
}
