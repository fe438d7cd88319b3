// Enforcement: who a call is made as, and whether it may do what it asks, with
// etcd's checks and errors (etcd auth/store.go isOpPermitted, IsAdminPermitted,
// etcdserver/apply_auth.go). Nothing is checked while auth is disabled. The user
// is the one named by the `token` metadata; with no token, the common name of a
// verified client certificate (when the proxy requires client certificates);
// with neither, the empty user, which etcd refuses with "user name is empty".

import type { Metadata } from '@grpc/grpc-js';
import { EtcdError, Errors, Status } from '../errors/etcd-error.js';
import type { RequestOp, TxnRequest } from '../proto/gen/rpc.js';
import type { KeyRange } from './permissions.js';
import { getUser, isRoot } from './state.js';
import type { AuthStore } from './store.js';
import { verifyToken } from './tokens.js';

/** The parts of a gRPC call (grpc-js's or the lean server's) the guard reads. */
export interface CallInfo {
  metadata: Metadata;
  /** The lean server's http2 stream, whose TLS socket may carry a verified client certificate. */
  stream?: { session?: { socket?: unknown } | undefined } | undefined;
}

export interface AuthInfo {
  /** '' when the call names no user. */
  user: string;
}

const NONE = Buffer.alloc(0);

export class AuthGuard {
  constructor(readonly store: AuthStore) {}

  get enabled(): boolean {
    return this.store.enabled;
  }

  /** The caller while auth is enabled (throws etcd's invalid-token error), or undefined while it is disabled. */
  who(call: CallInfo): AuthInfo | undefined {
    if (!this.store.enabled) return undefined;
    const token = call.metadata.get('token')[0];
    if (token !== undefined && String(token).length > 0) {
      const s = this.store.current;
      const c = verifyToken(s.secret, String(token));
      const u = c && getUser(s, c.user);
      if (!c || !u || u.generation !== c.generation) throw Errors.invalidAuthToken();
      return { user: c.user };
    }
    return { user: commonName(call) ?? '' };
  }

  /** etcd's IsAdminPermitted: the caller must be a user with the root role. */
  checkAdmin(call: CallInfo, errors: AdminErrors = GRPC_ADMIN_ERRORS): AuthInfo | undefined {
    const info = this.who(call);
    if (info === undefined) return undefined;
    const err = this.adminError(info, errors);
    if (err) throw err;
    return info;
  }

  /** The error etcd's IsAdminPermitted gives this caller, or undefined when it is an admin. */
  adminError(info: AuthInfo, errors: AdminErrors = GRPC_ADMIN_ERRORS): EtcdError | undefined {
    if (info.user === '') return errors.empty();
    const s = this.store.current;
    if (!getUser(s, info.user)) return errors.notFound();
    if (!isRoot(s, info.user)) return errors.denied();
    return undefined;
  }

  checkRead(call: CallInfo, key: Buffer, rangeEnd: Buffer): void {
    const info = this.who(call);
    if (info) this.check(info, 'read', { key, rangeEnd });
  }

  checkPut(call: CallInfo, key: Buffer, prevKv: boolean): void {
    const info = this.who(call);
    if (!info) return;
    this.check(info, 'write', { key, rangeEnd: NONE });
    if (prevKv) this.check(info, 'read', { key, rangeEnd: NONE });
  }

  checkDelete(call: CallInfo, key: Buffer, rangeEnd: Buffer, prevKv: boolean): void {
    const info = this.who(call);
    if (!info) return;
    this.check(info, 'write', { key, rangeEnd });
    if (prevKv) this.check(info, 'read', { key, rangeEnd });
  }

  /**
   * etcd's checkTxnAuth: read on every compare, and each operation of both
   * branches, whichever is taken. Nested transactions are checked the same way
   * (etcd 3.4 does not look into them; we do not let them bypass the checks).
   */
  checkTxn(call: CallInfo, t: TxnRequest): void {
    const info = this.who(call);
    if (info) this.checkTxnAs(info, t);
  }

