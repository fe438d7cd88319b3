// The auth store's data and its changes, as pure functions with etcd's
// validations and errors (etcd auth/store.go). The whole state is one JSON record
// (see store.ts); every change returns a new state with the auth revision
// raised by one. Passwords arrive here already hashed (see password.ts).

import { randomBytes } from 'node:crypto';
import { Errors } from '../errors/etcd-error.js';
import { Permission_Type } from '../proto/gen/rpc.js';
import type { StoredPermission } from './permissions.js';

export const ROOT_USER = 'root';
export const ROOT_ROLE = 'root';

export interface PasswordHash {
  /** hex */
  salt: string;
  /** hex, scrypt(password, salt) */
  hash: string;
}

export interface UserRecord {
  name: string;
  /** Absent for a user added with options.noPassword. */
  password?: PasswordHash | undefined;
  noPassword: boolean;
  /** Sorted. */
  roles: string[];
  /** Changes with every password change: tokens issued before it stop working. */
  generation: string;
}

export interface PermissionRecord {
  permType: Permission_Type;
  /** base64 */
  key: string;
  /** base64 */
  rangeEnd: string;
}

export interface RoleRecord {
  name: string;
  perms: PermissionRecord[];
}

export interface AuthState {
  enabled: boolean;
  revision: number;
  /** hex; the HMAC key tokens are signed with, shared by every proxy. */
  secret: string;
  users: Record<string, UserRecord>;
  roles: Record<string, RoleRecord>;
}

export function emptyState(): AuthState {
  // etcd's auth revision starts at 1 on a fresh store.
  return { enabled: false, revision: 1, secret: randomBytes(32).toString('hex'), users: {}, roles: {} };
}

export function decodePermission(p: PermissionRecord): StoredPermission {
  return { permType: p.permType, key: Buffer.from(p.key, 'base64'), rangeEnd: Buffer.from(p.rangeEnd, 'base64') };
}

/**
 * A mutation: the new state (revision not yet raised), or the same state object
 * for a no-op. `keepsRevision`: stored without raising the auth revision (etcd's
 * AuthEnable does not raise it).
 */
export interface Change {
  (s: AuthState): AuthState;
  keepsRevision?: boolean;
}

const newGeneration = () => randomBytes(8).toString('hex');

function user(s: AuthState, name: string): UserRecord {
  const u = Object.hasOwn(s.users, name) ? s.users[name] : undefined;
  if (!u) throw Errors.userNotFound();
  return u;
}

function role(s: AuthState, name: string): RoleRecord {
  const r = Object.hasOwn(s.roles, name) ? s.roles[name] : undefined;
  if (!r) throw Errors.roleNotFound();
  return r;
}

export function hasUser(s: AuthState, name: string): boolean {
  return Object.hasOwn(s.users, name);
}

export function getUser(s: AuthState, name: string): UserRecord | undefined {
  return Object.hasOwn(s.users, name) ? s.users[name] : undefined;
}

export function getRole(s: AuthState, name: string): RoleRecord | undefined {
  return Object.hasOwn(s.roles, name) ? s.roles[name] : undefined;
}

export function isRoot(s: AuthState, name: string): boolean {
  return getUser(s, name)?.roles.includes(ROOT_ROLE) ?? false;
}

const withUser = (s: AuthState, u: UserRecord): AuthState => ({ ...s, users: { ...s.users, [u.name]: u } });
const withRole = (s: AuthState, r: RoleRecord): AuthState => ({ ...s, roles: { ...s.roles, [r.name]: r } });

