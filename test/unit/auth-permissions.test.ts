// Unit tests of the auth permission ranges (etcd's interval semantics), the
// auth state changes (etcd's validations), and the signed tokens.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IntervalSet, userPermissions } from '../../src/auth/permissions.js';
import { change, emptyState, type AuthState } from '../../src/auth/state.js';
import { checkPassword, hashPassword, issueToken, TOKEN_TTL_MS, verifyToken } from '../../src/auth/tokens.js';
import { EtcdError } from '../../src/errors/etcd-error.js';
import { Permission_Type } from '../../src/proto/gen/rpc.js';

const b = (s: string) => Buffer.from(s);
const r = (key: string, rangeEnd = '') => ({ key: b(key), rangeEnd: b(rangeEnd) });
const FROM = '\0';

test('single-key permissions cover exactly that key', () => {
  const s = new IntervalSet([r('a')]);
  assert.ok(s.covers(r('a')));
  assert.ok(!s.covers(r('b')));
  assert.ok(!s.covers(r('a0')));
  assert.ok(s.covers(r('a', 'a\0')), 'the range [a, a\\0) is the key a');
  assert.ok(!s.covers(r('a', 'b')));
});

test('range permissions: [key, range_end), prefix, adjacent and overlapping unions', () => {
  const s = new IntervalSet([r('a', 'c')]);
  assert.ok(s.covers(r('a')));
  assert.ok(s.covers(r('bzzz')));
  assert.ok(!s.covers(r('c')));
  assert.ok(s.covers(r('a', 'c')));
  assert.ok(s.covers(r('b', 'c')));
  assert.ok(!s.covers(r('b', 'd')));
  assert.ok(!s.covers(r('0', 'b')));
  assert.ok(!s.covers(r('a', FROM)));

  const prefix = new IntervalSet([r('p/', 'p0')]);
  assert.ok(prefix.covers(r('p/', 'p0')));
  assert.ok(prefix.covers(r('p/x')));
  assert.ok(!prefix.covers(r('p', 'q')));

  // [a, b) + [b, c) cover [a, c); [a, b) + [c, d) do not.
  assert.ok(new IntervalSet([r('b', 'c'), r('a', 'b')]).covers(r('a', 'c')));
  assert.ok(!new IntervalSet([r('a', 'b'), r('c', 'd')]).covers(r('a', 'd')));
  assert.ok(new IntervalSet([r('a', 'm'), r('c', 'z')]).covers(r('b', 'y')));
  // A single-key permission adjoins the range that starts right after it.
  assert.ok(new IntervalSet([r('a'), r('a\0', 'b')]).covers(r('a', 'b')));
});

test('from-key permissions ("\\0") reach the end of the keyspace', () => {
  const s = new IntervalSet([r('z', FROM)]);
  assert.ok(s.covers(r('z')));
  assert.ok(s.covers(r('zzzz')));
  assert.ok(s.covers(r('z', FROM)));
  assert.ok(s.covers(r('z', '{')));
  assert.ok(!s.covers(r('y')));
  assert.ok(!s.covers(r('y', FROM)));
  assert.ok(new IntervalSet([r('', FROM)]).covers(r('', FROM)), 'all keys');
  assert.ok(new IntervalSet([r('a', 'c'), r('b', FROM)]).covers(r('a', FROM)));
});

test('empty and inverted request ranges are never covered (as in etcd)', () => {
  const s = new IntervalSet([r('', FROM)]);
  assert.ok(!s.covers(r('b', 'a')));
  assert.ok(!s.covers(r('b', 'b')));
  assert.ok(!new IntervalSet([]).covers(r('a')));
});

test('read and write sets from permission types', () => {
  const p = userPermissions([
    { permType: Permission_Type.READ, key: b('r'), rangeEnd: b('') },
    { permType: Permission_Type.WRITE, key: b('w'), rangeEnd: b('') },
    { permType: Permission_Type.READWRITE, key: b('rw'), rangeEnd: b('') },
  ]);
  assert.ok(p.read.covers(r('r')) && !p.write.covers(r('r')));
  assert.ok(!p.read.covers(r('w')) && p.write.covers(r('w')));
  assert.ok(p.read.covers(r('rw')) && p.write.covers(r('rw')));
});

function rejects(fn: () => unknown, message: string): void {
  assert.throws(fn, (e: unknown) => e instanceof EtcdError && e.message === message);
}

