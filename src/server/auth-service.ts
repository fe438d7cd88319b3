// The Auth service over the shared auth store (auth/store.ts), with etcd's
// permission rules: every call but Authenticate, UserGet (of oneself) and RoleGet
// (of one's own roles) needs an admin (a user with the root role) once auth is
// enabled (etcd etcdserver/apply_auth.go needAdminPermission).

import { Errors, unimplemented } from '../errors/etcd-error.js';
import type { AuthGuard, CallInfo } from '../auth/guard.js';
import { decodePermission, getRole, getUser, change } from '../auth/state.js';
import { checkPassword, hashPassword, issueToken } from '../auth/tokens.js';
import type { Clock } from '../clock/clock.js';
import { Permission_Type, type AuthServer } from '../proto/gen/rpc.js';
import type { HeaderFactory } from '../proto/header.js';
import { unary, type HandlerDeps } from './unary.js';

export interface AuthServiceDeps extends HandlerDeps {
  guard: AuthGuard;
  clock: Clock;
  header: HeaderFactory;
}

/** A bcrypt hash made by the client cannot be checked here (passwords are scrypt-hashed by the proxy). */
const noHashedPasswords = () => unimplemented('hashedPassword (send the password; metaetcd hashes it)');

export function createAuthService(d: AuthServiceDeps): AuthServer {
  const store = d.guard.store;
  const header = async () => d.header.make((d.clock.latest() ?? (await d.clock.now())).revision);
  /** An admin-only change: checks the caller, applies it, answers with a header. */
  const admin = <Req>(method: string, fn: (req: Req) => Promise<unknown> | unknown) =>
    unary<Req, { header: ReturnType<HeaderFactory['make']> }>(method, d, async (req, call) => {
      d.guard.checkAdmin(call as CallInfo);
      await fn(req);
      return { header: await header() };
    });

  return {
    authEnable: admin('AuthEnable', () => store.apply(change.enable())),
    authDisable: admin('AuthDisable', () => store.apply(change.disable())),
    authStatus: unary('AuthStatus', d, async (_req, call) => {
      d.guard.checkAdmin(call as CallInfo);
      const s = store.current;
      return { header: await header(), enabled: s.enabled, authRevision: BigInt(s.revision) };
    }),
    authenticate: unary('Authenticate', d, async (req) => {
      const s = store.current;
      if (!s.enabled) throw Errors.authNotEnabled();
      const u = getUser(s, req.name);
      if (!u || u.noPassword || !u.password || !(await checkPassword(req.password, u.password))) throw Errors.authFailed();
      return { header: await header(), token: issueToken(s.secret, u.name, u.generation) };
    }),

    userAdd: admin('UserAdd', async (req: { name: string; password: string; hashedPassword: string; options?: { noPassword: boolean } | undefined }) => {
      if (req.name.length === 0) throw Errors.userEmpty();
      if (req.hashedPassword.length > 0 && req.password.length === 0) throw noHashedPasswords();
      const pw = req.options?.noPassword ? undefined : await hashPassword(req.password);
      return store.apply(change.userAdd(req.name, pw));
    }),
    userGet: unary('UserGet', d, async (req, call) => {
      const info = d.guard.who(call as CallInfo);
      if (info && info.user !== req.name) {
        const err = d.guard.adminError(info);
        if (err) throw err;
      }
      const u = getUser(store.current, req.name);
      if (!u) throw Errors.userNotFound();
      return { header: await header(), roles: [...u.roles] };
    }),
    userList: unary('UserList', d, async (_req, call) => {
      d.guard.checkAdmin(call as CallInfo);
      return { header: await header(), users: Object.keys(store.current.users).sort() };
    }),
    userDelete: admin('UserDelete', (req: { name: string }) => store.apply(change.userDelete(req.name))),
    userChangePassword: admin('UserChangePassword', async (req: { name: string; password: string; hashedPassword: string }) => {
      if (req.hashedPassword.length > 0 && req.password.length === 0) throw noHashedPasswords();
      if (!getUser(store.current, req.name)) throw Errors.userNotFound();
      return store.apply(change.userChangePassword(req.name, await hashPassword(req.password)));
    }),
    userGrantRole: admin('UserGrantRole', (req: { user: string; role: string }) => store.apply(change.userGrantRole(req.user, req.role))),
    userRevokeRole: admin('UserRevokeRole', (req: { name: string; role: string }) => store.apply(change.userRevokeRole(req.name, req.role))),

    roleAdd: admin('RoleAdd', (req: { name: string }) => store.apply(change.roleAdd(req.name))),
    roleGet: unary('RoleGet', d, async (req, call) => {
      const info = d.guard.who(call as CallInfo);
      if (info && !(getUser(store.current, info.user)?.roles.includes(req.role) ?? false)) {
        const err = d.guard.adminError(info);
        if (err) throw err;
      }
      const r = getRole(store.current, req.role);
      if (!r) throw Errors.roleNotFound();
      return { header: await header(), perm: r.perms.map(decodePermission) };
    }),
    roleList: unary('RoleList', d, async (_req, call) => {
      d.guard.checkAdmin(call as CallInfo);
      return { header: await header(), roles: Object.keys(store.current.roles).sort() };
    }),
    roleDelete: admin('RoleDelete', (req: { role: string }) => store.apply(change.roleDelete(req.role))),
    roleGrantPermission: admin(
      'RoleGrantPermission',
      (req: { name: string; perm?: { permType: Permission_Type; key: Buffer; rangeEnd: Buffer } | undefined }) => {
        // etcd 3.4 crashes on a grant without a permission (and again at every restart); 3.5 refuses it.
        if (!req.perm) throw Errors.permissionNotGiven();
        return store.apply(change.roleGrantPermission(req.name, req.perm));
      },
    ),
    roleRevokePermission: admin('RoleRevokePermission', (req: { role: string; key: Buffer; rangeEnd: Buffer }) =>
      store.apply(change.roleRevokePermission(req.role, req.key, req.rangeEnd)),
    ),
  };
}
