// etcdctl scenarios, each run against a plain etcd (the oracle) and against the
// proxy over three members, with the outputs compared.
//
// Revisions differ between the two targets (the proxy may consume revision
// numbers that no event uses), so every revision shown is normalised to "the
// number of writes of this file with revision <= R" (W<n>): both targets then
// print the same thing exactly when they report the same snapshot. Lease IDs
// are normalised to the order they were granted in. cluster_id, member_id and
// raft_term are dropped from the compared output (and checked separately).

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { EtcdProcess } from '../../src/sandbox/etcd-process.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { etcdctl, type EtcdctlResult } from '../harness/etcdctl.js';
import { startTestProxy, type TestProxy } from '../harness/proxy.js';

type Target = 'oracle' | 'proxy';
const TARGETS: Target[] = ['oracle', 'proxy'];

let set: EtcdSet;
let proxy: TestProxy;
const endpoint: Record<Target, string> = { oracle: '', proxy: '' };

/** Revisions of the writes made by this file, per target, in order (index i on both = the same write). */
const revs: Record<Target, bigint[]> = { oracle: [], proxy: [] };
/** Lease IDs granted by this file, per target (decimal strings), in order. */
const leases: Record<Target, string[]> = { oracle: [], proxy: [] };

before(async () => {
  set = await startEtcdSet({ oracle: true, name: 'etcdctl' });
  proxy = await startTestProxy(set);
  endpoint.oracle = set.oracle!.clientUrl;
  endpoint.proxy = proxy.endpoint;
});
after(async () => {
  await proxy?.stop();
  await set?.stop();
});

// ---------------------------------------------------------------------------
// Helpers

type PerTarget<T> = T | ((t: Target) => T);
const pick = <T>(v: PerTarget<T>, t: Target): T => (typeof v === 'function' ? (v as (t: Target) => T)(t) : v);

async function both(args: PerTarget<string[]>, input?: PerTarget<string>): Promise<Record<Target, EtcdctlResult>> {
  const [oracle, prox] = await Promise.all(
    TARGETS.map((t) => etcdctl(endpoint[t], pick(args, t), input === undefined ? {} : { input: pick(input, t) })),
  );
  return { oracle: oracle!, proxy: prox! };
}

/** JSON.parse that keeps 64-bit integers (ids) exact, as strings; skips `txn -i` prompts. */
function parseJson(text: string): unknown {
  const body = text
    .split('\n')
    .filter((l) => !/^(compares|success requests \(get, put, del\)|failure requests \(get, put, del\)):$/.test(l))
    .join('\n');
  return JSON.parse(body.replace(/([:,[]\s*)(-?\d{16,})(?=\s*[,}\]])/g, '$1"$2"'));
}

function normRev(t: Target, r: bigint): string {
  return `W${revs[t].filter((w) => w <= r).length}`;
}

function normLeaseDec(t: Target, id: string): string {
  const i = leases[t].indexOf(id);
  return i < 0 ? `L?${id}` : `L${i}`;
}

const REV_FIELDS = new Set(['revision', 'create_revision', 'mod_revision', 'compact_revision']);
const DROP_FIELDS = new Set(['cluster_id', 'member_id', 'raft_term']);

/** Normalises a parsed etcdctl JSON document of target t. */
function norm(t: Target, v: unknown): unknown {
  if (Array.isArray(v)) return v.map((x) => norm(t, x));
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (DROP_FIELDS.has(k)) continue;
    if (REV_FIELDS.has(k)) out[k] = normRev(t, BigInt(x as string | number));
    else if ((k === 'lease' || k === 'id' || k === 'ID') && (typeof x === 'number' || typeof x === 'string')) out[k] = normLeaseDec(t, String(x));
    else out[k] = norm(t, x);
  }
  return out;
}

/** etcdctl's stderr without the client library's retry log lines (they name random client ids). */
function cleanStderr(s: string): string {
  return s
    .split('\n')
    .filter((l) => !l.startsWith('{"level":'))
    .join('\n')
    .trim();
}

/** Lease IDs in simple output are hex; map them to their grant order. */
function normText(t: Target, s: string): string {
  let out = s;
  leases[t].forEach((dec, i) => {
    out = out.split(BigInt(dec).toString(16).padStart(16, '0')).join(`L${i}`);
    out = out.split(BigInt(dec).toString(16)).join(`L${i}`);
  });
  return out;
}

