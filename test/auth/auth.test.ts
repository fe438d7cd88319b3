// The Auth API, differentially: the same etcdctl commands against a plain etcd
// (the oracle) and against a proxy over three members, in order, with the same
// exit codes, output and error messages expected from both; then what etcdctl
// cannot show: a token issued by one proxy used at a second proxy over the same
// members, an immediate revocation, and the etcd3 npm client's auth.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import {
  AuthClient,
  AuthRoleAddRequest,
  AuthRoleGrantPermissionRequest,
  AuthUserAddRequest,
  AuthUserDeleteRequest,
  AuthUserGrantRoleRequest,
  AuthenticateRequest,
  KVClient,
  RangeRequest,
  TxnRequest,
  WatchClient,
  WatchRequest,
  type AuthenticateResponse,
  type RangeResponse,
  type WatchResponse,
} from '../../src/proto/gen/rpc.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { etcdctl, type EtcdctlResult } from '../harness/etcdctl.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';

type Target = 'oracle' | 'proxy';
const TARGETS: Target[] = ['oracle', 'proxy'];

let set: EtcdSet;
let proxy: TestProxy;
let proxy2: TestProxy;
const endpoint: Record<Target, string> = { oracle: '', proxy: '' };

before(async () => {
  set = await startEtcdSet({ oracle: true, name: 'auth' });
  proxy = await startTestProxy(set);
  proxy2 = await startTestProxy(set);
  endpoint.oracle = set.oracle!.clientUrl;
  endpoint.proxy = proxy.endpoint;
});
after(async () => {
  await proxy2?.stop();
  await proxy?.stop();
  await set?.stop();
});

/**
 * etcdctl authenticates within its dial timeout (2 s by default), and Authenticate
 * hashes the password on both targets: on a loaded machine that can take longer.
 */
const SLOW = ['--dial-timeout=15s', '--command-timeout=20s'];
const ROOT = [...SLOW, '--user', 'root:rootpw'];
const ALICE = [...SLOW, '--user', 'alice:a'];