  /** Whether the caller may write each key (etcd's checkLeasePuts, for LeaseRevoke and puts with a lease). */
  checkWriteKeys(call: CallInfo, keys: Buffer[]): void {
    const info = this.who(call);
    if (info) for (const key of keys) this.check(info, 'write', { key, rangeEnd: NONE });
  }

  /**
   * Why the caller may not watch the range, or undefined when it may. etcd puts
   * the permission check's error, as Go prints a gRPC status, in the cancel reason
   * ("rpc error: code = PermissionDenied desc = etcdserver: permission denied").
   */
  watchRefusal(call: CallInfo, key: Buffer, rangeEnd: Buffer): string | undefined {
    try {
      this.checkRead(call, key, rangeEnd);
      return undefined;
    } catch (err) {
      if (!(err instanceof EtcdError)) throw err;
      return `rpc error: code = ${GO_CODE_NAMES[err.code] ?? String(err.code)} desc = ${err.message}`;
    }
  }

  private checkTxnAs(info: AuthInfo, t: TxnRequest): void {
    for (const c of t.compare) this.check(info, 'read', c);
    const ops = (list: RequestOp[]) => {
      for (const o of list) {
        const r = o.request;
        if (r?.$case === 'requestRange') this.check(info, 'read', r.value);
        else if (r?.$case === 'requestPut') {
          this.check(info, 'write', { key: r.value.key, rangeEnd: NONE });
          if (r.value.prevKv) this.check(info, 'read', { key: r.value.key, rangeEnd: NONE });
        } else if (r?.$case === 'requestDeleteRange') {
          if (r.value.prevKv) this.check(info, 'read', r.value);
          this.check(info, 'write', r.value);
        } else if (r?.$case === 'requestTxn') this.checkTxnAs(info, r.value);
      }
    };
    ops(t.success);
    ops(t.failure);
  }

  /** etcd's isOpPermitted. */
  private check(info: AuthInfo, kind: 'read' | 'write', r: KeyRange): void {
    if (info.user === '') throw Errors.userEmpty();
    const s = this.store.current;
    if (!getUser(s, info.user)) throw Errors.permissionDenied();
    if (isRoot(s, info.user)) return;
    const p = this.store.permissionsOf(info.user);
    if (!(kind === 'read' ? p.read : p.write).covers(r)) throw Errors.permissionDenied();
  }
}

export interface AdminErrors {
  empty: () => EtcdError;
  notFound: () => EtcdError;
  denied: () => EtcdError;
}

/** IsAdminPermitted's errors as the Auth service returns them (converted to gRPC statuses). */
export const GRPC_ADMIN_ERRORS: AdminErrors = { empty: Errors.userEmpty, notFound: Errors.userNotFound, denied: Errors.permissionDenied };

/** IsAdminPermitted's errors as the Maintenance service returns them: the auth package's own, unconverted (Unknown). */
export const MAINTENANCE_ADMIN_ERRORS: AdminErrors = {
  empty: Errors.maintenanceUserEmpty,
  notFound: Errors.maintenanceUserNotFound,
  denied: Errors.maintenancePermissionDenied,
};

/** grpc-go's names of the codes a permission check can fail with. */
const GO_CODE_NAMES: Partial<Record<Status, string>> = {
  [Status.INVALID_ARGUMENT]: 'InvalidArgument',
  [Status.PERMISSION_DENIED]: 'PermissionDenied',
  [Status.UNAUTHENTICATED]: 'Unauthenticated',
  [Status.FAILED_PRECONDITION]: 'FailedPrecondition',
};

/** The CN of the verified client certificate of the call's TLS connection, if any. */
function commonName(call: CallInfo): string | undefined {
  const socket = call.stream?.session?.socket as { authorized?: boolean; getPeerCertificate?: () => { subject?: { CN?: unknown } } } | undefined;
  if (!socket || socket.authorized !== true || typeof socket.getPeerCertificate !== 'function') return undefined;
  const cn = socket.getPeerCertificate()?.subject?.CN;
  return typeof cn === 'string' && cn.length > 0 ? cn : undefined;
}
