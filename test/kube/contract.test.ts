// The Kubernetes contract (shared/docs/kubernetes-contract.md), differential:
// every storage operation of kube-apiserver 1.28–1.34, in the ≤1.31 ("legacy")
// and ≥1.32 ("modern") request shapes, is sent to a plain etcd (the oracle) and
// then to the proxy over 3 members, through the real gRPC wire. Every response
// field the contract says kube reads must be equal after mapping the proxy's
// revisions onto the oracle's (kube-diff.ts). Each test is named after the rule
// it checks.
//
// The tests run in order and share one history (both sides see the same writes);
// compaction comes last. A watch on /registry/ with prev_kv and progress_notify is
// open on both sides from the start; the final test compares its events.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { status as Status } from '@grpc/grpc-js';
import type { TxnResponse } from '../../src/proto/gen/rpc.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { startTestProxy, type TestProxy } from '../harness/proxy.js';
import { eventNorm, eventRuleViolations, KubeWatch, Pair, traceNorm, type Outcome, type RevMap, type Side } from './kube-diff.js';
import {
  checkProgressSupport,
  COMPACT_REV_KEY,
  decodeContinue,
  ETCD_ERR,
  KubeCompactor,
  KubeConnection,
  KubeLeaseManager,
  KubeStore,
  kubeValue,
  parseSemver,
  prefixEnd,
  probeHealth,
  sleep,
  versionSupportsProgress,
  type KubeVersion,
  type ListResult,
  type StoredObject,
} from './storage-client.js';

let set: EtcdSet;
let proxy: TestProxy;
let pair: Pair;
const watches: Record<Side, KubeWatch | undefined> = { oracle: undefined, proxy: undefined };
const watchConns: KubeConnection[] = [];
const leaseManagers = new Map<string, KubeLeaseManager>();
/** resourceVersions the writes returned, per side: key@rv → used to check they equal the watch events' mod_revision. */
const writtenRvs: Record<Side, Set<string>> = { oracle: new Set(), proxy: new Set() };

const VERSIONS: KubeVersion[] = ['legacy', 'modern'];
const tag = (v: KubeVersion) => (v === 'legacy' ? '≤1.31' : '≥1.32');

before(async () => {
  set = await startEtcdSet({ name: 'kube-contract', oracle: true });
  proxy = await startTestProxy(set);
  pair = new Pair(new KubeConnection([set.oracle!.clientUrl], { name: 'oracle' }), new KubeConnection([proxy.url], { name: 'proxy' }));
  await pair.pairNow();
  for (const side of ['oracle', 'proxy'] as const) {
    // The watch-cache watch: its own client (one per resource in kube), hasleader metadata, prev_kv + progress_notify.
    const conn = new KubeConnection([side === 'oracle' ? set.oracle!.clientUrl : proxy.url], { name: `${side} watch` });
    watchConns.push(conn);
    const w = new KubeWatch(conn);
    w.create({ key: Buffer.from('/registry/'), rangeEnd: prefixEnd('/registry/'), startRevision: 0n, prevKv: true, progressNotify: true });
    await w.until(() => w.responses.some((r) => r.created), 5000, 'created');
    watches[side] = w;
  }
});

after(async () => {
  for (const w of Object.values(watches)) w?.close();
  for (const c of watchConns) c.close();
  pair?.oracle.close();
  pair?.proxy.close();
  await proxy?.stop();
  await set?.stop();
});

// ---------------------------------------------------------------------------
// helpers

function store(c: KubeConnection, side: Side, resource: string, v: KubeVersion = 'modern'): KubeStore {
  const lm = leaseManagers.get(`${side}/${resource}`) ?? new KubeLeaseManager(c);
  leaseManagers.set(`${side}/${resource}`, lm);
  return new KubeStore(c, resource, v, lm);
}

function noteRv(side: Side, o: StoredObject | { key: string; rv: bigint }): void {
  writtenRvs[side].add(`${o.key}@${o.rv}`);
}

function objNorm(o: StoredObject | null | undefined, rev?: RevMap): unknown {
  if (!o) return o;
  return { key: o.key, value: o.value.toString('hex').slice(0, 64) + `/${o.value.length}`, rv: rev ? rev.exact(o.rv) : o.rv.toString() };
}

function listNorm(l: ListResult, keyPrefix: string, rev?: RevMap): unknown {
  const c = l.continueToken ? decodeContinue(l.continueToken, keyPrefix) : undefined;
  return {
    items: l.items.map((o) => objNorm(o, rev)),
    rv: (rev ? rev.floor(l.rv) : l.rv).toString(),
    continue: c ? { fromKey: c.fromKey, rv: c.rv <= 0 ? c.rv : Number(rev ? rev.floor(BigInt(c.rv)) : BigInt(c.rv)) } : undefined,
    remainingItemCount: l.remainingItemCount?.toString(),
    pages: l.pages,
  };
}

/** Both outcomes, with a value normaliser applied on each side (proxy mapped). */
function assertSameOutcome<T>(r: { o: Outcome<T>; p: Outcome<T> }, what: string, f: (v: T, rev?: RevMap) => unknown): void {
  const n = (x: Outcome<T>, rev?: RevMap) =>
    x.ok ? { ok: true, value: f(x.value, rev) } : { ok: false, kind: x.kind, code: x.code === undefined ? undefined : (Status[x.code] ?? x.code), details: x.details, continueToken: x.continueToken };
  assert.deepEqual(n(r.p, pair.rev), n(r.o), `${what}: outcome differs (proxy = actual, etcd = expected)`);
}

function ok<T>(x: Outcome<T>, what: string): T {
  if (!x.ok) assert.fail(`${what}: ${x.kind} ${x.code ?? ''} ${x.details ?? ''}`);
  return x.value;
}

function innerHeader(resp: TxnResponse, kind: 'responsePut' | 'responseDeleteRange'): bigint | undefined {
  const r = resp.responses[0]?.response;
  if (r?.$case !== kind) return undefined;
  return r.value.header?.revision;
}

const js = (x: unknown) => JSON.stringify(x, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : Buffer.isBuffer(v) ? `<${v.length}B>` : v));

// ---------------------------------------------------------------------------
// §2.10, §2.3, §2.11 on a fresh store

test('§2.10 health probe: Range{/registry/health} answers without error, with a header and no kvs (as etcd)', async () => {
  const r = await pair.same('health', async (c) => {
    const h = await probeHealth(c);
    assert.ok(h.healthy, `probe failed: ${h.error}`);
    return h;
  });
  assert.ok(r.o.ok && r.p.ok);
});

test('§2.3 GetCurrentResourceVersion: Range{"/registry/<res>" (no slash), limit 1} → header.revision, never 0, even on a fresh store (as etcd)', async () => {
  const r = await pair.same('GetCurrentResourceVersion', (c, s) => store(c, s, 'pods').getCurrentResourceVersion());
  assert.ok(r.o.ok && r.p.ok);
  assert.ok(r.p.value > 0n && r.o.value > 0n);
});

test('§2.11 Status: version is strict semver and db_size > 0, on a fresh connection per call; the RequestProgress support verdict is logged', async () => {
  for (const [name, url] of [
    ['oracle', set.oracle!.clientUrl],
    ['proxy', proxy.url],
  ] as const) {
    const c = new KubeConnection([url], { name: `status ${name}` });
    try {
      const st = await c.status();
      assert.ok(parseSemver(st.version), `${name}: Status.version ${JSON.stringify(st.version)} is not strict semver (the apiserver then turns RequestProgress off)`);
      assert.ok(st.dbSize > 0n, `${name}: db_size ${st.dbSize}`);
      assert.ok(st.header, `${name}: Status has no header`);
    } finally {
      c.close();
    }
    const check = await checkProgressSupport([url, url]);
    console.log(`# ${name}: Status.version ${check.versions.join(',')} → kube ≥1.31 RequestProgress ${check.supported ? 'ENABLED' : 'disabled (consistent reads go to etcd)'}`);
    assert.equal(check.supported, versionSupportsProgress(check.versions[0]!));
  }
  // The checker's rule itself.
  assert.ok(versionSupportsProgress('3.5.13') && versionSupportsProgress('3.6.4') && versionSupportsProgress('3.4.31'));
  assert.ok(!versionSupportsProgress('3.5.12') && !versionSupportsProgress('3.5.0') && !versionSupportsProgress('3.4.30') && !versionSupportsProgress('3.5'));
});