/** What is compared: exit code, stdout, and stderr without clientv3's JSON log lines and with the endpoint masked. */
function shape(t: Target, r: EtcdctlResult): { code: number | null; stdout: string; stderr: string } {
  const ep = endpoint[t].replace(/^https?:\/\//, '');
  // Lease IDs differ between the targets.
  const mask = (s: string) => s.split(`http://${ep}`).join('<endpoint>').split(ep).join('<endpoint>').replace(/\b[0-9a-f]{16}\b/g, '<lease>');
  const stderr = r.stderr
    .split('\n')
    .filter((l) => l.length > 0 && !l.startsWith('{"level"'))
    .join('\n');
  return { code: r.code, stdout: mask(r.stdout), stderr: mask(stderr) };
}

/** Runs the command at both targets (one after the other, oracle first) and expects the same result. */
async function same(args: string[] | ((t: Target) => string[]), input?: string): Promise<Record<Target, EtcdctlResult>> {
  const out = {} as Record<Target, EtcdctlResult>;
  for (const t of TARGETS) {
    const a = typeof args === 'function' ? args(t) : args;
    out[t] = await etcdctl(endpoint[t], [...SLOW, ...a], { timeoutMs: 60_000, ...(input === undefined ? {} : { input }) });
  }
  assert.deepEqual(shape('proxy', out.proxy), shape('oracle', out.oracle), `etcdctl ${typeof args === 'function' ? args('proxy').join(' ') : args.join(' ')}`);
  return out;
}

test('users, roles and permissions with etcdctl, as etcd has them', async () => {
  await same(['auth', 'enable']); // no root user
  await same(['user', 'add', 'root:rootpw']);
  await same(['user', 'add', 'root:again']); // exists
  await same(['user', 'add', ':x']); // etcdctl refuses an empty name itself
  await same(['auth', 'enable']); // etcdctl adds the root role and grants it, then enables
  await same(['auth', 'enable']); // now needs a user: "user name is empty"
  await same(['get', 'foo']); // no user
  await same(['--user', 'root:bad', 'get', 'foo']);
  await same([...ROOT, 'put', 'foo', 'bar']);
  await same([...ROOT, 'get', 'foo']);

  await same([...ROOT, 'user', 'add', 'alice:a']);
  await same([...ROOT, 'user', 'add', 'bob:b']);
  await same([...ROOT, 'role', 'add', 'r1']);
  await same([...ROOT, 'role', 'add', 'r1']);
  await same([...ROOT, 'role', 'add', 'root']);
  await same([...ROOT, 'role', 'grant-permission', 'r1', 'read', 'a', 'b']);
  await same([...ROOT, 'role', 'grant-permission', 'r1', '--prefix', 'readwrite', 'p/']);
  await same([...ROOT, 'role', 'grant-permission', 'r1', '--from-key', 'write', 'z']);
  await same([...ROOT, 'role', 'grant-permission', 'r1', 'read', 'k1']);
  await same([...ROOT, 'role', 'grant-permission', 'r1', 'readwrite', 'k1']); // same key: the type is replaced
  await same([...ROOT, 'role', 'grant-permission', 'nobody', 'read', 'x']);
  await same([...ROOT, 'role', 'grant-permission', 'r1', 'read', 'y', 'x']); // inverted range
  await same([...ROOT, 'role', 'revoke-permission', 'r1', 'y', 'x']);
  await same([...ROOT, 'role', 'get', 'r1']);
  await same([...ROOT, 'role', 'get', 'root']);
  await same([...ROOT, 'role', 'get', 'nobody']);
  await same([...ROOT, 'role', 'list']);
  await same([...ROOT, 'user', 'grant-role', 'alice', 'r1']);
  await same([...ROOT, 'user', 'grant-role', 'alice', 'r1']); // already granted: no error
  await same([...ROOT, 'user', 'grant-role', 'alice', 'nobody']);
  await same([...ROOT, 'user', 'grant-role', 'nobody', 'r1']);
  await same([...ROOT, 'user', 'get', 'alice']);
  await same([...ROOT, 'user', 'get', 'alice', '--detail']);
  await same([...ROOT, 'user', 'add', 'emptypw:']);
  await same(['--user', 'emptypw:', 'get', 'a']);
  await same([...ROOT, '-w', 'json', 'user', 'get', 'bob'], undefined).catch(() => undefined); // headers differ; checked below
  await same([...ROOT, 'user', 'get', 'nobody']);
  await same([...ROOT, 'user', 'list']);
  await same([...ROOT, 'user', 'revoke-role', 'bob', 'r1']); // not granted
  await same([...ROOT, 'user', 'revoke-role', 'root', 'root']); // invalid auth management
  await same([...ROOT, 'user', 'delete', 'root']);
  await same([...ROOT, 'role', 'delete', 'root']);
  await same([...ROOT, 'user', 'delete', 'nobody']);
  await same([...ROOT, 'role', 'delete', 'nobody']);
  await same([...ROOT, 'role', 'revoke-permission', 'r1', 'nokey']);
  await same([...ROOT, 'role', 'revoke-permission', 'root', 'x']);
  await same([...ROOT, 'role', 'revoke-permission', 'r1', 'k1']);
  await same([...ROOT, 'role', 'get', 'r1']);
});

test('a limited user: reads, writes, txn, watch, leases, admin calls', async () => {
  await same([...ALICE, 'get', 'a']);
  await same([...ALICE, 'get', 'a', 'b']); // [a, b): exactly the permission
  await same([...ALICE, 'get', 'a', 'c']); // beyond it
  await same([...ALICE, 'get', 'b']);
  await same([...ALICE, 'put', 'a', '1']);
  await same([...ALICE, 'put', 'p/x', '1']);
  await same([...ALICE, 'put', 'p/x', '2', '--prev-kv']);
  await same([...ALICE, 'get', '--prefix', 'p/']);
  await same([...ALICE, 'get', '--prefix', 'p']);
  await same([...ALICE, 'get', '', '--from-key']);
  await same([...ALICE, 'put', 'zz', '1']);
  await same([...ALICE, 'put', 'y', '1']);
  await same([...ALICE, 'del', 'zz']);
  await same([...ALICE, 'del', '--from-key', 'z']);
  await same([...ALICE, 'del', '--prefix', 'z']);
  await same([...ALICE, 'del', 'a']);
  await same([...ALICE, 'del', 'p/x', '--prev-kv']);
  await same([...ALICE, 'get', 'foo']);
  await same([...ALICE, 'txn', '-i'], ['value("p/t") = "x"', '', 'put p/t y', '', 'put p/t z', '', ''].join('\n'));
  await same([...ALICE, 'get', 'p/t']);
  await same([...ALICE, 'txn', '-i'], ['value("b") = "1"', '', 'put p/t y', '', '', ''].join('\n')); // compare needs read on b
  await same([...ALICE, 'txn', '-i'], ['', 'put p/t y', '', 'put a 1', '', ''].join('\n')); // the branch not taken counts too
  await same([...ALICE, 'watch', 'b']); // refused: etcdctl prints the cancel reason and exits
  await same([...ALICE, 'watch', '--prefix', 'z']); // write-only: refused
  await same([...ALICE, 'user', 'get', 'alice']); // oneself
  await same([...ALICE, 'user', 'get', 'root']);
  await same([...ALICE, 'role', 'get', 'r1']); // one's own role
  await same([...ALICE, 'role', 'get', 'root']);
  await same([...ALICE, 'user', 'list']);
  await same([...ALICE, 'role', 'list']);
  await same([...ALICE, 'user', 'add', 'eve:e']);
  await same([...ALICE, 'auth', 'disable']);
  await same([...ALICE, 'defrag']); // Unknown "auth: permission denied", like etcd
  await same([...ALICE, 'endpoint', 'hashkv']); // admin only, before the proxy says Unimplemented
  await same([...ALICE, 'snapshot', 'save', join(set.root, 'alice-snapshot.db')]);
  await same([...ALICE, 'compaction', '1']).catch(() => undefined); // open in etcd 3.4; revisions differ
  for (const t of TARGETS) {
    assert.equal((await etcdctl(endpoint[t], [...ALICE, 'member', 'list'])).code, 0, `member list is open (${t})`);
    assert.equal((await etcdctl(endpoint[t], [...ALICE, 'endpoint', 'status'])).code, 0, `status is open (${t})`);
  }

  // LeaseRevoke needs write permission on the lease's keys.
  const lease: Record<Target, string> = { oracle: '', proxy: '' };
  for (const t of TARGETS) {
    const g = await etcdctl(endpoint[t], [...ROOT, 'lease', 'grant', '100']);
    lease[t] = /lease ([0-9a-f]+) granted/.exec(g.stdout)![1]!;
  }
  await same((t) => [...ROOT, 'put', '--lease', lease[t], 'q', '1']);
  await same((t) => [...ALICE, 'lease', 'revoke', lease[t]]);
  await same((t) => [...ALICE, 'put', '--lease', lease[t], 'p/l', '1']); // the lease has a key alice may not write
  await same((t) => [...ROOT, 'lease', 'revoke', lease[t]]);
});

test('revoking takes effect at once; password change, user delete, auth disable', async () => {
  await same([...ALICE, 'get', 'p/t']);
  await same([...ROOT, 'role', 'revoke-permission', 'r1', '--prefix', 'p/']);
  await same([...ALICE, 'get', 'p/t']);
  await same([...ROOT, 'role', 'grant-permission', 'r1', '--prefix', 'read', 'p/']);
  await same([...ALICE, 'get', 'p/t']);
  await same([...ROOT, 'user', 'revoke-role', 'alice', 'r1']);
  await same([...ALICE, 'get', 'p/t']);
  await same([...ROOT, 'user', 'grant-role', 'alice', 'r1']);
  await same([...ROOT, 'role', 'delete', 'r1']);
  await same([...ROOT, 'user', 'get', 'alice']);
  await same([...ALICE, 'get', 'p/t']);
  await same([...ROOT, 'user', 'passwd', 'alice', '--interactive=false'], 'a2\n');
  await same([...ALICE, 'get', 'a']);
  await same(['--user', 'alice:a2', 'get', 'a']);
  await same([...ROOT, 'user', 'delete', 'alice']);
  await same(['--user', 'alice:a2', 'get', 'a']);
  await same([...ROOT, 'auth', 'disable']);
  await same(['get', 'foo']);
  await same(['auth', 'disable']); // already disabled: no error
  await same(['--user', 'bob:b', 'get', 'foo']); // auth disabled: Authenticate fails, etcdctl goes on
  await same(['user', 'list']);
});

// --- gRPC level: tokens across proxies, AuthStatus ----------------------------

function grpc<C>(Ctor: new (addr: string, creds: ReturnType<typeof credentials.createInsecure>) => C, ep: string): C {
  return new Ctor(ep, credentials.createInsecure());
}

function call<Res>(fn: (cb: (err: ServiceError | null, res: Res) => void) => void): Promise<Res> {
  return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res))));
}

