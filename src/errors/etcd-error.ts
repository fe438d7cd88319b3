// The error vocabulary every layer shares: etcd's own statuses, with the exact
// messages etcd sends (clients match on the text: clientv3 maps status messages
// to typed errors, kube-apiserver checks the compacted and too-large errors, so
// these strings must not change), metaetcd's caveat errors, and a kind on each
// error so that code decides by kind, never by message.
// Ref: etcd api/v3rpc/rpctypes/error.go.

import { status as Status, type ServiceError } from '@grpc/grpc-js';

export { Status };

/** What an error means to the code that handles it. */
export type ErrorKind =
  /** The request is malformed or not allowed (etcd's InvalidArgument and the like). */
  | 'invalid'
  | 'compacted'
  | 'future-revision'
  | 'lease-not-found'
  | 'lease-exists'
  /** A cluster (or part of the meta cluster) cannot be reached or has no leader: retryable. */
  | 'unavailable'
  /** A deadline passed (upstream or ours): retryable, the outcome may be unknown. */
  | 'timeout'
  | 'canceled'
  | 'unimplemented'
  /** Any other etcd status, passed through with its code and message. */
  | 'etcd'
  /** A failure that is a bug or an unexpected answer. */
  | 'internal';

export class EtcdError extends Error {
  constructor(
    readonly code: Status,
    message: string,
    readonly kind: ErrorKind,
  ) {
    super(message);
    this.name = 'EtcdError';
  }
}

const e = (code: Status, message: string, kind: ErrorKind) => (): EtcdError => new EtcdError(code, message, kind);