// ---------------------------------------------------------------------------
// §2.5 – §2.7 single-object operations, in both request shapes

const VALUE_KINDS = ['proto', 'enc', 'json'] as const;

for (const v of VERSIONS) {
  test(`§2.5 create (${tag(v)}): Txn{MOD==0 → Put{lease 0}, else []} succeeds; the new RV is ${v === 'legacy' ? 'responses[0].response_put.header.revision (present)' : 'txn header.revision'}; opaque binary values round-trip; equal to etcd`, async () => {
    for (let i = 0; i < 6; i++) {
      const ns = i % 2 ? 'kube-system' : 'default';
      const name = `create-${v}-${i}`;
      const value = kubeValue(VALUE_KINDS[i % 3]!, `${v}/${i}`, 200 + i);
      const r = await pair.same(`create ${name}`, async (c, s) => {
        const st = store(c, s, 'pods', v);
        const { obj, resp } = await st.create(st.key(name, ns), value);
        // The inner header must be present and name the write (≤1.31 reads it; nil would panic).
        assert.equal(innerHeader(resp, 'responsePut'), resp.header!.revision, `${s}: inner response_put header ${innerHeader(resp, 'responsePut')} ≠ txn header ${resp.header!.revision}`);
        noteRv(s, obj);
        const got = await st.get(obj.key);
        assert.ok(got && got.value.equals(value), `${s}: value did not round-trip byte for byte`);
        assert.equal(got.rv, obj.rv, `${s}: Get's mod_revision ≠ the create's resourceVersion`);
        const cur = await st.getCurrentResourceVersion();
        assert.ok(cur >= obj.rv, `${s}: GetCurrentResourceVersion ${cur} below a write's RV ${obj.rv}`);
        return obj;
      });
      assertSameOutcome(r, `create ${name}`, (o, rev) => objNorm(o, rev));
    }
  });

  test(`§2.5 create (${tag(v)}): creating an existing key → succeeded=false with no responses → 409 AlreadyExists (as etcd)`, async () => {
    const r = await pair.same('create existing', async (c, s) => {
      const st = store(c, s, 'pods', v);
      return st.create(st.key(`create-${v}-0`, 'default'), Buffer.from('again'));
    });
    assert.ok(!r.o.ok && r.o.kind === 'KeyExists');
    assertSameOutcome(r, 'create existing', () => null);
  });

  test(`§2.1 get (${tag(v)}): ${v === 'legacy' ? 'Range{key}' : 'Range{key, limit 1}'} → header, kvs[0].value and mod_revision; absent → empty kvs (NotFound); a minimum RV above header → TooLargeResourceVersion (as etcd)`, async () => {
    const a = await pair.same('get existing', (c, s) => store(c, s, 'pods', v).get(store(c, s, 'pods', v).key(`create-${v}-1`, 'kube-system')));
    assertSameOutcome(a, 'get existing', (o, rev) => objNorm(o, rev));
    const b = await pair.same('get absent', (c, s) => store(c, s, 'pods', v).get('/registry/pods/default/absent'));
    assert.ok(!b.o.ok && b.o.kind === 'NotFound');
    assertSameOutcome(b, 'get absent', () => null);
    const c2 = await pair.same('get minRV', async (c, s) => {
      const st = store(c, s, 'pods', v);
      const cur = await st.getCurrentResourceVersion();
      return st.get(st.key(`create-${v}-1`, 'kube-system'), { minimumResourceVersion: cur + 100n });
    });
    assert.ok(!c2.o.ok && c2.o.kind === 'TooLargeResourceVersion');
    assertSameOutcome(c2, 'get minRV', () => null);
  });

  test(`§2.6 GuaranteedUpdate (${tag(v)}): current origRev → Txn{MOD==origRev → Put, else Range} succeeds at once; the new RV from ${v === 'legacy' ? 'the inner response_put header' : 'the txn header'} (as etcd)`, async () => {
    const r = await pair.same('update current', async (c, s) => {
      const st = store(c, s, 'pods', v);
      const key = st.key(`create-${v}-2`, 'default');
      const u = await st.guaranteedUpdate(key, (cur) => Buffer.concat([cur!.value, Buffer.from([0, 1, 0xff])]));
      assert.equal(u.attempts, 1);
      noteRv(s, u.obj);
      return u.obj;
    });
    assertSameOutcome(r, 'update current', (o, rev) => objNorm(o, rev));
  });

  test(`§2.6 GuaranteedUpdate (${tag(v)}): a stale origRev from the watch cache → else branch responses[0].response_range carries the current kv (value, mod_revision); the retry from it (no new Get) succeeds (as etcd)`, async () => {
    const name = `stale-${v}`;
    const stale: Partial<Record<Side, StoredObject>> = {};
    await pair.same('stale setup', async (c, s) => {
      const st = store(c, s, 'pods', v);
      const { obj } = await st.create(st.key(name, 'default'), kubeValue('proto', `${name}/0`));
      noteRv(s, obj);
      stale[s] = obj;
      // Another apiserver updates it twice: the cached copy is now two versions behind.
      for (let i = 1; i <= 2; i++) noteRv(s, (await st.guaranteedUpdate(obj.key, () => kubeValue('proto', `${name}/${i}`))).obj);
    });
    const seen: Partial<Record<Side, StoredObject | null>> = {};
    const r = await pair.same('update from a stale cache', async (c, s) => {
      const st = store(c, s, 'pods', v);
      let calls = 0;
      const u = await st.guaranteedUpdate(
        stale[s]!.key,
        (cur) => {
          if (calls++ === 1) seen[s] = cur;
          return kubeValue('proto', `${name}/3/${cur!.value.length}`);
        },
        { cached: stale[s]! },
      );
      noteRv(s, u.obj);
      return u;
    });
    assert.ok(r.o.ok && r.p.ok);
    assert.equal(r.o.value.attempts, 2);
    assert.equal(r.p.value.attempts, 2, 'the proxy: the stale compare should fail once, then the retry from the else-branch kv succeed');
    assert.deepEqual(objNorm(seen.proxy, pair.rev), objNorm(seen.oracle), 'the object read from responses[0].response_range differs');
    if (process.env.KUBE_DEBUG) console.log(js(pair.proxy.trace.slice(-3).map((t) => traceNorm(t, pair.rev))), '\n', js(pair.oracle.trace.slice(-3).map((t) => traceNorm(t))));
    assertSameOutcome(r, 'update from a stale cache', (u, rev) => objNorm(u.obj, rev));
  });

  test(`§2.6 GuaranteedUpdate (${tag(v)}): origRev 0 (ignoreNotFound) creates an absent key; origRev 0 on an existing key takes the else branch and retries (as etcd)`, async () => {
    const name = `rev0-${v}`;
    const r = await pair.same('update rev 0 absent', async (c, s) => {
      const st = store(c, s, 'pods', v);
      const u = await st.guaranteedUpdate(st.key(name, 'default'), (cur) => (cur ? null : kubeValue('enc', name)), { cached: null, ignoreNotFound: true });
      noteRv(s, u.obj);
      return u;
    });
    assertSameOutcome(r, 'update rev 0 absent', (u, rev) => ({ obj: objNorm(u.obj, rev), attempts: u.attempts }));
    const r2 = await pair.same('update rev 0 existing', async (c, s) => {
      const st = store(c, s, 'pods', v);
      const u = await st.guaranteedUpdate(st.key(name, 'default'), (cur) => kubeValue('enc', `${name}/${cur ? 'existing' : 'absent'}`), { cached: null, ignoreNotFound: true });
      noteRv(s, u.obj);
      return u;
    });
    assert.ok(r2.p.ok && r2.p.value.attempts === 2, 'origRev 0 on an existing key: first compare fails, retry succeeds');
    assertSameOutcome(r2, 'update rev 0 existing', (u, rev) => ({ obj: objNorm(u.obj, rev), attempts: u.attempts }));
  });

  test(`§2.6 GuaranteedUpdate (${tag(v)}): the key was deleted since the cached copy → else branch with empty kvs → NotFound (as etcd)`, async () => {
    const name = `gone-${v}`;
    const cached: Partial<Record<Side, StoredObject>> = {};
    await pair.same('gone setup', async (c, s) => {
      const st = store(c, s, 'pods', v);
      const { obj } = await st.create(st.key(name, 'default'), kubeValue('json', name));
      noteRv(s, obj);
      cached[s] = obj;
      noteRv(s, { key: obj.key, rv: (await st.delete(obj.key)).rv });
    });
    const r = await pair.same('update deleted', (c, s) => store(c, s, 'pods', v).guaranteedUpdate(cached[s]!.key, () => Buffer.from('x'), { cached: cached[s]! }));
    assert.ok(!r.o.ok && r.o.kind === 'NotFound');
    assertSameOutcome(r, 'update deleted', () => null);
  });

  test(`§2.6 GuaranteedUpdate (${tag(v)}): an unchanged value sends no Txn once the state is known current (as etcd)`, async () => {
    const r = await pair.same('update noop', async (c, s) => {
      const st = store(c, s, 'pods', v);
      const before = c.trace.length;
      const u = await st.guaranteedUpdate(st.key(`create-${v}-3`, 'kube-system'), (cur) => cur!.value);
      assert.ok(u.noop);
      assert.ok(c.trace.slice(before).every((t) => t.rpc === 'Range'), 'a no-op update sent a Txn');
      return u.obj;
    });
    assertSameOutcome(r, 'update noop', (o, rev) => objNorm(o, rev));
  });

  test(`§2.7 delete (${tag(v)}): Txn{MOD==rev → DeleteRange{key}, else Range}; the deleted object's RV is ${v === 'legacy' ? 'responses[0].response_delete_range.header.revision' : 'the txn header'}; a stale rev retries from the else-branch kv; absent → NotFound (as etcd)`, async () => {
    const name = `del-${v}`;
    const cached: Partial<Record<Side, StoredObject>> = {};
    await pair.same('delete setup', async (c, s) => {
      const st = store(c, s, 'pods', v);
      const { obj } = await st.create(st.key(name, 'default'), kubeValue('proto', name));
      noteRv(s, obj);
      cached[s] = obj;
      noteRv(s, (await st.guaranteedUpdate(obj.key, () => kubeValue('proto', `${name}/1`))).obj);
    });
    const r = await pair.same('delete stale', async (c, s) => {
      const st = store(c, s, 'pods', v);
      const before = c.trace.length;
      const d = await st.delete(cached[s]!.key, { cached: cached[s]! });
      const txns = c.trace.slice(before).filter((t) => t.rpc === 'Txn');
      const last = txns.at(-1)!.resp as TxnResponse;
      assert.equal(innerHeader(last, 'responseDeleteRange'), last.header!.revision, `${s}: inner response_delete_range header ≠ txn header`);
      noteRv(s, { key: d.deleted.key, rv: d.rv });
      return d;
    });
    assert.ok(r.p.ok && r.p.value.attempts === 2);
    assertSameOutcome(r, 'delete stale', (d, rev) => ({ deleted: objNorm(d.deleted, rev), rv: rev ? rev.exact(d.rv) : d.rv.toString(), attempts: d.attempts }));
    const r2 = await pair.same('delete absent', (c, s) => store(c, s, 'pods', v).delete(cached[s]!.key, { cached: cached[s]! }));
    assert.ok(!r2.o.ok && r2.o.kind === 'NotFound');
    assertSameOutcome(r2, 'delete absent', () => null);
  });
}