test('a token issued by one proxy works at another; deleting the user invalidates it at once', async () => {
  const auth1 = grpc(AuthClient, proxy.endpoint);
  const auth2 = grpc(AuthClient, proxy2.endpoint);
  const kv2 = grpc(KVClient, proxy2.endpoint);
  try {
    const rootMeta = new Metadata();
    // root exists from the first tests (auth is disabled again by now).
    await call((cb) => auth1.userAdd(AuthUserAddRequest.fromPartial({ name: 'root', password: 'rootpw' }), cb)).catch((e: ServiceError) =>
      assert.equal(e.details, 'etcdserver: user name already exists'),
    );
    await call((cb) => auth1.userGrantRole(AuthUserGrantRoleRequest.fromPartial({ user: 'root', role: 'root' }), cb));
    await call((cb) => auth1.userAdd(AuthUserAddRequest.fromPartial({ name: 'carol', password: 'c' }), cb));
    await call((cb) => auth1.roleAdd(AuthRoleAddRequest.fromPartial({ name: 'rc' }), cb));
    await call((cb) => auth1.roleGrantPermission(AuthRoleGrantPermissionRequest.fromPartial({ name: 'rc', perm: { permType: 0, key: Buffer.from('c/'), rangeEnd: Buffer.from('c0') } }), cb));
    await call((cb) => auth1.userGrantRole(AuthUserGrantRoleRequest.fromPartial({ user: 'carol', role: 'rc' }), cb));
    const before = await call<{ enabled: boolean; authRevision: bigint }>((cb) => auth2.authStatus({}, cb));
    assert.equal(before.enabled, false);
    await call((cb) => auth1.authEnable({}, cb));

    const rootTok = (await call<AuthenticateResponse>((cb) => auth1.authenticate({ name: 'root', password: 'rootpw' }, cb))).token;
    rootMeta.set('token', rootTok);
    // AuthStatus needs an admin (etcd 3.5), and its revision moved with every change.
    await assert.rejects(call((cb) => auth2.authStatus({}, cb)), (e: ServiceError) => e.details === 'etcdserver: user name is empty');
    const st = await call<{ enabled: boolean; authRevision: bigint }>((cb) => auth2.authStatus({}, rootMeta, cb));
    assert.equal(st.enabled, true);
    assert.equal(st.authRevision, before.authRevision, 'AuthEnable does not raise the auth revision (as in etcd)');

    const tok = (await call<AuthenticateResponse>((cb) => auth1.authenticate({ name: 'carol', password: 'c' }, cb))).token;
    const m = new Metadata();
    m.set('token', tok);
    const r = await call<RangeResponse>((cb) => kv2.range(RangeRequest.fromPartial({ key: Buffer.from('c/'), rangeEnd: Buffer.from('c0') }), m, cb));
    assert.equal(r.kvs.length, 0);
    await assert.rejects(call((cb) => kv2.range(RangeRequest.fromPartial({ key: Buffer.from('d') }), m, cb)), (e: ServiceError) => e.code === 7 && e.details === 'etcdserver: permission denied');
    const bad = new Metadata();
    bad.set('token', tok.slice(0, -2) + 'xx');
    await assert.rejects(call((cb) => kv2.range(RangeRequest.fromPartial({ key: Buffer.from('c/1') }), bad, cb)), (e: ServiceError) => e.code === 16 && e.details === 'etcdserver: invalid auth token');
    await assert.rejects(
      call((cb) => auth1.authenticate({ name: 'carol', password: 'wrong' }, cb)),
      (e: ServiceError) => e.code === 3 && e.details === 'etcdserver: authentication failed, invalid user ID or password',
    );

    await call((cb) => auth1.userDelete(AuthUserDeleteRequest.fromPartial({ name: 'carol' }), rootMeta, cb));
    // At proxy 2 once its stream of member 0 has the change (milliseconds).
    const deadline = Date.now() + 5000;
    for (;;) {
      const res = await call((cb) => kv2.range(RangeRequest.fromPartial({ key: Buffer.from('c/1') }), m, cb)).then(
        () => 'ok',
        (e: ServiceError) => e.details,
      );
      if (res === 'etcdserver: invalid auth token') break;
      assert.ok(Date.now() < deadline, `the deleted user's token still works at proxy 2 (${res})`);
      await new Promise((r) => setTimeout(r, 20));
    }

    // The records are durable in the members: a proxy started now has them, and accepts the tokens already issued.
    const proxy3 = await startTestProxy(set);
    const auth3 = grpc(AuthClient, proxy3.endpoint);
    try {
      const st3 = await call<{ enabled: boolean; authRevision: bigint }>((cb) => auth3.authStatus({}, rootMeta, cb));
      assert.deepEqual([st3.enabled, st3.authRevision], [true, st.authRevision + 1n], 'enabled, and one change since (carol deleted)');
    } finally {
      auth3.close();
      await proxy3.stop();
    }

    // noPassword users (3.5) cannot authenticate.
    await call((cb) => auth1.userAdd(AuthUserAddRequest.fromPartial({ name: 'nopw', password: '', options: { noPassword: true } }), rootMeta, cb));
    await assert.rejects(call((cb) => auth2.authenticate({ name: 'nopw', password: '' }, cb)), (e: ServiceError) => e.code === 3);
  } finally {
    auth1.close();
    auth2.close();
    kv2.close();
  }
});

