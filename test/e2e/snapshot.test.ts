// `metaetcd snapshot save` / `restore` as a user runs them (bin/metaetcd.js as a
// child process), against real etcd: a meta cluster of 3 members is saved and
// restored onto a fresh one of 2 members, where a full Range must match the
// original key by key (values, create/mod revisions, versions, leases); a
// corrupted file is refused; a restore into one plain etcd keeps keys and values.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { KeyValue } from '../../src/proto/gen/kv.js';
import { defaultScratchRoot } from '../../src/sandbox/etcd-process.js';
import { metaetcd, ok } from '../harness/cli.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { etcdctl } from '../harness/etcdctl.js';
import { buildIfStale } from '../harness/faults.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';

const ALL = Buffer.from([0]);
const BOUND = { timeout: 120_000 };

let src: EtcdSet;
let dst: EtcdSet;
let srcProxy: TestProxy;
let sp: EtcdClient;
let dir: string;
let file: string;
/** The full Range through the source proxy at the snapshot's revision. */
let before_: { revision: number; kvs: KeyValue[] };
let leaseA: bigint;
let leaseB: bigint;
const clients: EtcdClient[] = [];
const proxies: TestProxy[] = [];

const memberFlags = (set: EtcdSet) => ['--coordinator', set.coordinator.clientUrl, '--members', set.members.map((m) => m.clientUrl).join(',')];

async function fullRange(c: EtcdClient, revision = 0n): Promise<{ revision: number; kvs: KeyValue[] }> {
  const resp = await c.range({ key: ALL, rangeEnd: ALL, revision });
  return { revision: Number(resp.header!.revision), kvs: resp.kvs };
}

const show = (kv: KeyValue) => ({
  key: kv.key.toString('latin1'),
  value: kv.value.toString('latin1'),
  createRevision: Number(kv.createRevision),
  modRevision: Number(kv.modRevision),
  version: Number(kv.version),
  lease: kv.lease.toString(),
});

before(async () => {
  buildIfStale();
  dir = mkdtempSync(join(defaultScratchRoot(), 'metaetcd-snapshot-'));
  file = join(dir, 'meta.snap');
  [src, dst] = await Promise.all([startEtcdSet({ name: 'snap-src', members: 3 }), startEtcdSet({ name: 'snap-dst', members: 2, oracle: true })]);
  srcProxy = await startTestProxy(src);
  proxies.push(srcProxy);
  sp = clientFor(srcProxy.url, 'source proxy');
  clients.push(sp);

  // A few hundred keys: puts, updates, deletes, a multi-key transaction, leases, odd bytes.
  leaseA = (await sp.leaseGrant({ ID: 0n, TTL: 600n })).ID;
  leaseB = (await sp.leaseGrant({ ID: 0n, TTL: 300n })).ID;
  const key = (i: number) => Buffer.from(`k/${String(i).padStart(4, '0')}`);
  for (let i = 0; i < 300; i += 10) {
    await Promise.all(Array.from({ length: 10 }, (_, j) => sp.put({ key: key(i + j), value: Buffer.from(`v${i + j}`) })));
  }
  for (let i = 0; i < 300; i += 3) await sp.put({ key: key(i), value: Buffer.from(`v${i}-2`) });
  for (let i = 0; i < 300; i += 9) await sp.put({ key: key(i), value: Buffer.from(`v${i}-3`) });
  for (let i = 5; i < 300; i += 7) await sp.deleteRange({ key: key(i) });
  for (let i = 0; i < 20; i++) await sp.put({ key: Buffer.from(`lease/a/${i}`), value: Buffer.from(`a${i}`), lease: leaseA });
  for (let i = 0; i < 10; i++) await sp.put({ key: Buffer.from(`lease/b/${i}`), value: Buffer.from(`b${i}`), lease: leaseB });
  // One transaction writing three keys (of one member: cross-member transactions are refused), one revision.
  const home = srcProxy.handle.router.memberOf(Buffer.from('txn/0'));
  const together = Array.from({ length: 100 }, (_, i) => Buffer.from(`txn/${i}`)).filter((k) => srcProxy.handle.router.memberOf(k) === home).slice(0, 3);
  await sp.txnPartial({ success: together.map((k) => ({ request: { $case: 'requestPut' as const, value: { key: k, value: k } } })) });
  await sp.put({ key: Buffer.from([0x01, 0xff, 0x00, 0x0a]), value: Buffer.from([0x00, 0x0d, 0x0a, 0xff]) });
  await sp.put({ key: Buffer.from('empty-value'), value: Buffer.alloc(0) });
  await sp.put({ key: Buffer.from('big'), value: Buffer.alloc(200_000, 0x61) });
});