export const change = {
  enable: (): Change =>
    Object.assign(
      (s: AuthState): AuthState => {
        if (s.enabled) return s;
        const root = getUser(s, ROOT_USER);
        if (!root) throw Errors.rootUserNotExist();
        if (!root.roles.includes(ROOT_ROLE)) throw Errors.rootRoleNotExist();
        return { ...s, enabled: true };
      },
      { keepsRevision: true },
    ),
  disable: (): Change => (s) => (s.enabled ? { ...s, enabled: false } : s),
  userAdd:
    (name: string, password: PasswordHash | undefined): Change =>
    (s) => {
      if (name.length === 0) throw Errors.userEmpty();
      if (hasUser(s, name)) throw Errors.userAlreadyExist();
      return withUser(s, { name, password, noPassword: password === undefined, roles: [], generation: newGeneration() });
    },
  userDelete:
    (name: string): Change =>
    (s) => {
      if (s.enabled && name === ROOT_USER) throw Errors.invalidAuthMgmt();
      user(s, name);
      const users = { ...s.users };
      delete users[name];
      return { ...s, users };
    },
  userChangePassword:
    (name: string, password: PasswordHash): Change =>
    (s) => {
      const u = user(s, name);
      // etcd keeps a no-password user without one (the password given is dropped).
      return withUser(s, { ...u, password: u.noPassword ? undefined : password, generation: newGeneration() });
    },
  userGrantRole:
    (name: string, roleName: string): Change =>
    (s) => {
      const u = user(s, name);
      if (roleName !== ROOT_ROLE) role(s, roleName);
      if (u.roles.includes(roleName)) return s;
      return withUser(s, { ...u, roles: [...u.roles, roleName].sort() });
    },
  userRevokeRole:
    (name: string, roleName: string): Change =>
    (s) => {
      if (s.enabled && name === ROOT_USER && roleName === ROOT_ROLE) throw Errors.invalidAuthMgmt();
      const u = user(s, name);
      if (!u.roles.includes(roleName)) throw Errors.roleNotGranted();
      return withUser(s, { ...u, roles: u.roles.filter((r) => r !== roleName) });
    },
  roleAdd:
    (name: string): Change =>
    (s) => {
      if (name.length === 0) throw Errors.roleEmpty();
      if (getRole(s, name)) throw Errors.roleAlreadyExist();
      return withRole(s, { name, perms: [] });
    },
  roleDelete:
    (name: string): Change =>
    (s) => {
      if (s.enabled && name === ROOT_ROLE) throw Errors.invalidAuthMgmt();
      role(s, name);
      const roles = { ...s.roles };
      delete roles[name];
      const users: Record<string, UserRecord> = {};
      for (const [k, u] of Object.entries(s.users)) users[k] = u.roles.includes(name) ? { ...u, roles: u.roles.filter((r) => r !== name) } : u;
      return { ...s, roles, users };
    },
  roleGrantPermission:
    (name: string, perm: StoredPermission): Change =>
    (s) => {
      const r = role(s, name);
      const key = perm.key.toString('base64');
      const rangeEnd = perm.rangeEnd.toString('base64');
      const i = r.perms.findIndex((p) => p.key === key && p.rangeEnd === rangeEnd);
      const perms = [...r.perms];
      if (i >= 0) perms[i] = { ...perms[i]!, permType: perm.permType };
      else {
        perms.push({ permType: perm.permType, key, rangeEnd });
        // etcd keeps a role's permissions sorted by key (a stable sort here).
        perms.sort((a, b) => Buffer.compare(Buffer.from(a.key, 'base64'), Buffer.from(b.key, 'base64')));
      }
      return withRole(s, { ...r, perms });
    },
  roleRevokePermission:
    (name: string, key: Buffer, rangeEnd: Buffer): Change =>
    (s) => {
      const r = role(s, name);
      const k = key.toString('base64');
      const e = rangeEnd.toString('base64');
      const perms = r.perms.filter((p) => !(p.key === k && p.rangeEnd === e));
      if (perms.length === r.perms.length) throw Errors.permissionNotGranted();
      return withRole(s, { ...r, perms });
    },
};

/** Parses a stored record; throws on anything that is not one. */
export function parseState(text: string): AuthState {
  const s = JSON.parse(text) as AuthState;
  if (typeof s !== 'object' || s === null || typeof s.revision !== 'number' || typeof s.secret !== 'string') {
    throw new Error('malformed auth record');
  }
  return s;
}