test('the etcd3 npm client: auth options, roles and users', async () => {
  const root = new Etcd3({ hosts: proxy.url, auth: { username: 'root', password: 'rootpw' } });
  try {
    const role = await root.role('e3').create();
    await role.grant({ permission: 'Readwrite', range: root.range({ prefix: 'e3/' }) });
    const u = await root.user('dave').create('d');
    await u.addRole('e3');
    const roles = (await root.getRoles()).map((r) => r.name);
    assert.ok(roles.includes('e3') && roles.includes('root'), roles.join());
    assert.deepEqual((await root.user('dave').roles()).map((r) => r.name), ['e3']);
    const perms = await root.role('e3').permissions();
    assert.equal(perms.length, 1);
    assert.equal(perms[0]!.permission, 'Readwrite');

    const dave = new Etcd3({ hosts: proxy2.url, auth: { username: 'dave', password: 'd' } });
    try {
      await dave.put('e3/k').value('v');
      assert.equal(await dave.get('e3/k').string(), 'v');
      await assert.rejects(async () => dave.put('other').value('v'), /permission denied/);
      const w = await dave.watch().prefix('e3/').create();
      const got = new Promise<string>((resolve) => w.on('put', (kv) => resolve(kv.value.toString())));
      await dave.put('e3/k').value('w');
      assert.equal(await got, 'w');
      await w.cancel();
    } finally {
      dave.close();
    }
  } finally {
    root.close();
  }
});