// ---------------------------------------------------------------------------
// §2.2 lists, §2.4 count

/** Names chosen so that byte order, '-', '.', digits and the "\0" continue key all matter. */
const LIST_NAMES = ['a', 'a-1', 'a.1', 'a0', 'a00', 'ab', 'b', 'b-', 'z', 'zz'];

test('§2.2 GetList setup: 10 pods in each of namespaces "list" and "list-b" (names whose byte order matters)', async () => {
  await pair.same('list setup', async (c, s) => {
    const st = store(c, s, 'pods');
    for (const ns of ['list', 'list-b']) {
      for (const name of LIST_NAMES) noteRv(s, (await st.create(st.key(name, ns), kubeValue('proto', `${ns}/${name}`))).obj);
    }
  });
});

for (const v of VERSIONS) {
  test(`§2.2 GetList (${tag(v)}): paged (limit 3) over /registry/pods/<ns>/: pages pinned to the first page's revision despite writes between pages, next key lastKey+"\\0", has-more by ${v === 'legacy' ? '`more`' : '`len(kvs) < count`'}, continue token and remainingItemCount = count − limit equal to etcd's`, async () => {
    const keyPrefix = '/registry/pods/list/';
    const tokens: Partial<Record<Side, string>> = {};
    const pages: { o: Outcome<ListResult>; p: Outcome<ListResult> }[] = [];
    const first = await pair.same('page 1', async (c, s) => {
      const l = await store(c, s, 'pods', v).getList({ namespace: 'list', limit: 3 });
      const n = (await c.range({ key: Buffer.from(keyPrefix), rangeEnd: prefixEnd(keyPrefix), countOnly: true, revision: l.rv })).count;
      assert.equal(l.remainingItemCount, n - 3n, `${s}: remainingItemCount must be count − limit`);
      tokens[s] = l.continueToken;
      return l;
    });
    pages.push(first);
    assert.ok(first.o.ok && first.o.value.continueToken);
    // Writes between pages (on both sides): a new pod after the page, an update of a later pod, a delete.
    await pair.same('writes between pages', async (c, s) => {
      const st = store(c, s, 'pods', v);
      noteRv(s, (await st.create(st.key(`b0-${v}`, 'list'), Buffer.from('new'))).obj);
      noteRv(s, (await st.guaranteedUpdate(st.key('z', 'list'), (cur) => Buffer.concat([cur!.value, Buffer.from(v)]))).obj);
      const d = await st.delete(st.key('zz', 'list'));
      noteRv(s, { key: d.deleted.key, rv: d.rv });
      // put zz back so the other version's run sees the same keyspace shape
      noteRv(s, (await st.create(st.key('zz', 'list'), kubeValue('proto', `list/zz/${v}`))).obj);
    });
    for (let i = 0; i < 6 && tokens.oracle; i++) {
      const r = await pair.same(`page ${i + 2}`, async (c, s) => {
        const l = await store(c, s, 'pods', v).getList({ namespace: 'list', limit: 3, continueToken: tokens[s]! });
        tokens[s] = l.continueToken;
        return l;
      });
      pages.push(r);
    }
    for (const [i, r] of pages.entries()) assertSameOutcome(r, `page ${i + 1}`, (l, rev) => listNorm(l, keyPrefix, rev));
    const all = pages.flatMap((r) => ok(r.p, 'page').items);
    const names = all.map((o) => o.key.slice(keyPrefix.length));
    for (const n of LIST_NAMES) assert.ok(names.includes(n), `the pages miss ${n}`);
    assert.ok(!names.includes(`b0-${v}`), 'a pod created between pages appeared (pages not pinned to the first page\'s revision)');
    assert.ok(!all.find((o) => o.key.endsWith('/z'))!.value.toString('latin1').endsWith(v), 'an update made between pages appeared');
    for (let i = 1; i < all.length; i++) assert.ok(Buffer.compare(Buffer.from(all[i - 1]!.key, 'latin1'), Buffer.from(all[i]!.key, 'latin1')) < 0, 'pages sorted by key bytes, no duplicates');
    assert.ok(pages.every((r) => ok(r.p, 'page').rv === ok(pages[0]!.p, 'page').rv), 'every page carries the first page\'s revision');
  });

  test(`§2.2 GetList (${tag(v)}): a selector that drops items makes the apiserver double the limit (3 → 6 → …) within one call; all-namespaces prefix /registry/pods/; same pages and items as etcd`, async () => {
    const r = await pair.same('filtered list', (c, s) => store(c, s, 'pods', v).getList({ limit: 3, filter: (o) => o.key.endsWith('0') || o.key.endsWith('b') }));
    assert.ok(r.o.ok && r.o.value.pages > 1, 'the filtered list took several Ranges');
    assertSameOutcome(r, 'filtered list', (l, rev) => listNorm(l, '/registry/pods/', rev));
    const all = await pair.same('full list', (c, s) => store(c, s, 'pods', v).getList({}));
    assertSameOutcome(all, 'full list', (l, rev) => listNorm(l, '/registry/pods/', rev));
    const keys = ok(all.p, 'list').items.map((o) => Buffer.from(o.key, 'latin1'));
    for (let i = 1; i < keys.length; i++) assert.ok(Buffer.compare(keys[i - 1]!, keys[i]!) < 0, 'results sorted by key bytes');
  });
}

