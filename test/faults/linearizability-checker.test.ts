// The register linearizability checker (test/harness/linearizability.ts) on
// hand-made histories: it must accept linearizable ones (including overlapping
// and indeterminate operations) and refuse the classic violations (stale read,
// lost write, two successful compare-and-sets from one value, a read of a value
// never written, revisions out of real-time order), shrinking each to a short
// replay that still fails. No etcd processes: this file runs in milliseconds.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkHistories, checkRegister, checkRevisions, replay, shrink, type CheckResult, type HistoryOp, type RegisterOp, type RegisterResult } from '../harness/linearizability.js';

let nextId = 0;
function op(client: string, start: number, end: number, o: RegisterOp, result?: RegisterResult, extra: Partial<HistoryOp> = {}): HistoryOp {
  return { id: nextId++, key: 'k', client, op: o, start, end, ok: true, ...(result ? { result } : {}), ...extra };
}
const put = (c: string, s: number, e: number, v: string, rev?: number) => op(c, s, e, { kind: 'put', value: v }, undefined, rev !== undefined ? { revision: BigInt(rev) } : {});
const get = (c: string, s: number, e: number, v: string | null, rev?: number) => op(c, s, e, { kind: 'get' }, { value: v }, rev !== undefined ? { revision: BigInt(rev) } : {});
const cas = (c: string, s: number, e: number, expect: string | null, v: string, ok: boolean, saw?: string | null) =>
  op(c, s, e, { kind: 'cas', expect, value: v }, { succeeded: ok, ...(saw !== undefined ? { value: saw } : {}) });
const del = (c: string, s: number, e: number, deleted: number) => op(c, s, e, { kind: 'delete' }, { deleted });
const lin = (r: CheckResult, why = '') => assert.equal(r.outcome, 'linearizable', why);
const viol = (r: CheckResult, why = '') => assert.equal(r.outcome, 'violation', why);

test('accepts sequential and overlapping linearizable histories', () => {
  lin(checkRegister([put('a', 0, 1, 'x'), get('b', 2, 3, 'x'), del('a', 4, 5, 1), get('b', 6, 7, null)]));
  // Overlapping put and get: the get may see either value.
  lin(checkRegister([put('a', 0, 1, 'x'), put('a', 2, 10, 'y'), get('b', 3, 4, 'x'), get('c', 5, 6, 'y')]));
  // Concurrent CAS from the same value: only one succeeds.
  lin(checkRegister([put('a', 0, 1, 'x'), cas('b', 2, 5, 'x', 'y', true), cas('c', 2, 5, 'x', 'z', false, 'y'), get('a', 6, 7, 'y')]));
  // Create-if-absent.
  lin(checkRegister([cas('a', 0, 1, null, 'x', true), cas('b', 2, 3, null, 'y', false, 'x'), get('c', 4, 5, 'x')]));
});

test('indeterminate operations may take effect late or never', () => {
  const failedPut = { ...put('a', 0, 1, 'x'), ok: false, error: 'UNAVAILABLE' };
  lin(checkRegister([failedPut, get('b', 5, 6, null)]), 'never applied');
  lin(checkRegister([{ ...failedPut, id: nextId++ }, get('b', 5, 6, null), get('b', 7, 8, 'x')]), 'applied late');
  viol(checkRegister([{ ...failedPut, id: nextId++ }, get('b', 5, 6, 'x'), get('b', 7, 8, null)]), 'but not undone');
});

test('failed writes nobody saw are pruned; failed writes somebody saw are kept', () => {
  // 40 failed puts that never took effect, interleaved with reads: without pruning the search would branch on each.
  const h: HistoryOp[] = [put('a', 0, 1, 'x')];
  for (let i = 0; i < 40; i++) {
    h.push({ ...put(`f${i}`, 2 + i, 3 + i, `lost${i}`), ok: false, error: 'UNAVAILABLE' });
    h.push(get('r', 2.5 + i, 2.7 + i, 'x'));
  }
  const r = checkRegister(h);
  assert.ok(r.outcome === 'linearizable' && r.states < 1000, JSON.stringify(r));
  // A failed put that a later read saw must be kept (and applied).
  const seen = [put('a', 0, 1, 'x'), { ...put('b', 2, 3, 'y'), ok: false, error: 'UNAVAILABLE' }, get('c', 4, 5, 'y')];
  lin(checkRegister(seen));
  // A delete that reports what it deleted must have deleted that value.
  const wrongPrev = [put('a', 0, 1, 'x'), op('b', 2, 3, { kind: 'delete' }, { deleted: 1, prev: 'zzz' })];
  viol(checkRegister(wrongPrev));
});

test('refuses a stale read, a lost write, a double CAS and a value from nowhere; shrinks to a minimal replay', () => {
  const stale = [put('a', 0, 1, 'x'), put('a', 2, 3, 'y'), get('b', 4, 5, 'x'), get('c', 0.5, 0.7, null)];
  const lost = [put('a', 0, 1, 'x'), put('b', 2, 3, 'y'), get('c', 4, 5, 'x')];
  const double = [put('a', 0, 1, 'x'), cas('b', 2, 5, 'x', 'y', true), cas('c', 2, 5, 'x', 'z', true)];
  const nowhere = [put('a', 0, 1, 'x'), get('b', 2, 3, 'q')];
  const deleteOfNothing = [put('a', 0, 1, 'x'), del('b', 2, 3, 0)];
  for (const [name, h] of Object.entries({ stale, lost, double, nowhere, deleteOfNothing })) {
    const r = checkRegister(h);
    assert.equal(r.outcome, 'violation', `${name} must be refused`);
    const min = shrink(h);
    viol(checkRegister(min), `${name}: the shrunk history still fails`);
    assert.ok(min.length <= h.length, name);
    assert.match(replay(min), /key k, initially <absent>:/);
  }
  // The stale read shrinks away the unrelated early get.
  assert.equal(shrink(stale).length, 3, replay(shrink(stale)));
});