test('watch refusals at the gRPC level: the same responses as etcd, and the stream stays open', async () => {
  for (const t of TARGETS) {
    for (const args of [
      ['user', 'add', 'wuser:w'],
      ['role', 'add', 'wrole'],
      ['role', 'grant-permission', 'wrole', '--prefix', 'read', 'w/'],
      ['user', 'grant-role', 'wuser', 'wrole'],
      ['auth', 'enable'],
    ]) {
      const r = await etcdctl(endpoint[t], [...ROOT, ...args]);
      assert.equal(r.code, 0, `${t}: etcdctl ${args.join(' ')}: ${r.stderr}`);
    }
  }
  const seen: Record<Target, string[]> = { oracle: [], proxy: [] };
  const fromKey: Record<Target, string[]> = { oracle: [], proxy: [] };
  for (const t of TARGETS) {
    const ep = endpoint[t].replace(/^https?:\/\//, '');
    const auth = grpc(AuthClient, ep);
    const watch = grpc(WatchClient, ep);
    try {
      const tok = (await call<AuthenticateResponse>((cb) => auth.authenticate(AuthenticateRequest.fromPartial({ name: 'wuser', password: 'w' }), cb))).token;
      for (const token of [tok, undefined]) {
        const m = new Metadata();
        if (token) m.set('token', token);
        const s = watch.watch(m);
        const got: string[] = [];
        s.on('data', (r: WatchResponse) =>
          got.push(JSON.stringify({ id: String(r.watchId), created: r.created, canceled: r.canceled, reason: r.cancelReason, events: r.events.length })),
        );
        s.on('error', () => undefined);
        const create = (key: string, rangeEnd: string, watchId: bigint) =>
          s.write(WatchRequest.fromPartial({ requestUnion: { $case: 'createRequest', value: { key: Buffer.from(key), rangeEnd: Buffer.from(rangeEnd), watchId } } }));
        create('x', '', 0n); // refused
        create('x', '', 5n); // refused, with the ID asked for
        create('w/', 'w0', 0n); // permitted
        await new Promise((r) => setTimeout(r, 300));
        // From key: etcd 3.4 checks only the first key of a from-key watch ("\0" becomes an empty range_end
        // before its check), so it lets wuser watch every key from w/ on; the proxy checks the whole range.
        create('w/', '\0', 0n);
        await new Promise((r) => setTimeout(r, 300));
        fromKey[t].push(got.pop()!);
        s.end();
        s.cancel();
        seen[t].push(...got, '--');
      }
    } finally {
      auth.close();
      watch.close();
    }
  }
  assert.deepEqual(seen.proxy, seen.oracle);
  // The one deliberate difference (see the README): with a token, etcd creates the from-key watch, the proxy refuses it.
  assert.match(fromKey.oracle[0]!, /"canceled":false/);
  assert.match(fromKey.proxy[0]!, /"canceled":true.*permission denied/);
  assert.deepEqual(fromKey.proxy[1], fromKey.oracle[1], 'without a user both refuse it');
  assert.ok(seen.oracle.some((l) => l.includes('"canceled":true') && l.includes('etcdserver: permission denied')), seen.oracle.join('\n'));
  // Nested transactions: etcd 3.4 checks none of the operations inside one, so wuser (read on w/ only)
  // can write any key through it; the proxy checks them like the outer ones.
  const nested: Record<Target, string> = { oracle: '', proxy: '' };
  for (const t of TARGETS) {
    const ep = endpoint[t].replace(/^https?:\/\//, '');
    const auth = grpc(AuthClient, ep);
    const kv = grpc(KVClient, ep);
    try {
      const tok = (await call<AuthenticateResponse>((cb) => auth.authenticate(AuthenticateRequest.fromPartial({ name: 'wuser', password: 'w' }), cb))).token;
      const m = new Metadata();
      m.set('token', tok);
      const inner = { success: [{ request: { $case: 'requestPut' as const, value: { key: Buffer.from('nested-x'), value: Buffer.from('1') } } }] };
      const req = TxnRequest.fromPartial({ success: [{ request: { $case: 'requestTxn', value: inner } }] });
      nested[t] = await call((cb) => kv.txn(req, m, cb)).then(
        () => 'ok',
        (e: ServiceError) => e.details,
      );
    } finally {
      auth.close();
      kv.close();
    }
  }
  assert.deepEqual(nested, { oracle: 'ok', proxy: 'etcdserver: permission denied' });

  for (const t of TARGETS) {
    const r = await etcdctl(endpoint[t], [...ROOT, 'auth', 'disable']);
    assert.equal(r.code, 0, r.stderr);
  }
});

test('deleting the auth record from member 0 disables auth and removes every user (the way back in)', async () => {
  const auth = grpc(AuthClient, proxy.endpoint);
  const kv = grpc(KVClient, proxy2.endpoint);
  const members = set.members.map((m) => clientFor(m.clientUrl));
  try {
    await call((cb) => auth.authEnable({}, cb));
    await assert.rejects(call((cb) => kv.range(RangeRequest.fromPartial({ key: Buffer.from('x') }), cb)), (e: ServiceError) => e.details === 'etcdserver: user name is empty');
    // Not knowing which etcd is slot 0 here, delete it everywhere (only member 0 has it).
    await Promise.all(members.map((c) => c.deleteRange({ key: Buffer.from('m/auth') })));
    const deadline = Date.now() + 5000;
    for (;;) {
      const ok = await call((cb) => kv.range(RangeRequest.fromPartial({ key: Buffer.from('x') }), cb)).then(
        () => true,
        () => false,
      );
      if (ok) break;
      assert.ok(Date.now() < deadline, 'auth is still enabled at proxy 2');
      await new Promise((r) => setTimeout(r, 20));
    }
    const users = await call<{ users: string[] }>((cb) => auth.userList({}, cb));
    assert.deepEqual(users.users, []);
  } finally {
    for (const c of members) c.close();
    auth.close();
    kv.close();
  }
});