function describe(r: EtcdctlResult): string {
  return `code ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/** Runs the same command on both targets; asserts same exit code, stdout and (cleaned) stderr. */
async function same(args: PerTarget<string[]>, input?: PerTarget<string>): Promise<Record<Target, EtcdctlResult>> {
  const r = await both(args, input);
  const view = (t: Target) => ({ code: r[t].code, stdout: normText(t, r[t].stdout), stderr: normText(t, cleanStderr(r[t].stderr)) });
  assert.deepEqual(view('proxy'), view('oracle'), `etcdctl ${JSON.stringify(pick(args, 'proxy'))}\noracle: ${describe(r.oracle)}\nproxy: ${describe(r.proxy)}`);
  return r;
}

/** Runs with -w json on both; asserts success and equal normalised documents; returns the parsed docs. */
async function sameJson(args: PerTarget<string[]>, input?: PerTarget<string>): Promise<Record<Target, Record<string, unknown>>> {
  const r = await both((t) => ['-w', 'json', ...pick(args, t)], input);
  for (const t of TARGETS) assert.equal(r[t].code, 0, `${t}: etcdctl ${pick(args, t).join(' ')}: ${describe(r[t])}`);
  const doc = { oracle: parseJson(r.oracle.stdout), proxy: parseJson(r.proxy.stdout) } as Record<Target, Record<string, unknown>>;
  assert.deepEqual(norm('proxy', doc.proxy), norm('oracle', doc.oracle), `etcdctl ${pick(args, 'proxy').join(' ')}\noracle: ${r.oracle.stdout}\nproxy: ${r.proxy.stdout}`);
  return doc;
}

function headerRev(doc: Record<string, unknown>): bigint {
  const h = (doc.header ?? doc) as Record<string, unknown>;
  return BigInt(h.revision as string | number);
}

/**
 * A write on both targets (with -w json). When the oracle's revision advanced, the
 * write is recorded, and the proxy's revision must have advanced past every earlier
 * write of the proxy too. Returns the parsed docs (compared after normalisation).
 */
async function write(args: PerTarget<string[]>, input?: PerTarget<string>): Promise<Record<Target, Record<string, unknown>>> {
  const r = await both((t) => ['-w', 'json', ...pick(args, t)], input);
  for (const t of TARGETS) assert.equal(r[t].code, 0, `${t}: etcdctl ${pick(args, t).join(' ')}: ${describe(r[t])}`);
  const doc = { oracle: parseJson(r.oracle.stdout), proxy: parseJson(r.proxy.stdout) } as Record<Target, Record<string, unknown>>;
  const o = headerRev(doc.oracle);
  const p = headerRev(doc.proxy);
  const lastO = revs.oracle.at(-1) ?? 0n;
  const lastP = revs.proxy.at(-1) ?? 0n;
  if (o > lastO) {
    assert.ok(p > lastP, `proxy write revision ${p} is not above its previous write ${lastP}`);
    revs.oracle.push(o);
    revs.proxy.push(p);
  }
  assert.deepEqual(norm('proxy', doc.proxy), norm('oracle', doc.oracle), `etcdctl ${pick(args, 'proxy').join(' ')}\noracle: ${r.oracle.stdout}\nproxy: ${r.proxy.stdout}`);
  return doc;
}

async function putAll(entries: [string, string][]): Promise<void> {
  for (const [k, v] of entries) await write(['put', k, v]);
}

/** The revision of write #i (0-based) of this file on target t. */
const revOf = (t: Target, i: number): string => String(revs[t][i]!);

// ---------------------------------------------------------------------------
// Scenarios

test('put: simple output, json header, --prev-kv, empty value, value from stdin', async () => {
  await same(['put', 'p/a', '1']);
  // Record the simple put's revision through a read of its mod_revision.
  const got = await sameJson(['get', 'p/a']);
  revs.oracle.push(BigInt((got.oracle.kvs as { mod_revision: number }[])[0]!.mod_revision));
  revs.proxy.push(BigInt((got.proxy.kvs as { mod_revision: number }[])[0]!.mod_revision));
  assert.equal(normRev('proxy', headerRev(got.proxy)), `W${revs.proxy.length}`);

  await write(['put', 'p/a', '2', '--prev-kv']);
  await write(['put', 'p/b', '']);
  await write(['put', 'p/c'], 'from stdin');
  await write(['put', 'p/d', '--', '-dash-value']);
  await write(['put', 'p/a', '--ignore-value', '--prev-kv']); // new revision, same value
  await same(['put', 'p/missing', '--ignore-value']); // etcd's "key not found"
  await sameJson(['get', 'p/', '--prefix']);
  await same(['get', 'p/', '--prefix']);
  // Validation errors match.
  await same(['put', 'p/x']); // no value on an empty stdin
  await same(['put', '', 'v']);
});

test('get: plain, --prefix, --from-key, range, --limit, --keys-only, --print-value-only, count', async () => {
  await putAll([
    ['g/b', 'vb'],
    ['g/a', 'va'],
    ['g/c', 'vc'],
    ['g/a', 'va2'],
    ['g/d/x', 'vdx'],
    ['g/e', 've'],
    ['h/1', 'h1'],
  ]);
  await same(['get', 'g/a']);
  await same(['get', 'g/nope']);
  await sameJson(['get', 'g/a']);
  await sameJson(['get', 'g/nope']);
  await same(['get', 'g/', '--prefix']);
  await sameJson(['get', 'g/', '--prefix']);
  await same(['get', 'g/b', 'g/d']); // [g/b, g/d)
  await same(['get', 'g/c', '--from-key']);
  for (const limit of ['1', '2', '5', '6', '100']) {
    await sameJson(['get', 'g/', '--prefix', `--limit=${limit}`]); // count, more
    await same(['get', 'g/', '--prefix', `--limit=${limit}`]);
  }
  await same(['get', 'g/', '--prefix', '--keys-only']);
  await sameJson(['get', 'g/', '--prefix', '--keys-only']);
  await same(['get', 'g/', '--prefix', '--print-value-only']);
  await same(['get', 'g/', '--prefix', '--keys-only', '--limit=2']);
  // The whole keyspace, every key once (no bookkeeping keys visible).
  await same(['get', '', '--prefix']);
  await same(['get', '', '--prefix', '--keys-only']);
  // Count: etcdctl 3.4 has no --count-only (added in 3.5); both must reject it the same way,
  // and the count itself is compared through json (count is the total, not the page).
  await same(['get', 'g/', '--prefix', '--count-only']);
  const c = await sameJson(['get', 'g/', '--prefix', '--limit=1', '--keys-only']);
  assert.equal(Number(c.proxy.count), 5);
  await sameJson(['get', '', '--prefix', '--limit=1']);
  await same(['get', 'g/a', '--consistency=s']);
});

test('get --sort-by=KEY/VERSION/CREATE/MODIFY/VALUE with --order, and with --limit', async () => {
  // Key order, create order, mod order, value order and version order all differ; versions tie.
  await putAll([
    ['s/c', 'm'],
    ['s/a', 'z'],
    ['s/e', 'a'],
    ['s/b', 'q'],
    ['s/d', 'b'],
    ['s/a', 'y'],
    ['s/e', 'c'],
    ['s/a', 'x'],
    ['s/c', 'n'],
  ]);
  for (const by of ['KEY', 'VERSION', 'CREATE', 'MODIFY', 'VALUE']) {
    for (const order of [[], ['--order=ASCEND'], ['--order=DESCEND']]) {
      await same(['get', 's/', '--prefix', `--sort-by=${by}`, ...order]);
      await sameJson(['get', 's/', '--prefix', `--sort-by=${by}`, ...order, '--limit=2']);
    }
  }
  await same(['get', 's/', '--prefix', '--order=DESCEND']);
  await same(['get', 's/', '--prefix', '--sort-by=MODIFY', '--order=DESCEND', '--keys-only', '--limit=3']);
  await same(['get', '', '--prefix', '--sort-by=CREATE', '--order=DESCEND', '--keys-only']);
});

test('get --rev at every past revision of this file equals the oracle at the same write', async () => {
  const n = revs.oracle.length;
  assert.ok(n > 10);
  for (let i = 0; i < n; i++) {
    await same((t) => ['get', '', '--prefix', `--rev=${revOf(t, i)}`]);
    if (i % 4 === 0) await sameJson((t) => ['get', '', '--prefix', `--rev=${revOf(t, i)}`]);
    // A proxy revision between two writes (one no event used) shows the state after the earlier write.
    if (i + 1 < n && revs.proxy[i + 1]! - revs.proxy[i]! > 1n) {
      const between = String(revs.proxy[i + 1]! - 1n);
      const r = await both((t) => ['get', '', '--prefix', `--rev=${t === 'proxy' ? between : revOf(t, i)}`]);
      assert.equal(r.proxy.code, 0, describe(r.proxy));
      assert.equal(r.proxy.stdout, r.oracle.stdout, `proxy at empty revision ${between}`);
    }
  }
  await same((t) => ['get', 'g/', '--prefix', `--rev=${revOf(t, 9)}`, '--sort-by=VALUE', '--order=DESCEND', '--limit=2']);
  // Future revision: etcd's error.
  await same((t) => ['get', 'g/a', `--rev=${String(revs[t].at(-1)! + 1000n)}`]);
});

test('del: single, missing, --prefix (keys on several members), --prev-kv, range', async () => {
  await putAll([
    ['d/a', '1'],
    ['d/b', '2'],
    ['d/c', '3'],
    ['d/d', '4'],
    ['d/e', '5'],
    ['d/f', '6'],
    ['d/g', '7'],
    ['d/h', '8'],
    ['d2/x', 'x'],
  ]);
  const members = new Set(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].map((k) => proxy.handle.router.memberOf(Buffer.from(`d/${k}`))));
  assert.ok(members.size > 1, 'the d/ keys should span members');

  await same(['del', 'd/a']);
  // (simple del output has no revision to record; read it back from a get header instead)
  await sameJsonRecordingHeader();
  await same(['get', 'd/', '--prefix']);
  await write(['del', 'd/missing']);
  await write(['del', 'd/b', '--prev-kv']);
  await write(['del', 'd/c', 'd/e']); // [d/c, d/e)
  await write(['del', 'd/', '--prefix', '--prev-kv']); // prev_kvs in key order, deleted summed
  await same(['get', 'd', '--prefix']);
  await same(['del', 'd2/', '--prefix', '--prev-kv']);
  await same(['get', 'd2/x']);
});

test('txn -i on keys of one member: success and failure branches', async () => {
  // Three keys on one member.
  const byMember = new Map<number, string[]>();
  for (let i = 0; i < 60; i++) {
    const k = `txn/k${i}`;
    const m = proxy.handle.router.memberOf(Buffer.from(k));
    byMember.set(m, [...(byMember.get(m) ?? []), k]);
  }
  const [k1, k2, k3] = [...byMember.values()].sort((a, b) => b.length - a.length)[0]!;
  assert.ok(k1 && k2 && k3);
  await write(['put', k1, 'one']);
  await write(['put', k2, 'two']);
  await write(['put', k2, 'two-b']);
  const k1Rev = revs.oracle.length - 3;

  // Success branch; the MOD compare names each target's own revision of the put of k1.
  const script1 = (t: Target) =>
    [
      `value("${k1}") = "one"`,
      `mod("${k1}") = "${revOf(t, k1Rev)}"`,
      `version("${k2}") = "2"`,
      `create("${k3}") = "0"`,
      '',
      `put ${k3} three`,
      `put ${k1} one-b`,
      `get ${k2}`,
      '',
      `put ${k1} failed`,
      '',
      '',
    ].join('\n');
  const okSimple = await both(['txn', '-i'], script1);
  for (const t of TARGETS) assert.equal(okSimple[t].code, 0, describe(okSimple[t]));
  assert.equal(okSimple.proxy.stdout, okSimple.oracle.stdout);
  assert.match(okSimple.proxy.stdout, /SUCCESS/);
  // (simple txn output has no revision: record it from the new key's mod_revision)
  const k3doc = await sameJsonRecording(k3);
  assert.equal((k3doc.proxy.kvs as unknown[]).length, 1);

  // Failure branch (value differs now), with json output compared.
  const script2 = [
      `value("${k1}") = "one"`,
      `mod("${k2}") > "0"`,
      '',
      `put ${k1} never`,
      '',
      `put ${k2} two-c`,
      `del ${k3}`,
      `get ${k1}`,
      `get ${k3}`,
      '',
      '',
    ].join('\n');
  const fail = await write(['txn', '-i'], script2);
  assert.equal(fail.proxy.succeeded ?? false, false);
  await same(['get', 'txn/', '--prefix']);

  // Success again through json, with --prev-kv style gets and a compare on a missing key's version.
  const script3 = [`version("${k3}") = "0"`, `value("${k2}") = "two-c"`, '', `put ${k3} again`, `get ${k3}`, `del ${k2} --prev-kv`, '', '', ''].join('\n');
  const ok2 = await write(['txn', '-i'], script3);
  assert.equal(ok2.proxy.succeeded, true);
  await same(['get', 'txn/', '--prefix']);
  await sameJson(['get', 'txn/', '--prefix']);

  // Read-only branch: output compared in simple form (no revision shown).
  const script4 = [`value("${k1}") = "nope"`, '', `put ${k1} never`, '', `get ${k1}`, `get ${k3}`, '', ''].join('\n');
  await same(['txn', '-i'], script4);

  // Across members (issue 15): a writing transaction over keys of two members (compare on
  // one, puts on both, a read of the other after the writes) is applied atomically, as etcd applies it.
  const other = [...byMember.entries()].find(([m]) => m !== proxy.handle.router.memberOf(Buffer.from(k1)))![1][0]!;
  const scriptX = [`value("${k1}") = "one-b"`, '', `put ${other} cross`, `put ${k1} cross`, `get ${other}`, '', `put ${other} never`, '', ''].join('\n');
  const cross = await write(['txn', '-i'], scriptX);
  assert.equal(cross.proxy.succeeded, true);
  await same(['get', 'txn/', '--prefix']);
  await sameJson(['get', 'txn/', '--prefix']);
  const crossRevs = await both(['get', 'txn/', '--prefix', '-w', 'json']);
  const modsOf = (stdout: string) => (((parseJson(stdout) as { kvs?: unknown }).kvs as { key: string; mod_revision: number | string }[]) ?? []).filter((kv) => [k1, other].includes(Buffer.from(kv.key, 'base64').toString())).map((kv) => String(kv.mod_revision));
  const mods = modsOf(crossRevs.proxy.stdout);
  assert.equal(mods.length, 2, `both keys of the cross-member transaction: ${crossRevs.proxy.stdout}`);
  assert.equal(new Set(mods).size, 1, 'both keys of the cross-member transaction at one revision');
  // Its else branch, also across members.
  const scriptY = [`value("${k1}") = "one-b"`, '', `put ${k1} never`, '', `put ${other} else`, `del ${k1}`, '', ''].join('\n');
  const crossElse = await write(['txn', '-i'], scriptY);
  assert.equal(crossElse.proxy.succeeded ?? false, false);
  await same(['get', 'txn/', '--prefix']);
});

/** get -w json of one key on both, compared after recording its mod_revision as a write. */
async function sameJsonRecording(key: string): Promise<Record<Target, Record<string, unknown>>> {
  const r = await both(['get', key, '-w', 'json']);
  const doc = { oracle: parseJson(r.oracle.stdout), proxy: parseJson(r.proxy.stdout) } as Record<Target, Record<string, unknown>>;
  for (const t of TARGETS) {
    const kv = (doc[t].kvs as { mod_revision: number | string }[] | undefined)?.[0];
    assert.ok(kv, `${t}: ${key} missing`);
    revs[t].push(BigInt(kv.mod_revision));
  }
  assert.deepEqual(norm('proxy', doc.proxy), norm('oracle', doc.oracle));
  return doc;
}

test('lease grant, put --lease, timetolive --keys, list, revoke', async () => {
  const granted = await both(['lease', 'grant', '120']);
  for (const t of TARGETS) {
    assert.equal(granted[t].code, 0, describe(granted[t]));
    const m = /^lease ([0-9a-f]+) granted with TTL\(120s\)$/.exec(granted[t].stdout.trim());
    assert.ok(m, `${t}: ${granted[t].stdout}`);
    leases[t].push(BigInt(`0x${m[1]}`).toString());
  }
  const hex = (t: Target) => BigInt(leases[t][0]!).toString(16);
  await write((t) => ['put', 'l/a', 'va', `--lease=${hex(t)}`]);
  await write((t) => ['put', 'l/b', 'vb', `--lease=${hex(t)}`]);
  await write(['put', 'l/c', 'vc']);
  await sameJson(['get', 'l/', '--prefix']);
  const ttl = await both((t) => ['lease', 'timetolive', hex(t), '--keys', '-w', 'json']);
  for (const t of TARGETS) {
    assert.equal(ttl[t].code, 0, describe(ttl[t]));
    const d = parseJson(ttl[t].stdout) as Record<string, unknown>;
    assert.equal(String(d.id), leases[t][0]);
    assert.equal(Number(d['granted-ttl']), 120);
    assert.ok(Number(d.ttl) > 100 && Number(d.ttl) <= 120, `${t}: ttl ${String(d.ttl)}`);
    assert.deepEqual(
      (d.keys as string[]).map((k) => Buffer.from(k, 'base64').toString()).sort(),
      ['l/a', 'l/b'],
    );
  }
  const list = await both(['lease', 'list']);
  for (const t of TARGETS) {
    assert.equal(list[t].code, 0, describe(list[t]));
    assert.match(list[t].stdout, new RegExp(`found 1 leases\\n${hex(t).padStart(16, '0')}\\n`));
  }
  await same((t) => ['lease', 'revoke', hex(t)]);
  // The revocation deleted l/a and l/b at one revision.
  await sameJsonRecordingHeader();
  await same(['get', 'l/', '--prefix']);
  await same((t) => ['lease', 'timetolive', hex(t)]);
  await same((t) => ['lease', 'revoke', hex(t)]);
  await same(['put', 'l/d', 'v', '--lease=1234abcd']);
  await same(['lease', 'list']);
});

/** Records the current header revision of both targets as one write (after a write with no json output). */
async function sameJsonRecordingHeader(): Promise<void> {
  const r = await both(['get', 'nothing', '-w', 'json']);
  for (const t of TARGETS) revs[t].push(headerRev(parseJson(r[t].stdout) as Record<string, unknown>));
  const o = revs.oracle;
  assert.ok(o.at(-1)! > o.at(-2)!, 'the oracle wrote');
}

test('endpoint status -w json: version, dbSize, own member id; same fields as etcd', async () => {
  const r = await both(['endpoint', 'status', '-w', 'json']);
  const st: Partial<Record<Target, Record<string, unknown>>> = {};
  for (const t of TARGETS) {
    assert.equal(r[t].code, 0, describe(r[t]));
    const arr = parseJson(r[t].stdout) as Record<string, unknown>[];
    assert.equal(arr.length, 1);
    assert.equal(arr[0]!.Endpoint, endpoint[t]);
    st[t] = arr[0]!.Status as Record<string, unknown>;
  }
  const keys = (o: unknown) => Object.keys(o as object).sort();
  assert.deepEqual(keys(st.proxy), keys(st.oracle), `status fields\noracle: ${r.oracle.stdout}\nproxy: ${r.proxy.stdout}`);
  assert.deepEqual(keys(st.proxy!.header), keys(st.oracle!.header));
  const s = st.proxy!;
  assert.equal(typeof s.version, 'string');
  assert.match(s.version as string, /^3\.\d+\.\d+/);
  assert.ok(Number(s.dbSize) > 0);
  const header = s.header as Record<string, unknown>;
  assert.ok(BigInt(header.revision as string) >= revs.proxy.at(-1)!);
  // Its own member id: the one member list reports, and (one node) the leader.
  const ml = await etcdctl(endpoint.proxy, ['member', 'list', '-w', 'json']);
  const id = String(((parseJson(ml.stdout) as Record<string, unknown>).members as Record<string, unknown>[])[0]!.ID);
  assert.equal(String(header.member_id), id);
  assert.equal(String(s.leader), id);
  // Simple and table output work too.
  const simple = await etcdctl(endpoint.proxy, ['endpoint', 'status']);
  assert.equal(simple.code, 0, describe(simple));
  assert.ok(simple.stdout.startsWith(`${endpoint.proxy}, ${BigInt(id).toString(16)}, ${String(s.version)}, `), simple.stdout);
});

test('endpoint health', async () => {
  const r = await both(['endpoint', 'health']);
  for (const t of TARGETS) {
    assert.equal(r[t].code, 0, describe(r[t]));
    assert.match(r[t].stderr + r[t].stdout, new RegExp(`${endpoint[t].replace(/[.:/]/g, '\\$&')} is healthy: successfully committed proposal`));
  }
  const j = await both(['endpoint', 'health', '-w', 'json']);
  for (const t of TARGETS) {
    assert.equal(j[t].code, 0, describe(j[t]));
    const arr = parseJson(j[t].stdout) as Record<string, unknown>[];
    assert.equal(arr.length, 1);
    assert.equal(arr[0]!.health, true);
    assert.equal(arr[0]!.endpoint, endpoint[t]);
  }
});

test('lock: two etcdctl lock holders of one lock run their commands one after the other (as on etcd)', async () => {
  for (const t of TARGETS) {
    const dir = mkdtempSync(join(tmpdir(), 'metaetcd-lock-'));
    try {
      const log = join(dir, 'log');
      const holder = (name: string) =>
        etcdctl(endpoint[t], ['lock', `e2e-lock-${t}`, '--', 'sh', '-c', `echo ${name}-start >> ${log}; sleep 0.4; echo ${name}-end >> ${log}`], { timeoutMs: 30_000 });
      const [a, b] = await Promise.all([holder('a'), holder('b')]);
      assert.equal(a.code, 0, describe(a));
      assert.equal(b.code, 0, describe(b));
      const lines = readFileSync(log, 'utf8').trim().split('\n');
      assert.equal(lines.length, 4, `${t}: ${lines.join(' ')}`);
      assert.equal(lines[0]!.split('-')[0], lines[1]!.split('-')[0], `${t}: the first holder finished before the second started: ${lines.join(' ')}`);
      assert.deepEqual(lines.map((l) => l.split('-')[1]), ['start', 'end', 'start', 'end'], t);
      // The lock's key is gone once both are done.
      const left = await etcdctl(endpoint[t], ['get', `e2e-lock-${t}`, '--prefix', '--keys-only']);
      assert.equal(left.code, 0, describe(left));
      assert.equal(left.stdout, '', `${t}: no lock key left`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('elect: the first candidate leads, a listener sees it, and when it stops the second takes over (as on etcd)', async () => {
  for (const t of TARGETS) {
    const name = `e2e-elect-${t}`;
    const stops = [new AbortController(), new AbortController(), new AbortController()];
    const [a, b, listen] = stops;
    try {
      const leaderKeys = async () => (await etcdctl(endpoint[t], ['get', name, '--prefix', '--print-value-only'])).stdout;
      const until = async (what: string, cond: () => Promise<boolean>) => {
        const deadline = Date.now() + 20_000;
        while (!(await cond())) {
          if (Date.now() > deadline) assert.fail(`${t}: ${what}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      const first = etcdctl(endpoint[t], ['elect', name, 'alpha'], { stop: a!.signal, timeoutMs: 60_000 });
      await until('alpha campaigns', async () => (await leaderKeys()) === 'alpha\n');
      const second = etcdctl(endpoint[t], ['elect', name, 'beta'], { stop: b!.signal, timeoutMs: 60_000 });
      // Candidates' keys are ordered by lease ID (random through the proxy), not by arrival.
      await until('beta waits behind alpha', async () => (await leaderKeys()).split('\n').filter(Boolean).sort().join(',') === 'alpha,beta');
      let heardSoFar = '';
      const listener = etcdctl(endpoint[t], ['elect', '-l', name], { stop: listen!.signal, timeoutMs: 60_000, onStdout: (out) => (heardSoFar = out) });
      await until('the listener hears alpha', async () => heardSoFar.includes('alpha\n'));
      a!.abort(); // alpha resigns on SIGTERM
      const firstOut = await first;
      assert.match(firstOut.stdout, /^e2e-elect-[a-z]+\/[0-9a-f]+\nalpha\n/, `${t}: alpha printed its key and proposal: ${describe(firstOut)}`);
      await until('beta leads', async () => (await leaderKeys()) === 'beta\n');
      await new Promise((r) => setTimeout(r, 300));
      b!.abort();
      const secondOut = await second;
      assert.match(secondOut.stdout, /\nbeta\n/, `${t}: beta was elected: ${describe(secondOut)}`);
      await until('nobody leads', async () => (await leaderKeys()) === '');
      listen!.abort();
      const heard = (await listener).stdout.split('\n').filter((l) => l === 'alpha' || l === 'beta');
      assert.deepEqual(heard.slice(0, 2), ['alpha', 'beta'], `${t}: the listener saw alpha, then beta`);
    } finally {
      for (const s of stops) s.abort();
    }
  }
});

