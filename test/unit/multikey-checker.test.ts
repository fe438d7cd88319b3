// The multi-key transaction checker (test/harness/multikey-linearizability.ts) on
// hand-made histories: it accepts linearizable ones (overlapping operations,
// read-only operations at a write's revision, failed compares, errored
// operations applied or not) and refuses each injected violation — a revision
// used twice, a revision out of real-time order, a stale or fractured
// multi-key read, a wrong compare outcome, a lost write, a partly applied or
// twice placed errored transaction, a wrong delete count — naming it. No etcd.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkMultiKey, describeMkOp, type MkBranch, type MkCompare, type MkOp, type MkRead, type MkState } from '../harness/multikey-linearizability.js';

let nextId = 0;
interface Spec {
  client?: string;
  start: number;
  end: number;
  compares?: MkCompare[];
  success?: MkBranch;
  failure?: MkBranch;
  succeeded?: boolean;
  reads?: MkRead[];
  deleted?: number;
  revision?: number;
  error?: string;
}
function op(s: Spec): MkOp {
  const ok = s.error === undefined;
  return {
    id: nextId++,
    client: s.client ?? 'c',
    compares: s.compares ?? [],
    success: s.success ?? {},
    failure: s.failure ?? {},
    start: s.start,
    end: ok ? s.end : Infinity,
    ok,
    ...(ok ? { succeeded: s.succeeded ?? true, revision: BigInt(s.revision ?? 0), reads: s.reads ?? [] } : { error: s.error }),
    ...(s.deleted !== undefined ? { deleted: s.deleted } : {}),
  };
}
const puts = (kv: Record<string, string>) => Object.entries(kv).map(([key, value]) => ({ key, value }));
/** A blind multi-key put at `rev`. */
const put = (start: number, end: number, rev: number, kv: Record<string, string>, client = 'w') => op({ client, start, end, revision: rev, success: { puts: puts(kv) } });
/** A read-only multi-key read at `rev`: `seen` key -> [value, mod] (or null). */
const read = (start: number, end: number, rev: number, seen: Record<string, [string, number] | null>, client = 'r') =>
  op({
    client,
    start,
    end,
    revision: rev,
    success: { reads: Object.keys(seen) },
    reads: Object.entries(seen).map(([key, v]) => (v === null ? { key, value: null } : { key, value: v[0], mod: BigInt(v[1]) })),
  });
const modIs = (key: string, rev: number): MkCompare => ({ key, target: 'mod', result: '=', value: BigInt(rev) });
/** A transfer: if mod(a) = ma and mod(b) = mb then put both, else read both. */
const transfer = (s: Omit<Spec, 'compares' | 'success' | 'failure'> & { ma: number; mb: number; a: string; b: string }) =>
  op({ ...s, compares: [modIs('A', s.ma), modIs('B', s.mb)], success: { puts: puts({ A: s.a, B: s.b }) }, failure: { reads: ['A', 'B'] } });

const initial: MkState = new Map([
  ['A', { value: '100', create: 1n, mod: 1n, version: 1n }],
  ['B', { value: '100', create: 2n, mod: 2n, version: 1n }],
]);

function ok(h: MkOp[], why = '') {
  const r = checkMultiKey(h, initial, 2n);
  assert.equal(r.ok, true, `${why}: ${r.violation}`);
  return r;
}
function refused(h: MkOp[], pattern: RegExp, why = '') {
  const r = checkMultiKey(h, initial, 2n);
  assert.equal(r.ok, false, `${why}: accepted`);
  assert.match(r.violation!, pattern, why);
  return r;
}