test('§2.2 has-more at the boundaries: limits 1…12 over a namespace of 11 pods (limit = count, count − 1, count + 1), both rules, listed right after a Txn whose else branch ran (the proxy\'s header is then a revision no write used); same pages, count, more and tokens as etcd; a watch from the list\'s RV+1 (§2.8) gets exactly the next write', async () => {
  const keyPrefix = '/registry/pods/list/';
  for (const v of VERSIONS) {
    for (let limit = 1; limit <= 12; limit++) {
      // A stale compare first: on the proxy it takes a revision that carries no event.
      await pair.same('stale compare', async (c, s) => {
        const st = store(c, s, 'pods', v);
        const cur = await st.get(st.key('a', 'list'));
        const r = await c.txn({ compare: [{ key: Buffer.from(cur!.key), rangeEnd: Buffer.alloc(0), target: 2, result: 0, targetUnion: { $case: 'modRevision', value: cur!.rv - 1n } }], success: [], failure: [{ request: { $case: 'requestRange', value: { key: Buffer.from(cur!.key), rangeEnd: Buffer.alloc(0), limit: 0n, revision: 0n, sortOrder: 0, sortTarget: 0, serializable: false, keysOnly: false, countOnly: false, minModRevision: 0n, maxModRevision: 0n, minCreateRevision: 0n, maxCreateRevision: 0n } } }] });
        assert.ok(!r.succeeded);
      });
      const tokens: Partial<Record<Side, string | undefined>> = {};
      const results: { o: Outcome<ListResult>; p: Outcome<ListResult> }[] = [];
      for (let page = 0; page < 12; page++) {
        const r = await pair.same(`limit ${limit} page ${page + 1}`, async (c, s) => {
          const l = await store(c, s, 'pods', v).getList({ namespace: 'list', limit, ...(tokens[s] ? { continueToken: tokens[s] } : {}) });
          tokens[s] = l.continueToken;
          return l;
        });
        results.push(r);
        if (!tokens.oracle && !tokens.proxy) break;
      }
      for (const [i, r] of results.entries()) assertSameOutcome(r, `${tag(v)} limit ${limit} page ${i + 1}`, (l, rev) => listNorm(l, keyPrefix, rev));
    }
  }
  // §2.8: a direct watch from the list's header.revision + 1 misses nothing and gets nothing older.
  const rvs: Partial<Record<Side, bigint>> = {};
  await pair.same('list for watch', async (c, s) => {
    rvs[s] = (await store(c, s, 'pods').getList({ namespace: 'list', limit: 10_000 })).rv;
  });
  const got: Partial<Record<Side, unknown[]>> = {};
  const writeRv: Partial<Record<Side, bigint>> = {};
  for (const s of ['oracle', 'proxy'] as const) {
    const c = new KubeConnection([s === 'oracle' ? set.oracle!.clientUrl : proxy.url], { name: `${s} sync watch` });
    const w = new KubeWatch(c);
    try {
      w.create({ key: Buffer.from(keyPrefix), rangeEnd: prefixEnd(keyPrefix), startRevision: rvs[s]! + 1n, prevKv: true });
      await w.until(() => w.responses.some((r) => r.created), 5000, 'created');
      const st = store(s === 'oracle' ? pair.oracle : pair.proxy, s, 'pods');
      const u = await st.guaranteedUpdate(st.key('b', 'list'), () => Buffer.from('after the sync list'));
      noteRv(s, u.obj);
      writeRv[s] = u.obj.rv;
      await w.until(() => w.events().length >= 1, 5000, 'the event');
      await sleep(100);
      got[s] = w.events().map((e) => ({ key: e.kv!.key.toString(), value: e.kv!.value.toString(), prev: e.prevKv ? 'set' : 'nil', rv: e.kv!.modRevision === u.obj.rv }));
    } finally {
      w.close();
      c.close();
    }
  }
  assert.deepEqual(got.proxy, got.oracle);
  pair.rev.add({ o: writeRv.oracle!, p: writeRv.proxy! });
  await pair.pairNow();
});

test('§2.2 GetList resourceVersion semantics: Exact RV (and legacy limit+RV) reads the old snapshot; NotOlderThan/"" above the current revision → TooLargeResourceVersion (as etcd)', async () => {
  const rvs: Partial<Record<Side, bigint>> = {};
  await pair.same('rv snapshot', async (c, s) => {
    rvs[s] = (await store(c, s, 'pods').getList({ namespace: 'list-b' })).rv;
    const st = store(c, s, 'pods');
    noteRv(s, (await st.guaranteedUpdate(st.key('a', 'list-b'), () => Buffer.from('changed after the snapshot'))).obj);
  });
  for (const v of VERSIONS) {
    const exact = await pair.same('exact', (c, s) => store(c, s, 'pods', v).getList({ namespace: 'list-b', resourceVersion: rvs[s]!.toString(), match: 'Exact' }));
    assertSameOutcome(exact, 'Exact', (l, rev) => listNorm(l, '/registry/pods/list-b/', rev));
    assert.ok(ok(exact.p, 'exact').items.find((o) => o.key.endsWith('/a'))!.value.toString() !== 'changed after the snapshot');
    const legacy = await pair.same('legacy limit+rv', (c, s) => store(c, s, 'pods', v).getList({ namespace: 'list-b', resourceVersion: rvs[s]!.toString(), limit: 4 }));
    assertSameOutcome(legacy, 'limit+RV', (l, rev) => listNorm(l, '/registry/pods/list-b/', rev));
    const future = await pair.same('not older than', async (c, s) => {
      const cur = await store(c, s, 'pods', v).getCurrentResourceVersion();
      return store(c, s, 'pods', v).getList({ namespace: 'list-b', resourceVersion: (cur + 50n).toString(), match: 'NotOlderThan' });
    });
    assert.ok(!future.o.ok && future.o.kind === 'TooLargeResourceVersion');
    assertSameOutcome(future, 'NotOlderThan', () => null);
  }
});

test('§2.2 non-recursive list of one key: ≥1.32 Range{key, limit 1, revision R}, ≤1.31 Range{key} (as etcd)', async () => {
  for (const v of VERSIONS) {
    const r = await pair.same('listOne', (c, s) => store(c, s, 'pods', v).listOne('/registry/pods/list/b'));
    assertSameOutcome(r, 'listOne', (l, rev) => ({ items: l.items.map((o) => objNorm(o, rev)), rv: (rev ? rev.floor(l.rv) : l.rv).toString() }));
  }
});