test('make-mirror copies a prefix of the proxy into a plain etcd and follows later changes (a backup path, as Snapshot is not served)', async () => {
  const dest = await EtcdProcess.start({ name: 'mirror-dest', dataDir: join(set.root, 'mirror-dest') });
  const stop = new AbortController();
  try {
    const want = new Map<string, string>();
    for (let i = 0; i < 25; i++) want.set(`mm/k${String(i).padStart(2, '0')}`, `v${i}`);
    // Written to both targets (as every write of this file), so that they stay alike.
    for (const [k, v] of want) await write(['put', k, v]);
    const mirror = etcdctl(endpoint.proxy, ['make-mirror', '--prefix', 'mm/', dest.clientUrl.replace('http://', '')], { stop: stop.signal, timeoutMs: 60_000 });
    const destState = async () => (await etcdctl(dest.clientUrl.replace('http://', ''), ['get', 'mm/', '--prefix'])).stdout;
    const expected = () => [...want.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}\n${v}\n`).join('');
    const settle = async (what: string) => {
      const deadline = Date.now() + 20_000;
      while ((await destState()) !== expected()) {
        if (Date.now() > deadline) assert.fail(`${what}: the mirror has ${JSON.stringify(await destState())}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    await settle('the existing keys are copied');
    // Later changes on every member arrive through the proxy's watch.
    for (let i = 25; i < 35; i++) want.set(`mm/k${i}`, `v${i}`);
    for (let i = 25; i < 35; i++) await write(['put', `mm/k${i}`, `v${i}`]);
    await write(['del', 'mm/k03']);
    want.delete('mm/k03');
    want.set('mm/k04', 'changed');
    await write(['put', 'mm/k04', 'changed']);
    await settle('later puts and deletes follow');
    stop.abort();
    const r = await mirror;
    assert.equal(r.stderr.includes('Error'), false, describe(r));
  } finally {
    stop.abort();
    await dest.stop();
  }
});

