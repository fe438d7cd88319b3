// gRPC statuses exactly as etcd returns them. Clients match on the message text
// (clientv3 maps status messages to typed errors; kube-apiserver checks e.g. the
// compacted and too-large errors), so these strings must not change.
// Ref: etcd api/v3rpc/rpctypes/error.go.

import { status as Status, Metadata, type ServiceError } from '@grpc/grpc-js';

export class EtcdError extends Error {
  constructor(
    readonly code: Status,
    message: string,
  ) {
    super(message);
    this.name = 'EtcdError';
  }
}

const e = (code: Status, message: string) => (): EtcdError => new EtcdError(code, message);

export const Errors = {
  emptyKey: e(Status.INVALID_ARGUMENT, 'etcdserver: key is not provided'),
  keyNotFound: e(Status.INVALID_ARGUMENT, 'etcdserver: key not found'),
  valueProvided: e(Status.INVALID_ARGUMENT, 'etcdserver: value is provided'),
  leaseProvided: e(Status.INVALID_ARGUMENT, 'etcdserver: lease is provided'),
  tooManyOps: e(Status.INVALID_ARGUMENT, 'etcdserver: too many operations in txn request'),
  duplicateKey: e(Status.INVALID_ARGUMENT, 'etcdserver: duplicate key given in txn request'),
  compacted: e(Status.OUT_OF_RANGE, 'etcdserver: mvcc: required revision has been compacted'),
  futureRev: e(Status.OUT_OF_RANGE, 'etcdserver: mvcc: required revision is a future revision'),
  requestTooLarge: e(Status.INVALID_ARGUMENT, 'etcdserver: request is too large'),
  leaseNotFound: e(Status.NOT_FOUND, 'etcdserver: requested lease not found'),
  leaseExist: e(Status.FAILED_PRECONDITION, 'etcdserver: lease already exists'),
  leaseTTLTooLarge: e(Status.OUT_OF_RANGE, 'etcdserver: too large lease TTL'),
  noLeader: e(Status.UNAVAILABLE, 'etcdserver: no leader'),
  timeout: e(Status.UNAVAILABLE, 'etcdserver: request timed out'),
  canceled: e(Status.CANCELLED, 'etcdserver: request canceled'),
  /** metaetcd's caveat: a transaction may only write to keys of one member. */
  crossMemberTxn: e(
    Status.INVALID_ARGUMENT,
    'metaetcd: transaction writes keys held by different member clusters; ' +
      'cross-member transactions are not supported (see the caveats in the metaetcd README)',
  ),
  /** metaetcd's caveat: a writing transaction reads other members only after its last write. */
  crossMemberReadBeforeWrite: e(
    Status.INVALID_ARGUMENT,
    'metaetcd: transaction reads keys held by other member clusters before one of its writes; ' +
      'such reads are supported only after the last write of the branch taken (see the caveats in the metaetcd README)',
  ),
};

/** A retryable error naming which part of the meta cluster is unavailable. */
export function unavailable(what: string): EtcdError {
  return new EtcdError(Status.UNAVAILABLE, `metaetcd: ${what}`);
}

export function unimplemented(what: string): EtcdError {
  return new EtcdError(Status.UNIMPLEMENTED, `${what} is not implemented by metaetcd`);
}

export function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && 'code' in err && 'details' in err && 'metadata' in err;
}

/** The gRPC status code of any error: EtcdError, a grpc-js ServiceError, or UNKNOWN. */
export function statusOf(err: unknown): Status {
  if (err instanceof EtcdError) return err.code;
  if (isServiceError(err)) return err.code;
  return Status.UNKNOWN;
}

/** The status message of any error (grpc-js puts it in `details`). */
export function messageOf(err: unknown): string {
  if (err instanceof EtcdError) return err.message;
  if (isServiceError(err)) return err.details;
  if (err instanceof Error) return err.message;
  return String(err);
}

/**
 * Converts an error from a member or coordinator etcd into what we return to our
 * client: etcd's own statuses pass through unchanged (same code, same message);
 * transport failures become Unavailable naming the cluster.
 */
export function fromUpstream(err: unknown, cluster: string): EtcdError {
  if (err instanceof EtcdError) return err;
  if (isServiceError(err)) {
    if (err.details.startsWith('etcdserver:')) return new EtcdError(err.code, err.details);
    if (err.code === Status.DEADLINE_EXCEEDED || err.code === Status.UNAVAILABLE) {
      return unavailable(`${cluster} is unavailable: ${err.details}`);
    }
    return new EtcdError(err.code, `metaetcd: ${cluster}: ${err.details}`);
  }
  return new EtcdError(Status.INTERNAL, `metaetcd: ${cluster}: ${messageOf(err)}`);
}

/** The object grpc-js handlers pass to their callback / `destroy` to end a call with a status. */
export function toServiceStatus(err: unknown): Partial<ServiceError> {
  const code = err instanceof EtcdError ? err.code : isServiceError(err) ? err.code : Status.INTERNAL;
  const details = err instanceof EtcdError || isServiceError(err) ? messageOf(err) : `metaetcd: internal error: ${messageOf(err)}`;
  return { code, details, metadata: new Metadata() };
}