test('§2.4 Count: Range{/registry/<res>/, prefixEnd, count_only} → count, no kvs (as etcd)', async () => {
  const r = await pair.same('count', async (c, s) => ({ pods: await store(c, s, 'pods').count(), none: await store(c, s, 'nothing').count() }));
  assert.ok(r.p.ok && r.p.value.pods > 20n && r.p.value.none === 0n);
  assertSameOutcome(r, 'count', (x) => ({ pods: x.pods.toString(), none: x.none.toString() }));
});

// ---------------------------------------------------------------------------
// §6 key layout and special keys

test('§6 special keys: services/specs and services/endpoints share /registry/services/ yet list and count apart; CRD keys /registry/<group>/<plural>/; the /registry/ranges/serviceips allocator; keys and opaque values round-trip byte for byte (as etcd)', async () => {
  const r = await pair.same('special keys', async (c, s) => {
    const specs = store(c, s, 'services/specs');
    const eps = store(c, s, 'services/endpoints');
    const crd = store(c, s, 'apiextensions.k8s.io/customresourcedefinitions');
    const widgets = store(c, s, 'example.com/widgets');
    const ranges = store(c, s, 'ranges');
    for (const name of ['kubernetes', 'kube-dns', 'web']) {
      noteRv(s, (await specs.create(specs.key(name, 'default'), kubeValue('proto', `svc/${name}`))).obj);
      noteRv(s, (await eps.create(eps.key(name, 'default'), kubeValue('enc', `ep/${name}`))).obj);
    }
    noteRv(s, (await crd.create(crd.key('widgets.example.com'), kubeValue('json', 'crd'))).obj);
    noteRv(s, (await widgets.create(widgets.key('w1', 'default'), kubeValue('json', 'w1'))).obj);
    // The service IP allocator: a single key updated with GuaranteedUpdate (origRev 0 first, then from its state).
    noteRv(s, (await ranges.guaranteedUpdate('/registry/ranges/serviceips', () => kubeValue('proto', 'range/0'), { cached: null, ignoreNotFound: true })).obj);
    noteRv(s, (await ranges.guaranteedUpdate('/registry/ranges/serviceips', (cur) => Buffer.concat([cur!.value, Buffer.from([1])]))).obj);
    return {
      specs: await specs.getList({}),
      eps: await eps.getList({ limit: 2 }),
      specsCount: await specs.count(),
      epsCount: await eps.count(),
      crd: await crd.getList({}),
      widgets: await widgets.getList({}),
      range: await ranges.get('/registry/ranges/serviceips'),
    };
  });
  assert.ok(r.p.ok);
  assert.equal(r.p.value.specs.items.length, 3, 'services/specs list holds only specs');
  assert.ok(r.p.value.specs.items.every((o) => o.key.startsWith('/registry/services/specs/')));
  assert.equal(r.p.value.epsCount, 3n);
  assertSameOutcome(r, 'special keys', (x, rev) => ({
    specs: listNorm(x.specs, '/registry/services/specs/', rev),
    eps: listNorm(x.eps, '/registry/services/endpoints/', rev),
    counts: [x.specsCount.toString(), x.epsCount.toString()],
    crd: listNorm(x.crd, '/registry/apiextensions.k8s.io/customresourcedefinitions/', rev),
    widgets: listNorm(x.widgets, '/registry/example.com/widgets/', rev),
    range: objNorm(x.range, rev),
  }));
});

// ---------------------------------------------------------------------------
// §2.12 leases

test('§2.12 lease manager: events with TTL 3600 → one LeaseGrant{TTL 3660} (reuse = min(60, 5%)), reused by the following creates (same ID, ≥1.32 lease field set); the objects carry the lease (as etcd)', async () => {
  const r = await pair.same('event leases', async (c, s) => {
    const st = store(c, s, 'events');
    const ids = new Set<bigint>();
    for (let i = 0; i < 5; i++) {
      const { obj } = await st.create(st.key(`ev-${i}`, 'default'), kubeValue('proto', `event/${i}`), { ttl: 3600 });
      noteRv(s, obj);
      ids.add(st.leases!.prevLeaseId);
    }
    assert.equal(ids.size, 1, `${s}: the cached lease was not reused`);
    assert.equal(st.leases!.grants, 1);
    const grant = c.trace.filter((t) => t.rpc === 'LeaseGrant').at(-1)!;
    assert.equal((grant.req as { TTL: bigint }).TTL, 3660n);
    const l = await st.getList({});
    assert.ok(l.items.length === 5);
    const raw = await c.range({ key: Buffer.from(st.key('ev-0', 'default')) });
    assert.equal(raw.kvs[0]!.lease, st.leases!.prevLeaseId, `${s}: the kv's lease is not the granted lease`);
    return l;
  });
  assertSameOutcome(r, 'event leases', (l, rev) => listNorm(l, '/registry/events/', rev));
});

test('§2.12 lease manager: /registry/masterleases/<ip> with TTL 15 (reuse window int(0.05·15) = 0) grants a new lease on every refresh; old leases are never revoked; the key holds the newest (as etcd)', async () => {
  const r = await pair.same('master leases', async (c, s) => {
    const st = store(c, s, 'masterleases');
    const ids: bigint[] = [];
    for (let i = 0; i < 3; i++) {
      // UpdateLease: GuaranteedUpdate with ignoreNotFound and the TTL.
      const u = await st.guaranteedUpdate(st.key('10.0.0.1'), () => kubeValue('proto', `endpoints/${i}`), { ignoreNotFound: true, ttl: 15 });
      noteRv(s, u.obj);
      ids.push(st.leases!.prevLeaseId);
    }
    assert.equal(new Set(ids).size, 3, `${s}: every refresh must grant a new lease (${ids.join(',')})`);
    const raw = await c.range({ key: Buffer.from(st.key('10.0.0.1')) });
    assert.equal(raw.kvs[0]!.lease, ids[2]);
    // The reconciler lists masterleases without a cache, at rv 0.
    const l = await st.getList({});
    // RemoveLease on shutdown: a plain delete, so the 15 s leases later expire with no key left.
    const d = await st.delete(st.key('10.0.0.1'));
    noteRv(s, { key: d.deleted.key, rv: d.rv });
    return l;
  });
  assertSameOutcome(r, 'master leases', (l, rev) => listNorm(l, '/registry/masterleases/', rev));
});

test('§2.12 lease expiry: a masterlease not refreshed (no KeepAlive, TTL 2) expires with its lease: the key is deleted, with a DELETE event carrying prev_kv (as etcd)', async () => {
  const ttlKey = '/registry/masterleases/10.0.0.2';
  await pair.same('short lease', async (c, s) => {
    const st = store(c, s, 'masterleases');
    const u = await st.guaranteedUpdate(ttlKey, () => kubeValue('proto', 'short'), { ignoreNotFound: true, ttl: 2 });
    noteRv(s, u.obj);
  });
  const deadline = Date.now() + 15_000;
  const delRev: Partial<Record<Side, bigint>> = {};
  for (const s of ['oracle', 'proxy'] as const) {
    const w = watches[s]!;
    await w.until(
      () => w.events().some((e) => e.type === 1 && e.kv!.key.toString() === ttlKey),
      Math.max(1000, deadline - Date.now()),
      `${s}: the DELETE of the expired masterlease`,
    );
    const e = w.events().find((x) => x.type === 1 && x.kv!.key.toString() === ttlKey)!;
    assert.ok(e.prevKv && e.prevKv.value.equals(kubeValue('proto', 'short')), `${s}: the expiry DELETE has no (or a wrong) prev_kv`);
    delRev[s] = e.kv!.modRevision;
    const got = await (s === 'oracle' ? pair.oracle : pair.proxy).range({ key: Buffer.from(ttlKey) });
    assert.equal(got.kvs.length, 0);
  }
  // The expiry's revision pairs the two sides (it is a write on both).
  pair.rev.add({ o: delRev.oracle!, p: delRev.proxy! });
  writtenRvs.oracle.add(`${ttlKey}@${delRev.oracle}`);
  writtenRvs.proxy.add(`${ttlKey}@${delRev.proxy}`);
  await pair.pairNow();
  // The reconciler re-creates it: an ADDED event again (create_revision == mod_revision), no prev_kv.
  const again = await pair.same('re-create after expiry', async (c, s) => {
    const u = await store(c, s, 'masterleases').guaranteedUpdate(ttlKey, () => kubeValue('proto', 'back'), { ignoreNotFound: true, ttl: 15 });
    noteRv(s, u.obj);
    const d = await store(c, s, 'masterleases').delete(ttlKey);
    noteRv(s, { key: ttlKey, rv: d.rv });
    return u.obj;
  });
  assertSameOutcome(again, 're-create', (o, rev) => objNorm(o, rev));
});