export const Errors = {
  emptyKey: e(Status.INVALID_ARGUMENT, 'etcdserver: key is not provided', 'invalid'),
  keyNotFound: e(Status.INVALID_ARGUMENT, 'etcdserver: key not found', 'invalid'),
  valueProvided: e(Status.INVALID_ARGUMENT, 'etcdserver: value is provided', 'invalid'),
  leaseProvided: e(Status.INVALID_ARGUMENT, 'etcdserver: lease is provided', 'invalid'),
  tooManyOps: e(Status.INVALID_ARGUMENT, 'etcdserver: too many operations in txn request', 'invalid'),
  duplicateKey: e(Status.INVALID_ARGUMENT, 'etcdserver: duplicate key given in txn request', 'invalid'),
  compacted: e(Status.OUT_OF_RANGE, 'etcdserver: mvcc: required revision has been compacted', 'compacted'),
  futureRev: e(Status.OUT_OF_RANGE, 'etcdserver: mvcc: required revision is a future revision', 'future-revision'),
  requestTooLarge: e(Status.INVALID_ARGUMENT, 'etcdserver: request is too large', 'invalid'),
  leaseNotFound: e(Status.NOT_FOUND, 'etcdserver: requested lease not found', 'lease-not-found'),
  leaseExist: e(Status.FAILED_PRECONDITION, 'etcdserver: lease already exists', 'lease-exists'),
  leaseTTLTooLarge: e(Status.OUT_OF_RANGE, 'etcdserver: too large lease TTL', 'invalid'),
  noLeader: e(Status.UNAVAILABLE, 'etcdserver: no leader', 'unavailable'),
  timeout: e(Status.UNAVAILABLE, 'etcdserver: request timed out', 'timeout'),
  canceled: e(Status.CANCELLED, 'etcdserver: request canceled', 'canceled'),
  // Auth (etcd's ErrGRPC* of api/v3rpc/rpctypes/error.go, byte for byte).
  rootUserNotExist: e(Status.FAILED_PRECONDITION, 'etcdserver: root user does not exist', 'etcd'),
  rootRoleNotExist: e(Status.FAILED_PRECONDITION, 'etcdserver: root user does not have root role', 'etcd'),
  userAlreadyExist: e(Status.FAILED_PRECONDITION, 'etcdserver: user name already exists', 'etcd'),
  userEmpty: e(Status.INVALID_ARGUMENT, 'etcdserver: user name is empty', 'invalid'),
  userNotFound: e(Status.FAILED_PRECONDITION, 'etcdserver: user name not found', 'etcd'),
  roleAlreadyExist: e(Status.FAILED_PRECONDITION, 'etcdserver: role name already exists', 'etcd'),
  roleNotFound: e(Status.FAILED_PRECONDITION, 'etcdserver: role name not found', 'etcd'),
  roleEmpty: e(Status.INVALID_ARGUMENT, 'etcdserver: role name is empty', 'invalid'),
  authFailed: e(Status.INVALID_ARGUMENT, 'etcdserver: authentication failed, invalid user ID or password', 'invalid'),
  permissionNotGiven: e(Status.INVALID_ARGUMENT, 'etcdserver: permission not given', 'invalid'),
  permissionDenied: e(Status.PERMISSION_DENIED, 'etcdserver: permission denied', 'etcd'),
  roleNotGranted: e(Status.FAILED_PRECONDITION, 'etcdserver: role is not granted to the user', 'etcd'),
  permissionNotGranted: e(Status.FAILED_PRECONDITION, 'etcdserver: permission is not granted to the role', 'etcd'),
  authNotEnabled: e(Status.FAILED_PRECONDITION, 'etcdserver: authentication is not enabled', 'etcd'),
  invalidAuthToken: e(Status.UNAUTHENTICATED, 'etcdserver: invalid auth token', 'etcd'),
  invalidAuthMgmt: e(Status.INVALID_ARGUMENT, 'etcdserver: invalid auth management', 'invalid'),
  /** etcd's Maintenance service returns the auth package's own errors unconverted (code Unknown). */
  maintenancePermissionDenied: e(Status.UNKNOWN, 'auth: permission denied', 'etcd'),
  maintenanceUserEmpty: e(Status.UNKNOWN, 'auth: user name is empty', 'etcd'),
  maintenanceUserNotFound: e(Status.UNKNOWN, 'auth: user name not found', 'etcd'),
  /** metaetcd's caveat: etcd accepts a put inside a from-key delete of the same transaction; members refuse it. */
  putInsideFromKeyDelete: e(
    Status.INVALID_ARGUMENT,
    'metaetcd: transaction puts a key inside the range of its own from-key delete (range_end "\\0"); ' +
      'etcd accepts this, metaetcd does not (see the caveats in the metaetcd README)',
    'invalid',
  ),
  /** metaetcd's caveat: a cross-member transaction's read whose range it writes both before and after the read. */
  crossMemberReadBetweenWrites: e(
    Status.INVALID_ARGUMENT,
    'metaetcd: a transaction over several member clusters reads a range that it writes both before and after the read; ' +
      'move the read before or after those writes (see the caveats in the metaetcd README)',
    'invalid',
  ),
  /** metaetcd's caveat: a writing transaction reads other members only after its last write. */
  crossMemberReadBeforeWrite: e(
    Status.INVALID_ARGUMENT,
    'metaetcd: transaction reads keys held by other member clusters before one of its writes; ' +
      'such reads are supported only after the last write of the branch taken (see the caveats in the metaetcd README)',
    'invalid',
  ),
};

/** The kind of each etcd error message, for errors that arrive from an etcd (see members/upstream-error.ts). */
export const KIND_OF_ETCD_MESSAGE: ReadonlyMap<string, ErrorKind> = new Map(Object.values(Errors).map((f) => [f().message, f().kind] as const));

/** A retryable error naming which part of the meta cluster is unavailable. */
export function unavailable(what: string): EtcdError {
  return new EtcdError(Status.UNAVAILABLE, `metaetcd: ${what}`, 'unavailable');
}

export function unimplemented(what: string): EtcdError {
  return new EtcdError(Status.UNIMPLEMENTED, `${what} is not implemented by metaetcd`, 'unimplemented');
}

export function isKind(err: unknown, kind: ErrorKind): boolean {
  return err instanceof EtcdError && err.kind === kind;
}

/** A gRPC status as grpc-js (or the HTTP/2 unary channel) fails a call with it. */
export function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && 'code' in err && 'details' in err && 'metadata' in err;
}

/** The message of any error, for logs and for messages that embed another error (a gRPC status: its details). */
export function messageOf(err: unknown): string {
  if (err instanceof EtcdError) return err.message;
  if (isServiceError(err)) return err.details;
  if (err instanceof Error) return err.message;
  return String(err);
}

/** The gRPC status code of any error: an EtcdError's, a gRPC status's, or UNKNOWN. */
export function statusOf(err: unknown): Status {
  if (err instanceof EtcdError) return err.code;
  if (isServiceError(err)) return err.code;
  return Status.UNKNOWN;
}