test("member list -w json: exactly one member, with the proxy's own URL", async () => {
  const r = await both(['member', 'list', '-w', 'json']);
  for (const t of TARGETS) assert.equal(r[t].code, 0, describe(r[t]));
  const doc = parseJson(r.proxy.stdout) as Record<string, unknown>;
  const members = doc.members as Record<string, unknown>[];
  assert.equal(members.length, 1, r.proxy.stdout);
  const m = members[0]!;
  assert.deepEqual(m.clientURLs, [proxy.url]);
  const upstream = [set.coordinator, ...set.members].map((e) => e.clientUrl.replace(/^https?:\/\//, ''));
  for (const u of upstream) assert.ok(!r.proxy.stdout.includes(u), `member list shows upstream ${u}: ${r.proxy.stdout}`);
  assert.ok(m.ID !== undefined && String(m.ID) !== '0');
  assert.equal(typeof m.name, 'string');
  assert.ok(!m.isLearner);
  // The oracle's one member has the same basic shape.
  const om = ((parseJson(r.oracle.stdout) as Record<string, unknown>).members as Record<string, unknown>[])[0]!;
  for (const f of ['ID', 'name', 'clientURLs']) assert.ok(f in om && f in m, f);
  const simple = await etcdctl(endpoint.proxy, ['member', 'list']);
  assert.equal(simple.code, 0, describe(simple));
  const fields = simple.stdout.trim().split(', ');
  assert.equal(fields.length, 6, simple.stdout);
  assert.equal(fields[0], BigInt(String(m.ID)).toString(16));
  assert.equal(fields[1], 'started');
  assert.equal(fields[4], proxy.url);
  assert.equal(fields[5], 'false');
});

test('compaction: then get --rev below fails with etcd message; watch below is cancelled', async () => {
  const n = revs.oracle.length;
  const at = n - 6;
  const mid = (t: Target) => revOf(t, at);
  const c = await both((t) => ['compaction', mid(t)]);
  for (const t of TARGETS) {
    assert.equal(c[t].code, 0, describe(c[t]));
    assert.equal(c[t].stdout.trim(), `compacted revision ${mid(t)}`);
  }
  // At the compacted revision and above: still readable, same snapshots.
  for (let i = at; i < n; i++) await same((t) => ['get', '', '--prefix', `--rev=${revOf(t, i)}`]);
  // Below: etcd's error, same exit code.
  const below = await same((t) => ['get', '', '--prefix', `--rev=${revOf(t, at - 1)}`]);
  assert.notEqual(below.proxy.code, 0);
  assert.match(cleanStderr(below.proxy.stderr), /^Error: etcdserver: mvcc: required revision has been compacted$/);
  await same((t) => ['get', 'g/a', `--rev=${revOf(t, 0)}`]);
  // Compacting again at or below, and in the future.
  await same((t) => ['compaction', mid(t)]);
  await same((t) => ['compaction', revOf(t, at - 2)]);
  await same((t) => ['compaction', String(revs[t].at(-1)! + 1000n)]);
  // Watch from below the compacted revision is cancelled with etcd's reason.
  const w = await both((t) => ['watch', 'g/a', `--rev=${revOf(t, 1)}`]);
  const wv = (t: Target) => ({ code: w[t].code, stdout: w[t].stdout, stderr: cleanStderr(w[t].stderr) });
  assert.deepEqual(wv('proxy'), wv('oracle'));
  assert.match(w.proxy.stdout + w.proxy.stderr, /watch was canceled \(etcdserver: mvcc: required revision has been compacted\)/);
  assert.notEqual(w.proxy.code, 0);
  // Writes keep working after compaction.
  await write(['put', 'after/compaction', 'ok']);
  await same(['get', '', '--prefix', '--keys-only']);
});