test('§2.12 master lease refresh: TTL 2 refreshed every 0.6 s for 4 s — each refresh grants a new lease; as the older leases expire the key, which moved to the newest lease, is never deleted; a key whose lease was dropped by an update (lease 0) outlives its old lease; after refreshes stop the lease key expires (as etcd)', async () => {
  const key = '/registry/masterleases/10.0.0.3';
  const detached = '/registry/configmaps/default/was-leased';
  await pair.same('detach setup', async (c, s) => {
    const st = store(c, s, 'configmaps');
    noteRv(s, (await st.create(detached, Buffer.from('leased'), { ttl: 2 })).obj);
    // An update without a TTL sends lease 0: the key leaves the lease.
    noteRv(s, (await st.guaranteedUpdate(detached, () => Buffer.from('no longer leased'))).obj);
  });
  const t0 = Date.now();
  for (let i = 0; Date.now() - t0 < 4000; i++) {
    await pair.same(`refresh ${i}`, async (c, s) => {
      const st = store(c, s, 'masterleases');
      const u = await st.guaranteedUpdate(key, () => kubeValue('proto', `10.0.0.3 refresh ${i}`), { ignoreNotFound: true, ttl: 2 });
      noteRv(s, u.obj);
    });
    await sleep(600);
  }
  for (const s of ['oracle', 'proxy'] as const) {
    const dels = watches[s]!.events().filter((e) => e.type === 1 && [key, detached].includes(e.kv!.key.toString()));
    assert.deepEqual(dels.map((e) => e.kv!.key.toString()), [], `${s}: a key was deleted by the expiry of a lease it no longer had`);
  }
  // Stop refreshing: the master lease expires with its newest lease; the detached key stays.
  const deadline = Date.now() + 15_000;
  const delRev: Partial<Record<Side, bigint>> = {};
  for (const s of ['oracle', 'proxy'] as const) {
    const w = watches[s]!;
    await w.until(() => w.events().some((e) => e.type === 1 && e.kv!.key.toString() === key), Math.max(1000, deadline - Date.now()), `${s}: the master lease's expiry`);
    delRev[s] = w.events().find((e) => e.type === 1 && e.kv!.key.toString() === key)!.kv!.modRevision;
    writtenRvs[s].add(`${key}@${delRev[s]}`);
  }
  pair.rev.add({ o: delRev.oracle!, p: delRev.proxy! });
  await pair.pairNow();
  const left = await pair.same('detached key survives', (c) => c.range({ key: Buffer.from(detached) }));
  assert.ok(left.p.ok && left.p.value.kvs.length === 1, 'the proxy deleted a key whose lease had been removed by an update');
});

const EXPIRY_PREFIX = '/registry/events/expiry/';

test('§2.12/§4.4 a reused lease expiring: one lease (as the lease manager shares it among up to 1000 events) on 12 event keys spread over members, TTL 3, never kept alive: every key is deleted with a DELETE event carrying prev_kv, none left (the proxy deletes per member — a documented caveat; etcd in one revision)', async () => {
  const ids: Partial<Record<Side, bigint>> = {};
  await pair.same('shared lease', async (c, s) => {
    const grant = await c.leaseGrant(3n);
    ids[s] = grant.ID;
    const st = store(c, s, 'events');
    for (let i = 0; i < 12; i++) {
      const key = `${EXPIRY_PREFIX}ev-${i}`;
      const r = await c.txn({ compare: [{ key: Buffer.from(key), rangeEnd: Buffer.alloc(0), target: 2, result: 0, targetUnion: { $case: 'modRevision', value: 0n } }], success: [{ request: { $case: 'requestPut', value: { key: Buffer.from(key), value: kubeValue('proto', key), lease: grant.ID, prevKv: false, ignoreValue: false, ignoreLease: false } } }], failure: [] });
      assert.ok(r.succeeded);
    }
    return (await st.getList({ namespace: 'expiry' })).items.length;
  });
  const deleted: Partial<Record<Side, string[]>> = {};
  const deadline = Date.now() + 20_000;
  for (const s of ['oracle', 'proxy'] as const) {
    const w = watches[s]!;
    const dels = () => w.events().filter((e) => e.type === 1 && e.kv!.key.toString().startsWith(EXPIRY_PREFIX));
    await w.until(() => dels().length >= 12, Math.max(1000, deadline - Date.now()), `${s}: 12 DELETE events of the expired lease's keys`);
    deleted[s] = dels()
      .map((e) => `${e.kv!.key.toString()} prev=${e.prevKv ? e.prevKv.value.equals(kubeValue('proto', e.kv!.key.toString())) : 'nil'}`)
      .sort();
    const left = await (s === 'oracle' ? pair.oracle : pair.proxy).range({ key: Buffer.from(EXPIRY_PREFIX), rangeEnd: prefixEnd(EXPIRY_PREFIX), countOnly: true });
    assert.equal(left.count, 0n, `${s}: keys of the expired lease are left`);
  }
  assert.deepEqual(deleted.proxy, deleted.oracle);
  assert.ok(deleted.proxy!.every((d) => d.endsWith('prev=true')), 'every DELETE carries the previous value');
  await pair.pairNow();
});

// ---------------------------------------------------------------------------
// §3 / §7 errors that do not need compaction

test('§3 future revision: Range at a revision above the current → OutOfRange "etcdserver: mvcc: required revision is a future revision"; 1.34 GetList maps it to TooLargeResourceVersion (as etcd)', async () => {
  const r = await pair.same('future range', async (c) => {
    const cur = (await c.range({ key: Buffer.from('/registry/pods'), limit: 1n })).header!.revision;
    return c.range({ key: Buffer.from('/registry/pods/'), rangeEnd: prefixEnd('/registry/pods/'), revision: cur + 1000n });
  });
  assert.ok(!r.o.ok && r.o.code === Status.OUT_OF_RANGE && r.o.details === ETCD_ERR.futureRev);
  const l = await pair.same('future list', async (c, s) => {
    const st = store(c, s, 'pods', 'modern');
    const cur = await st.getCurrentResourceVersion();
    return st.getList({ resourceVersion: (cur + 1000n).toString(), match: 'Exact', limit: 5 });
  });
  assert.ok(!l.o.ok && l.o.kind === 'TooLargeResourceVersion');
  assertSameOutcome(l, 'future list', () => null);
});