test('a long linearizable history with many overlapping clients is checked quickly', () => {
  // 6 clients, 600 operations on one register, every operation overlapping others.
  const h: HistoryOp[] = [];
  let value: string | null = null;
  let t = 0;
  for (let i = 0; i < 600; i++) {
    // Each op is linearized at time t+0.5 but its interval spreads over [t-3, t+3].
    const c = `c${i % 6}`;
    const r = i % 5;
    if (r === 0) {
      h.push(op(c, t - 3, t + 3, { kind: 'put', value: `v${i}` }));
      value = `v${i}`;
    } else if (r === 1 && value !== null) {
      h.push(op(c, t - 3, t + 3, { kind: 'cas', expect: value, value: `v${i}` }, { succeeded: true }));
      value = `v${i}`;
    } else if (r === 2) {
      h.push(op(c, t - 3, t + 3, { kind: 'cas', expect: 'nope', value: `v${i}` }, { succeeded: false, value }));
    } else {
      h.push(op(c, t - 3, t + 3, { kind: 'get' }, { value }));
    }
    t += 1;
  }
  const started = performance.now();
  const r = checkRegister(h);
  assert.equal(r.outcome, 'linearizable', JSON.stringify(r));
  assert.ok(performance.now() - started < 5000, `took ${performance.now() - started} ms`);
});

test('checkHistories reports failing keys with replays; checkRevisions finds reused and reordered revisions', () => {
  const a = put('a', 0, 1, 'x', 5);
  const b = { ...put('b', 2, 3, 'y', 5), key: 'other' };
  const c = get('c', 4, 5, 'x', 4);
  const report = checkHistories([a, c, { ...get('d', 6, 7, 'zzz'), key: 'k' }]);
  assert.equal(report.violations.length, 1);
  assert.equal(report.inconclusive.length, 0);
  assert.match(report.violations[0]!.detail, /get\(\) => zzz/);
  const problems = checkRevisions([a, b, c]);
  assert.ok(problems.some((p) => p.includes('acknowledged to two writes')), problems.join('\n'));
  assert.ok(problems.some((p) => p.includes('had returned 5 before it started')), problems.join('\n'));
});

/** `n` operations on one register, each overlapping its neighbours (no quiescent point), linearizable in index order. */
function overlapping(n: number, from = 0): HistoryOp[] {
  const h: HistoryOp[] = [];
  for (let i = 0; i < n; i++) {
    const t = from + i;
    h.push(i % 2 === 0 ? op(`c${i % 6}`, t - 3, t + 3, { kind: 'put', value: `w${t}` }) : op(`c${i % 6}`, t - 3, t + 3, { kind: 'get' }, { value: `w${t - 1}` }));
  }
  return h;
}

test('three outcomes: a search that runs out of states is inconclusive, never a pass or a violation', () => {
  const h = overlapping(200);
  assert.equal(checkRegister(h).outcome, 'linearizable');
  assert.equal(checkRegister(h, null, 10).outcome, 'inconclusive');
  const report = checkHistories(h, () => null, 10);
  assert.equal(report.violations.length, 0, 'windows of a linearizable history hold no violation');
  assert.equal(report.inconclusive.length, 1);
  assert.match(report.inconclusive[0]!.detail, /search gave up after \d+ and then \d+ states over 200 operations/);
});

test('a violation in a hard history is reported as one; with too small a budget it is inconclusive, not a violation', () => {
  const h: HistoryOp[] = [...overlapping(40), put('a', 100, 101, 'x'), put('a', 102, 103, 'y'), get('b', 104, 105, 'x'), ...overlapping(200, 200)];
  const small = checkHistories(h, () => null, 10);
  assert.deepEqual([small.violations.length, small.inconclusive.length], [0, 1]);
  const report = checkHistories(h);
  assert.deepEqual([report.violations.length, report.inconclusive.length], [1, 0]);
  assert.match(report.violations[0]!.detail, /get\(\) => x/);
});

test('quiescent points split the search; every end state of a part is carried into the next', () => {
  // Two concurrent puts, then (after both returned) a read: either value may be the one left.
  const race = () => [put('a', 0, 3, 'x'), put('b', 1, 2, 'y')];
  lin(checkRegister([...race(), get('c', 4, 5, 'x')]));
  lin(checkRegister([...race(), get('c', 4, 5, 'y')]));
  viol(checkRegister([...race(), get('c', 4, 5, null)]));
  // Many parts, each cheap: the whole is checked in few states.
  const parts: HistoryOp[] = [];
  for (let i = 0; i < 300; i++) parts.push(...overlapping(6, i * 100));
  const r = checkRegister(parts);
  assert.equal(r.outcome, 'linearizable');
  assert.ok(r.states < 300 * 1000, `${r.states} states for 300 parts of 6 operations`);
});
