// The durable auth store and this proxy's copy of it. The whole state (see
// state.ts) is one JSON record, InternalKey.auth, in the member at slot 0;
// every proxy over the same members shares it. Changes are read-modify-write
// transactions on that member, guarded by the record's mod revision (retried
// when another proxy changed it meanwhile). Each proxy keeps the latest record
// it has seen: read at start, replaced by its own writes, and by every change
// that member's watch stream reports (members/member-stream.ts), so a change made
// at another proxy takes effect here as soon as that event arrives.

import { EtcdError, Status } from '../errors/etcd-error.js';
import type { Logger } from '../log.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { cmp, op, txn } from '../proto/build.js';
import { InternalKey } from '../store/keyspace.js';
import { userPermissions, type UserPermissions } from './permissions.js';
import { decodePermission, emptyState, getRole, getUser, parseState, type AuthState, type Change } from './state.js';

/** How often a change is retried when other proxies keep changing the record under it. */
const MAX_ATTEMPTS = 20;

export interface AuthStoreOptions {
  /** The member that holds the auth record (slot 0). */
  client: EtcdClient;
  log: Logger;
}

const NO_PERMISSIONS = userPermissions([]);

export class AuthStore {
  private state: AuthState | undefined;
  /** Member mod revision of the record in `state` (0: none). */
  private modRevision = 0;
  private perms = new Map<string, UserPermissions>();

  constructor(private readonly o: AuthStoreOptions) {}

  /** Reads the record from the member (at start, and after the member's stream lost continuity). */
  async load(): Promise<void> {
    const r = await this.o.client.range({ key: InternalKey.auth });
    const kv = r.kvs[0];
    if (kv) this.observe(kv.value, Number(kv.modRevision));
  }

  /** A version of the record (from the member's stream, a read, or our own write); older ones are ignored. */
  observe(value: Buffer | undefined, modRevision: number): void {
    if (modRevision <= this.modRevision) return;
    let next: AuthState | undefined;
    if (value !== undefined) {
      try {
        next = parseState(value.toString('utf8'));
      } catch (err) {
        this.o.log.error({ err: String(err) }, 'ignoring a malformed auth record');
        return;
      }
    }
    this.state = next;
    this.modRevision = modRevision;
    this.perms = new Map();
  }

  /** The current state (an empty, disabled one before anything was ever stored). */
  get current(): AuthState {
    return this.state ?? EMPTY;
  }

  get enabled(): boolean {
    return this.state?.enabled ?? false;
  }

  /** The read and write sets of a user (from all its roles), cached until the state changes. */
  permissionsOf(user: string): UserPermissions {
    let p = this.perms.get(user);
    if (p) return p;
    const s = this.current;
    const u = getUser(s, user);
    if (!u) return NO_PERMISSIONS;
    p = userPermissions(u.roles.flatMap((r) => (getRole(s, r)?.perms ?? []).map(decodePermission)));
    this.perms.set(user, p);
    return p;
  }

  /**
   * Applies a change to the stored record: reads it, applies `change` (which may
   * throw etcd's validation errors), writes it with the auth revision raised by
   * one unless it is a no-op, and returns the resulting state.
   */
  async apply(change: Change): Promise<AuthState> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const r = await this.o.client.range({ key: InternalKey.auth });
      const kv = r.kvs[0];
      const base = kv ? parseState(kv.value.toString('utf8')) : emptyState();
      if (kv) this.observe(kv.value, Number(kv.modRevision));
      const changed = change(base);
      if (changed === base) return base;
      const next: AuthState = { ...changed, revision: change.keepsRevision ? base.revision : base.revision + 1 };
      const value = Buffer.from(JSON.stringify(next));
      const guard = kv ? cmp.modEqual(InternalKey.auth, Number(kv.modRevision)) : cmp.createEqual(InternalKey.auth, 0);
      const resp = await this.o.client.txn(txn([guard], [op.put(InternalKey.auth, value)]));
      if (resp.succeeded) {
        this.observe(value, Number(resp.header?.revision ?? 0));
        return next;
      }
    }
    throw new EtcdError(Status.UNAVAILABLE, 'metaetcd: the auth record keeps changing; try again', 'unavailable');
  }
}

const EMPTY: AuthState = { enabled: false, revision: 1, secret: '', users: {}, roles: {} };