test('§3/§7 request too large: a create just under the 2 MiB client send limit → InvalidArgument "etcdserver: request is too large" (→ 413); over the gRPC limit → the same status code as etcd; around 1.5 MiB (--max-request-bytes) the same objects are stored or refused as by etcd', async () => {
  const big = Buffer.alloc(2 * 1024 * 1024 - 8 * 1024, 0x6b);
  const r = await pair.same('too large', (c, s) => store(c, s, 'configmaps').create('/registry/configmaps/default/big', big));
  assert.ok(!r.o.ok && r.o.kind === 'RequestEntityTooLarge' && r.o.code === Status.INVALID_ARGUMENT && r.o.details === ETCD_ERR.tooLarge, `etcd: ${js(r.o)}`);
  assertSameOutcome(r, 'too large', () => null);
  const huge = Buffer.alloc(2 * 1024 * 1024 + 64 * 1024, 0x6b);
  const r2 = await pair.run((c, s) => store(c, s, 'configmaps').create('/registry/configmaps/default/huge', huge));
  assert.ok(!r2.o.ok && !r2.p.ok);
  assert.equal(r2.p.code, r2.o.code, `over 2 MiB: proxy ${js(r2.p)} vs etcd ${js(r2.o)}`);
  // Around etcd's --max-request-bytes (1.5 MiB, the largest object kube can store): just under is stored, just over refused.
  for (const [delta, what] of [
    [-600, 'just under 1.5 MiB'],
    [+600, 'just over 1.5 MiB'],
  ] as const) {
    const v = Buffer.alloc(1.5 * 1024 * 1024 + delta, 0x33);
    const r3 = await pair.same(`create ${what}`, async (c, s) => {
      const st = store(c, s, 'configmaps');
      const { obj } = await st.create(`/registry/configmaps/default/edge${delta}`, v);
      noteRv(s, obj);
      // An update of the same size (Txn with an else-branch Range) as well.
      const u = await st.guaranteedUpdate(obj.key, () => Buffer.alloc(v.length, 0x34));
      noteRv(s, u.obj);
      return u.obj;
    });
    assert.equal(r3.o.ok, delta < 0, `etcd: ${what}: ${js(r3.o.ok ? 'stored' : r3.o)}`);
    if (!r3.o.ok) assert.equal(r3.o.kind, 'RequestEntityTooLarge');
    assertSameOutcome(r3, `create ${what}`, (o, rev) => objNorm(o, rev));
  }
  // The store is still usable (and nothing was written).
  const after = await pair.same('after too large', (c, s) => store(c, s, 'configmaps').getList({}));
  assertSameOutcome(after, 'after too large', (l, rev) => listNorm(l, '/registry/configmaps/', rev));
  await pair.same('cleanup', async (c, s) => {
    for (const o of ok(after.o, 'list').items.length ? (await store(c, s, 'configmaps').getList({})).items : []) {
      const d = await store(c, s, 'configmaps').delete(o.key);
      noteRv(s, { key: o.key, rv: d.rv });
    }
  });
});

// ---------------------------------------------------------------------------
// §2.9 compactor, then everything that needs a compaction

const compactors: Record<Side, { a?: KubeCompactor; b?: KubeCompactor }> = { oracle: {}, proxy: {} };

function compactor(c: KubeConnection, s: Side, which: 'a' | 'b'): KubeCompactor {
  return (compactors[s][which] ??= new KubeCompactor(c, which === 'a' ? '1.34' : '1.28'));
}

test('§2.9 compactor: two apiservers on one transport run the CAS on the literal key compact_rev_key (VERSION == t → Put decimal(rev), else Range); the loser reads kvs[0].version (1.34: and value); the winner compacts the previous round\'s revision (physical false) — equal to etcd after mapping', async () => {
  const round = async (which: 'a' | 'b', what: string) => {
    const r = await pair.same(what, (c, s) => compactor(c, s, which).round());
    assertSameOutcome(r, what, (x, rev) => ({
      succeeded: x.succeeded,
      t: x.t.toString(),
      rev: (rev ? rev.floor(x.rev) : x.rev).toString(),
      compacted: (rev && x.compacted !== 0n ? rev.floor(x.compacted) : x.compacted).toString(),
      readCompactRev: x.readCompactRev === undefined ? undefined : (rev && x.readCompactRev !== 0n ? rev.floor(x.readCompactRev) : x.readCompactRev).toString(),
      compactError: x.compactError,
    }));
    return r;
  };
  // 1.34 runWatchLoop: Range{compact_rev_key} (absent yet), then Watch{compact_rev_key, start_revision: header.revision}
  // on its own stream (no hasleader), no prev_kv, no progress_notify.
  const crkWatches: Partial<Record<Side, { w: KubeWatch; c: KubeConnection }>> = {};
  for (const s of ['oracle', 'proxy'] as const) {
    const c = new KubeConnection([s === 'oracle' ? set.oracle!.clientUrl : proxy.url], { name: `${s} compact_rev_key watch` });
    const head = await new KubeCompactor(c).readCompactRevision();
    assert.equal(head.value, undefined);
    const w = new KubeWatch(c, { hasLeader: false });
    w.create({ key: Buffer.from(COMPACT_REV_KEY), startRevision: head.header });
    await w.until(() => w.responses.some((r) => r.created), 5000, 'created');
    crkWatches[s] = { w, c };
  }
  const a1 = await round('a', 'A round 1 (t=0: wins, rev 0 → no compaction)');
  assert.ok(a1.p.ok && a1.p.value.succeeded && a1.p.value.compacted === 0n);
  for (const s of ['oracle', 'proxy'] as const) {
    const { w } = crkWatches[s]!;
    await w.until(() => w.events().length >= 1, 5000, `${s}: the first compactor put on the compact_rev_key watch`);
  }
  const b1 = await round('b', 'B round 1 (t=0: loses, reads version 1)');
  assert.ok(b1.p.ok && !b1.p.value.succeeded && b1.p.value.t === 1n);
  await pair.same('writes between rounds', async (c, s) => {
    const st = store(c, s, 'pods');
    noteRv(s, (await st.guaranteedUpdate(st.key('a', 'list'), () => Buffer.from('between compactions'))).obj);
  });
  const a2 = await round('a', 'A round 2 (t=1: wins, compacts round 1\'s revision)');
  assert.ok(a2.p.ok && a2.p.value.succeeded && a2.p.value.compacted !== 0n && !a2.p.value.compactError, js(a2.p));
  const b2 = await round('b', 'B round 2 (t=1: loses, reads version 2)');
  assert.ok(b2.p.ok && !b2.p.value.succeeded && b2.p.value.t === 2n);
  // 1.34's runWatchLoop read: value = the compacted revision.
  const read = await pair.same('1.34 compact revision read', (c, s) => compactor(c, s, 'a').readCompactRevision());
  assertSameOutcome(read, 'compact revision read', (x, rev) => ({ value: x.value === undefined ? undefined : (rev ? rev.floor(x.value) : x.value).toString() }));
  // compact_rev_key has no /registry prefix: a list of /registry/ does not see it.
  const key = await pair.same('compact_rev_key raw', (c) => c.range({ key: Buffer.from(COMPACT_REV_KEY) }));
  assert.ok(key.p.ok && key.p.value.kvs[0]!.version === 2n);
  const seen: Partial<Record<Side, unknown[]>> = {};
  for (const s of ['oracle', 'proxy'] as const) {
    const { w, c } = crkWatches[s]!;
    await w.until(() => w.events().length >= 2, 5000, `${s}: the two compactor puts on the compact_rev_key watch`);
    seen[s] = w.events().map((e) => eventNorm(e, s === 'proxy' ? pair.rev : undefined));
    w.close();
    c.close();
  }
  assert.deepEqual(seen.proxy, seen.oracle, 'the compact_rev_key watch (1.34 CompactRevision) differs from etcd');
});

test('§3 compacted: a Range below the compacted revision → OutOfRange "etcdserver: mvcc: required revision has been compacted" (exact text), as etcd', async () => {
  const r = await pair.same('compacted range', (c, s) => c.range({ key: Buffer.from('/registry/pods/'), rangeEnd: prefixEnd('/registry/pods/'), revision: compactors[s].a!.compactRevision - 1n }));
  assert.ok(!r.o.ok && r.o.code === Status.OUT_OF_RANGE && r.o.details === ETCD_ERR.compacted, js(r.o));
  const l = await pair.same('compacted exact list', (c, s) => store(c, s, 'pods').getList({ resourceVersion: (compactors[s].a!.compactRevision - 1n).toString(), match: 'Exact' }));
  assert.ok(!l.o.ok && l.o.kind === 'Expired');
  assertSameOutcome(l, 'compacted list', () => null);
});