test('accepts sequential and overlapping histories; read-only operations at a write revision see it', () => {
  ok([
    transfer({ start: 0, end: 1, revision: 3, ma: 1, mb: 2, a: '90#1', b: '110#1' }),
    read(2, 3, 3, { A: ['90#1', 3], B: ['110#1', 3] }),
    // Overlapping: a read that overlaps the next transfer may see either state.
    transfer({ start: 4, end: 8, revision: 5, ma: 3, mb: 3, a: '80#2', b: '120#2' }),
    read(5, 6, 4, { A: ['90#1', 3], B: ['110#1', 3] }),
    read(5, 7, 5, { A: ['80#2', 5], B: ['120#2', 5] }),
  ], 'transfers and reads');
  // A failed transfer (stale mod revisions) reads the current state; it is read-only at its header revision.
  ok([
    transfer({ start: 0, end: 1, revision: 3, ma: 1, mb: 2, a: '90#1', b: '110#1' }),
    transfer({ start: 2, end: 3, revision: 3, ma: 1, mb: 2, a: '0#x', b: '0#x', succeeded: false, reads: [{ key: 'A', value: '90#1', mod: 3n }, { key: 'B', value: '110#1', mod: 3n }] }),
  ], 'a failed compare');
  // Deletes: the count is checked against the model.
  ok([op({ start: 0, end: 1, revision: 3, success: { deletes: ['A', 'Z'] }, deleted: 1 }), read(2, 3, 3, { A: null, B: ['100', 2] })], 'a delete');
  // Revisions need not be contiguous (the proxy leaves empty revisions).
  ok([put(0, 1, 10, { A: 'x' }), read(2, 3, 17, { A: ['x', 10] })], 'a gap');
});

test('errored operations: applied when a read saw them (at the revision it reports), left out otherwise', () => {
  const lost = transfer({ start: 0, end: Infinity, error: 'UNAVAILABLE', ma: 1, mb: 2, a: '90#e', b: '110#e' });
  const r1 = ok([lost, read(5, 6, 4, { A: ['100', 1], B: ['100', 2] })], 'never applied');
  assert.deepEqual([r1.erroredApplied, r1.erroredDropped], [0, 1]);
  const applied = { ...lost, id: nextId++ };
  const r2 = ok([applied, read(5, 6, 4, { A: ['90#e', 4], B: ['110#e', 4] })], 'applied, seen by a later read');
  assert.deepEqual([r2.erroredApplied, r2.erroredDropped], [1, 0]);
  // Applied, but its compare could not hold there: a later write had changed A.
  const w = put(0.5, 1, 3, { A: 'other' });
  refused([{ ...lost, id: nextId++ }, w, read(5, 6, 5, { A: ['90#e', 5], B: ['110#e', 5] })], /compares do not hold .* but it took the success branch/, 'applied against a changed key');
});