test('state changes: etcd validations and errors', () => {
  let s: AuthState = emptyState();
  rejects(() => change.enable()(s), 'etcdserver: root user does not exist');
  s = change.userAdd('root', { salt: '00', hash: '00' })(s);
  rejects(() => change.userAdd('root', undefined)(s), 'etcdserver: user name already exists');
  rejects(() => change.userAdd('', undefined)(s), 'etcdserver: user name is empty');
  rejects(() => change.enable()(s), 'etcdserver: root user does not have root role');
  rejects(() => change.userGrantRole('root', 'r1')(s), 'etcdserver: role name not found');
  s = change.userGrantRole('root', 'root')(s); // the root role need not exist
  assert.equal(change.userGrantRole('root', 'root')(s), s, 'granting twice is a no-op');
  assert.equal(change.enable().keepsRevision, true, 'AuthEnable does not raise the auth revision');
  assert.ok(!change.disable().keepsRevision);
  s = change.enable()(s);
  assert.equal(s.enabled, true);
  assert.equal(change.enable()(s), s);
  rejects(() => change.userDelete('root')(s), 'etcdserver: invalid auth management');
  rejects(() => change.userRevokeRole('root', 'root')(s), 'etcdserver: invalid auth management');
  rejects(() => change.roleDelete('root')(s), 'etcdserver: invalid auth management'); // checked before existence, as etcd does
  s = change.roleAdd('r1')(s);
  rejects(() => change.roleAdd('r1')(s), 'etcdserver: role name already exists');
  rejects(() => change.roleAdd('')(s), 'etcdserver: role name is empty');
  s = change.roleGrantPermission('r1', { permType: Permission_Type.READ, key: b('k'), rangeEnd: b('') })(s);
  s = change.roleGrantPermission('r1', { permType: Permission_Type.WRITE, key: b('k'), rangeEnd: b('') })(s);
  s = change.roleGrantPermission('r1', { permType: Permission_Type.READ, key: b('a'), rangeEnd: b('b') })(s);
  assert.deepEqual(
    s.roles.r1!.perms.map((p) => [Buffer.from(p.key, 'base64').toString(), p.permType]),
    [
      ['a', Permission_Type.READ],
      ['k', Permission_Type.WRITE],
    ],
    'sorted by key; the same key and range_end replace the type',
  );
  rejects(() => change.roleRevokePermission('r1', b('k'), b('l'))(s), 'etcdserver: permission is not granted to the role');
  s = change.roleRevokePermission('r1', b('k'), b(''))(s);
  s = change.userAdd('u', undefined)(s);
  assert.equal(s.users.u!.noPassword, true);
  const changed = change.userChangePassword('u', { salt: '00', hash: '11' })(s);
  assert.equal(changed.users.u!.password, undefined, 'a no-password user stays without one');
  assert.notEqual(changed.users.u!.generation, s.users.u!.generation, 'its tokens end');
  rejects(() => change.userRevokeRole('u', 'r1')(s), 'etcdserver: role is not granted to the user');
  s = change.userGrantRole('u', 'r1')(s);
  s = change.roleDelete('r1')(s);
  assert.deepEqual(s.users.u!.roles, [], 'deleting a role revokes it from every user');
  rejects(() => change.userDelete('nobody')(s), 'etcdserver: user name not found');
  rejects(() => change.userChangePassword('nobody', { salt: '', hash: '' })(s), 'etcdserver: user name not found');
  assert.equal(change.disable()(change.disable()(s)).enabled, false);
  // Prototype keys are not users or roles.
  rejects(() => change.userDelete('constructor')(s), 'etcdserver: user name not found');
});

test('passwords: salted scrypt; tokens: signed, expiring, bound to the secret', async () => {
  const h1 = await hashPassword('pw');
  const h2 = await hashPassword('pw');
  assert.notEqual(h1.hash, h2.hash, 'salted');
  assert.ok(await checkPassword('pw', h1));
  assert.ok(!(await checkPassword('px', h1)));

  const secret = 'ab'.repeat(32);
  const now = 1_000_000;
  const t = issueToken(secret, 'alice', 'g1', now);
  assert.deepEqual(verifyToken(secret, t, now + 1), { user: 'alice', generation: 'g1', expires: now + TOKEN_TTL_MS });
  assert.equal(verifyToken(secret, t, now + TOKEN_TTL_MS), undefined, 'expired');
  assert.equal(verifyToken('cd'.repeat(32), t, now), undefined, 'another secret');
  const [payload] = t.split('.');
  const forged = Buffer.from(JSON.stringify({ u: 'root', g: 'g1', e: now + 10_000 })).toString('base64url');
  assert.equal(verifyToken(secret, `${forged}.${t.split('.')[1]}`, now), undefined, 'forged payload');
  assert.equal(verifyToken(secret, payload!, now), undefined);
  assert.equal(verifyToken(secret, 'garbage', now), undefined);
});