test('§2.2/§3 410 for paged lists: a continue token whose revision was compacted → compacted error → 410 Expired carrying a continue token at rv -1; continuing from it lists the rest at the latest revision (as etcd)', async () => {
  for (const v of VERSIONS) {
    const tokens: Partial<Record<Side, string>> = {};
    const p1 = await pair.same('page 1', async (c, s) => {
      const l = await store(c, s, 'pods', v).getList({ namespace: 'list-b', limit: 4 });
      tokens[s] = l.continueToken;
      return l;
    });
    assertSameOutcome(p1, 'page 1', (l, rev) => listNorm(l, '/registry/pods/list-b/', rev));
    // Two compactor rounds by A: the second compacts the first's revision, which is above the page's.
    for (let i = 0; i < 2; i++) {
      const r = await pair.same('compact', (c, s) => compactor(c, s, 'a').round());
      assert.ok(r.p.ok && r.p.value.succeeded && !r.p.value.compactError, js(r.p));
    }
    const p2 = await pair.same('page 2 (compacted)', (c, s) => store(c, s, 'pods', v).getList({ namespace: 'list-b', limit: 4, continueToken: tokens[s]! }));
    assert.ok(!p2.o.ok && p2.o.kind === 'Expired' && p2.o.continueToken);
    assertSameOutcome(p2, '410', () => null);
    const c410 = decodeContinue(p2.o.continueToken, '/registry/pods/list-b/');
    assert.equal(c410.rv, -1);
    const t410: Record<Side, string> = { oracle: p2.o.continueToken, proxy: p2.p.ok ? '' : (p2.p.continueToken ?? '') };
    const p3 = await pair.same('continue at rv -1', (c, s) => store(c, s, 'pods', v).getList({ namespace: 'list-b', limit: 4, continueToken: t410[s] }));
    assertSameOutcome(p3, 'continue at rv -1', (l, rev) => listNorm(l, '/registry/pods/list-b/', rev));
    assert.ok(p3.p.ok && p3.p.value.items.length > 0);
  }
  // B catches up with A's version (it lost the CAS meanwhile).
  await pair.same('B round', (c, s) => compactor(c, s, 'b').round());
});

test('§2.9 a compactor that lost the CAS keeps the failed Txn\'s header.revision as rev (on the proxy a revision no write used) and compacts exactly there on its next win: a Range at it works, one below is compacted (as etcd)', async () => {
  const b = await pair.same('B wins', (c, s) => compactor(c, s, 'b').round());
  assert.ok(b.p.ok && b.p.value.succeeded && b.p.value.compacted !== 0n && !b.p.value.compactError, js(b.p));
  assertSameOutcome(b, 'B wins', (x, rev) => ({ t: x.t.toString(), compacted: (rev ? rev.floor(x.compacted) : x.compacted).toString(), compactError: x.compactError }));
  const at = await pair.same('range at the compacted revision', (c, s) => store(c, s, 'pods').getList({ namespace: 'list', resourceVersion: compactors[s].b!.compactRevision.toString(), match: 'Exact' }));
  assertSameOutcome(at, 'at the compacted revision', (l, rev) => listNorm(l, '/registry/pods/list/', rev));
  const below = await pair.same('range below', (c, s) => c.range({ key: Buffer.from('/registry/pods/list/'), rangeEnd: prefixEnd('/registry/pods/list/'), revision: compactors[s].b!.compactRevision - 1n }));
  assert.ok(!below.o.ok && below.o.details === ETCD_ERR.compacted);
  // A keeps up.
  await pair.same('A round', (c, s) => compactor(c, s, 'a').round());
});

test('§4.7 compacted watch: a watch from below the compacted revision gets created, then canceled with compact_revision (the apiserver answers 410 and relists), as etcd', async () => {
  const out: Partial<Record<Side, unknown[]>> = {};
  for (const s of ['oracle', 'proxy'] as const) {
    const conn = new KubeConnection([s === 'oracle' ? set.oracle!.clientUrl : proxy.url], { name: `${s} compacted watch` });
    const w = new KubeWatch(conn);
    try {
      const from = compactors[s].a!.compactRevision - 1n;
      w.create({ key: Buffer.from('/registry/pods/'), rangeEnd: prefixEnd('/registry/pods/'), startRevision: from, prevKv: true, progressNotify: true });
      await w.until(() => w.responses.some((r) => r.compactRevision !== 0n), 5000, `${s}: the compaction cancel`);
      const rev = s === 'proxy' ? pair.rev : undefined;
      out[s] = w.responses.map((r) => ({
        created: r.created,
        canceled: r.canceled,
        compact: rev && r.compactRevision !== 0n ? rev.floor(r.compactRevision).toString() : r.compactRevision.toString(),
        events: r.events.length,
      }));
    } finally {
      w.close();
      conn.close();
    }
  }
  assert.deepEqual(out.proxy, out.oracle);
  const last = out.proxy!.at(-1) as { canceled: boolean; compact: string };
  assert.ok(last.canceled && last.compact !== '0');
});

// ---------------------------------------------------------------------------
// §4.4 / §5 on every event of the suite

test('§4.4/§5 watch events of the whole suite (/registry/ with prev_kv): created ≡ create_revision == mod_revision; prev_kv on every MODIFIED and DELETED; equal to etcd after mapping; every write\'s resourceVersion is its event\'s mod_revision', async () => {
  // A marker write on both sides; wait until both watches have it.
  await pair.same('marker', async (c, s) => noteRv(s, (await store(c, s, 'pods').create('/registry/pods/default/zz-marker', Buffer.from('end'))).obj));
  for (const s of ['oracle', 'proxy'] as const) {
    const w = watches[s]!;
    await w.until(() => w.events().some((e) => e.kv!.key.toString() === '/registry/pods/default/zz-marker'), 10_000, `${s}: the marker event`);
  }
  const o = watches.oracle!.responses;
  const p = watches.proxy!.responses;
  assert.deepEqual(eventRuleViolations(o, 'etcd'), [], 'the oracle itself');
  assert.deepEqual(eventRuleViolations(p, 'proxy'), []);
  // The shared lease's expiry is one revision in etcd and one per member in the proxy (documented): compared apart, above.
  const inSeq = (e: { kv?: { key: Buffer } }) => !e.kv!.key.toString().startsWith(EXPIRY_PREFIX) || e.kv!.key.length === 0 || false;
  const expiryDeletes = (r: typeof o) => r.flatMap((x) => x.events).filter((e) => e.type === 1 && !inSeq(e));
  assert.equal(expiryDeletes(p).length, expiryDeletes(o).length);
  const on = o.flatMap((r) => r.events).filter((e) => inSeq(e) || e.type !== 1).map((e) => eventNorm(e));
  const pn = p.flatMap((r) => r.events).filter((e) => inSeq(e) || e.type !== 1).map((e) => eventNorm(e, pair.rev));
  assert.ok(on.length > 80, `only ${on.length} events`);
  if (process.env.KUBE_DEBUG) console.log(js(pn.slice(0, 3)), js(on.slice(0, 3)));
  assert.deepEqual(pn, on, 'the proxy\'s events differ from etcd\'s');
  for (const s of ['oracle', 'proxy'] as const) {
    const evs = new Set(watches[s]!.events().map((e) => `${e.kv!.key.toString('latin1')}@${e.kv!.modRevision}`));
    const missing = [...writtenRvs[s]].filter((k) => !evs.has(k));
    assert.deepEqual(missing, [], `${s}: resourceVersions returned by writes with no event at that mod_revision`);
  }
  // Headers on the watch stream never go down.
  let last = 0n;
  for (const r of p) {
    if (r.compactRevision !== 0n) continue;
    const h = r.header?.revision ?? 0n;
    assert.ok(h >= last, `proxy watch header went down from ${last} to ${h}`);
    last = h;
  }
  await sleep(0);
});