test('refuses a revision used twice and revisions out of real-time order', () => {
  refused([put(0, 1, 3, { A: 'x' }), put(2, 3, 3, { B: 'y' })], /revision 3 is taken by two writes/, 'duplicate');
  refused([put(0, 1, 5, { A: 'x' }), put(2, 3, 4, { B: 'y' })], /real-time order: .* has revision 4, but .* had responded with 5/, 'write after write');
  refused([put(0, 1, 5, { A: 'x' }), read(2, 3, 4, { B: ['100', 2] })], /real-time order/, 'a read after a write at a lower revision');
  // A read that ended before a write began cannot report that write's revision.
  refused([read(0, 1, 5, { B: ['100', 2] }), put(2, 3, 5, { A: 'x' })], /real-time order|taken by two/, 'a write at a revision a finished read already reported');
  refused([put(0, 1, 2, { A: 'x' })], /not above the initial state's 2/, 'at the initial revision');
});

test('refuses stale, fractured and impossible reads, a lost write, a wrong compare outcome and a wrong delete count', () => {
  const t1 = () => transfer({ start: 0, end: 1, revision: 3, ma: 1, mb: 2, a: '90#1', b: '110#1' });
  refused([t1(), read(2, 3, 3, { A: ['100', 1], B: ['100', 2] })], /read A=100@1, but the state at revision 3 holds 90#1/, 'stale read');
  refused([t1(), read(2, 3, 3, { A: ['90#1', 3], B: ['100', 2] })], /read B=100@2, but the state at revision 3 holds 110#1/, 'fractured read (half a transfer)');
  refused([t1(), read(2, 3, 3, { A: ['90#1', 3], B: ['110#1', 4] })], /read B=110#1@4/, 'a wrong mod revision');
  refused([t1(), read(2, 3, 3, { A: ['nobody wrote this', 3], B: ['110#1', 3] })], /read A=nobody wrote this/, 'a value from nowhere');
  refused([put(0, 1, 3, { A: 'x' }), put(2, 3, 4, { B: 'y' }), read(4, 5, 4, { A: ['100', 1], B: ['y', 4] })], /read A=100@1/, 'a lost write');
  // Two transfers from the same state both succeeded.
  refused(
    [t1(), transfer({ start: 0, end: 2, revision: 4, ma: 1, mb: 2, a: '50#2', b: '150#2' })],
    /compares do not hold in the state just before revision 4 .* but it took the success branch/,
    'two successful compare-and-sets from one state',
  );
  // A compare reported as failed that held.
  refused(
    [transfer({ start: 0, end: 1, revision: 2 + 1, ma: 1, mb: 2, a: 'q', b: 'q', succeeded: false, reads: [{ key: 'A', value: '100', mod: 1n }, { key: 'B', value: '100', mod: 2n }] })],
    /compares hold .* but it failed/,
    'a failed compare that held',
  );
  refused([op({ start: 0, end: 1, revision: 3, success: { deletes: ['A', 'B'] }, deleted: 1 })], /deleted 1 keys, but 2 of its delete targets exist/, 'a wrong delete count');
});

test('refuses a partly applied errored transaction and one seen at two revisions', () => {
  const e = () => transfer({ start: 0, end: Infinity, error: 'UNAVAILABLE', ma: 1, mb: 2, a: '90#e', b: '110#e' });
  // Its A was seen, its B never written: the read of B at a later revision shows the old value.
  refused([e(), read(5, 6, 4, { A: ['90#e', 3], B: ['100', 2] })], /read B=100@2, but the state at revision 4 holds 110#e/, 'partial');
  refused([e(), read(5, 6, 4, { A: ['90#e', 3] }), read(7, 8, 5, { B: ['110#e', 4] })], /seen at two revisions: 3 .* and 4/, 'two revisions');
});

test('refuses a history whose put values are not unique; describes operations readably', () => {
  assert.throws(() => checkMultiKey([put(0, 1, 3, { A: 'x' }), put(2, 3, 4, { A: 'x' })]), /values must be unique per put/);
  const t = transfer({ client: 'c1', start: 10, end: 12, revision: 3, ma: 1, mb: 2, a: '90', b: '110' });
  assert.equal(describeMkOp(t, 10), `#${t.id} c1 [0.0 .. 2.0 ms] if mod(A) = 1 && mod(B) = 2 then [put A=90, put B=110] else [get A, get B] => succeeded at revision 3`);
});

test('a long history of interleaved transfers and reads is accepted; one wrong read in it is found', () => {
  // 3000 operations by 6 clients, each overlapping its neighbours, linearizable in revision order.
  const h: MkOp[] = [];
  let a = { v: '100', mod: 1 };
  let b = { v: '100', mod: 2 };
  let rev = 2;
  for (let i = 0; i < 3000; i++) {
    const c = `c${i % 6}`;
    const t = i;
    if (i % 3 === 0) {
      rev++;
      const na = `${100 - i}#${i}`;
      const nb = `${100 + i}#${i}`;
      h.push(transfer({ client: c, start: t - 2, end: t + 2, revision: rev, ma: a.mod, mb: b.mod, a: na, b: nb }));
      a = { v: na, mod: rev };
      b = { v: nb, mod: rev };
    } else if (i % 3 === 1) {
      h.push(transfer({ client: c, start: t - 2, end: t + 2, revision: rev, ma: 0, mb: 0, a: `x${i}`, b: `y${i}`, succeeded: false, reads: [{ key: 'A', value: a.v, mod: BigInt(a.mod) }, { key: 'B', value: b.v, mod: BigInt(b.mod) }] }));
    } else {
      h.push(read(t - 2, t + 2, rev, { A: [a.v, a.mod], B: [b.v, b.mod] }, c));
    }
  }
  const r = checkMultiKey(h, initial, 2n);
  assert.equal(r.ok, true, r.violation);
  assert.equal(r.writes, 1000);
  // One wrong read in the middle is found and named.
  const bad = h.findIndex((x, i) => i > 1500 && x.compares.length === 0);
  h[bad] = { ...h[bad]!, reads: [{ key: 'A', value: '100', mod: 1n }, h[bad]!.reads![1]!] };
  const r2 = checkMultiKey(h, initial, 2n);
  assert.match(r2.violation ?? '', new RegExp(`^#${h[bad]!.id} .* read A=100@1, but the state at revision`));
});