after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.stop().catch(() => undefined);
  await Promise.all([src?.stop(), dst?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('snapshot save writes the keyspace at one revision, while writes go on', BOUND, async () => {
  const start = await fullRange(sp);
  assert.ok(start.kvs.length > 250, `only ${start.kvs.length} keys`);
  // Writers on every member during the save: new keys, updates and deletes.
  let writing = true;
  let n = 0;
  const writer = (async () => {
    while (writing) {
      const i = n++;
      await sp.put({ key: Buffer.from(`busy/${i % 50}`), value: Buffer.from(`w${i}`) });
      await sp.put({ key: Buffer.from(`k/${String((i * 7) % 300).padStart(4, '0')}`), value: Buffer.from(`during-${i}`) });
      if (i % 5 === 4) await sp.deleteRange({ key: Buffer.from(`busy/${(i * 3) % 50}`) });
    }
  })();
  const r = await metaetcd(['snapshot', 'save', file, ...memberFlags(src), '--page-size', '37']).finally(() => (writing = false));
  await writer;
  ok(r, 'snapshot save');
  assert.ok(n > 3, `only ${n} writes during the save`);

  const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
  const header = JSON.parse(lines[0]!) as { format: string; revision: number; keys: number };
  assert.equal(header.format, 'metaetcd-snapshot');
  assert.ok(header.revision >= start.revision);
  assert.match(lines[lines.length - 1]!, /"sha256":"[0-9a-f]{64}"/);
  // Exactly the keyspace at the snapshot's revision, as the proxy reads it there.
  before_ = await fullRange(sp, BigInt(header.revision));
  assert.equal(header.keys, before_.kvs.length);
  assert.match(r.stderr, new RegExp(`${before_.kvs.length} keys, 2 leases at revision ${header.revision}`));
  const saved = lines
    .slice(1, -1)
    .map((l) => JSON.parse(l) as { t: string; k: string; v: string; c: number; m: number; ver: number; l: string })
    .filter((o) => o.t === 'kv')
    .map((o) => ({ key: Buffer.from(o.k, 'base64').toString('latin1'), value: Buffer.from(o.v, 'base64').toString('latin1'), createRevision: o.c, modRevision: o.m, version: o.ver, lease: o.l }));
  assert.deepEqual(saved, before_.kvs.map(show));
  before_ = { revision: header.revision, kvs: before_.kvs };
});

test('a corrupted snapshot is refused before anything is written', BOUND, async () => {
  const bytes = readFileSync(file);
  const corrupt = Buffer.from(bytes);
  const at = Math.floor(bytes.length / 2);
  corrupt[at] = corrupt[at]! ^ 0x01;
  const bad = join(dir, 'corrupt.snap');
  writeFileSync(bad, corrupt);
  const r = await metaetcd(['snapshot', 'restore', bad, ...memberFlags(dst)]);
  assert.notEqual(r.code, 0, r.stderr);
  assert.match(r.stderr, /not a valid metaetcd snapshot/);
  // A change that keeps the file well-formed (one base64 character of a value) is caught by the checksum.
  const text = bytes.toString('latin1');
  const v = text.indexOf('"v":"', text.indexOf(`"k":"${Buffer.from('k/0001').toString('base64')}"`)) + 5;
  const subtle = join(dir, 'subtle.snap');
  writeFileSync(subtle, text.slice(0, v) + (text[v] === 'A' ? 'B' : 'A') + text.slice(v + 1), 'latin1');
  const s = await metaetcd(['snapshot', 'restore', subtle, ...memberFlags(dst)]);
  assert.notEqual(s.code, 0, s.stderr);
  assert.match(s.stderr, /checksum mismatch/);
  const truncated = join(dir, 'truncated.snap');
  writeFileSync(truncated, bytes.subarray(0, bytes.length - 10));
  const t = await metaetcd(['snapshot', 'restore', truncated, '--etcd', dst.oracle!.clientUrl]);
  assert.notEqual(t.code, 0, t.stderr);
  assert.match(t.stderr, /not a valid metaetcd snapshot/);
  // Saving clusters no proxy has bootstrapped is refused too (it would make them a meta cluster).
  const fresh = await metaetcd(['snapshot', 'save', join(dir, 'fresh.snap'), ...memberFlags(dst)]);
  assert.notEqual(fresh.code, 0, fresh.stderr);
  assert.match(fresh.stderr, /not a meta cluster/);
  // Nothing was written.
  for (const m of [...dst.members, dst.coordinator, dst.oracle!]) {
    const c = clientFor(m.clientUrl);
    clients.push(c);
    assert.equal((await c.range({ key: ALL, rangeEnd: ALL, countOnly: true })).count, 0n, `${m.clientUrl} was written to`);
  }
});

test('snapshot restore onto fresh members reproduces every key with its revisions, version and lease', BOUND, async () => {
  const r = ok(await metaetcd(['snapshot', 'restore', file, ...memberFlags(dst)]), 'snapshot restore');
  assert.match(r.stderr, /2 members/);
  const proxy = await startTestProxy(dst);
  proxies.push(proxy);
  const dp = clientFor(proxy.url, 'restored proxy');
  clients.push(dp);

  const restored = await fullRange(dp);
  assert.ok(restored.revision >= before_.revision, `revision ${restored.revision} < ${before_.revision}`);
  assert.deepEqual(restored.kvs.map(show), before_.kvs.map(show));
  // The snapshot's own revision reads the same.
  assert.deepEqual((await fullRange(dp, BigInt(before_.revision))).kvs.map(show), before_.kvs.map(show));

  // Leases: same IDs, alive, keys attached.
  const ttlA = await dp.leaseTimeToLive({ ID: leaseA, keys: true });
  assert.ok(ttlA.TTL > 500n, `lease A TTL ${ttlA.TTL}`);
  assert.deepEqual(
    ttlA.keys.map((k) => Buffer.from(k).toString()).sort(),
    Array.from({ length: 20 }, (_, i) => `lease/a/${i}`).sort(),
  );
  const ttlB = await dp.leaseTimeToLive({ ID: leaseB, keys: true });
  assert.ok(ttlB.TTL > 200n && ttlB.TTL <= 300n, `lease B TTL ${ttlB.TTL}`);
  assert.equal(ttlB.keys.length, 10);

  // New writes continue above the snapshot's revision.
  const put = await dp.put({ key: Buffer.from('k/0000'), value: Buffer.from('new'), prevKv: true });
  assert.ok(Number(put.header!.revision) > before_.revision);
  assert.equal(put.prevKv?.value.toString(), before_.kvs.find((kv) => kv.key.toString() === 'k/0000')!.value.toString());
  const after = (await dp.range({ key: Buffer.from('k/0000') })).kvs[0]!;
  assert.equal(Number(after.modRevision), Number(put.header!.revision));
  assert.equal(Number(after.version), Number(before_.kvs.find((kv) => kv.key.toString() === 'k/0000')!.version) + 1);
  // Watches need history from R+1 on: from R (whose changes the restore does not replay) they are cancelled as compacted.
  const atR = await etcdctl(proxy.endpoint, ['watch', '--rev', String(before_.revision), 'k/', '--prefix'], { timeoutMs: 30_000 });
  assert.notEqual(atR.code, 0);
  assert.match(atR.stderr, /compacted/);
  // Watches from after the snapshot see the new write.
  const stop = new AbortController();
  const watched = etcdctl(proxy.endpoint, ['watch', '--rev', String(before_.revision + 1), 'k/0000'], {
    stop: stop.signal,
    timeoutMs: 30_000,
    onStdout: (out) => {
      if (out.includes('new')) stop.abort();
    },
  });
  assert.match((await watched).stdout, /PUT\nk\/0000\nnew/);
  // Revoking a restored lease deletes its keys.
  await dp.leaseRevoke({ ID: leaseB });
  assert.equal((await dp.range({ key: Buffer.from('lease/b/'), rangeEnd: Buffer.from('lease/b0'), countOnly: true })).count, 0n);
  // History before the snapshot is not there: compacted.
  await assert.rejects(dp.range({ key: ALL, rangeEnd: ALL, revision: BigInt(before_.revision - 1) }), /compacted/);

  // A second restore onto the same (now non-empty) clusters is refused.
  const again = await metaetcd(['snapshot', 'restore', file, ...memberFlags(dst)]);
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /is not empty/);
});

test('snapshot restore into one plain etcd keeps keys, values, leases and the order of changes', BOUND, async () => {
  ok(await metaetcd(['snapshot', 'restore', file, '--etcd', dst.oracle!.clientUrl]), 'snapshot restore --etcd');
  const oc = clientFor(dst.oracle!.clientUrl, 'oracle');
  clients.push(oc);
  const got = (await fullRange(oc)).kvs;
  assert.deepEqual(
    got.map((kv) => [kv.key.toString('latin1'), kv.value.toString('latin1'), kv.lease.toString()]),
    before_.kvs.map((kv) => [kv.key.toString('latin1'), kv.value.toString('latin1'), kv.lease.toString()]),
  );
  // Renumbered, but in the original order of changes.
  const byOriginal = [...before_.kvs].sort((a, b) => Number(a.modRevision - b.modRevision)).map((kv) => kv.key.toString('latin1'));
  const byNew = [...got].sort((a, b) => Number(a.modRevision - b.modRevision)).map((kv) => kv.key.toString('latin1'));
  assert.deepEqual(byNew, byOriginal);
  const ttl = await oc.leaseTimeToLive({ ID: leaseA, keys: true });
  assert.equal(ttl.keys.length, 20);
});
