// The register linearizability checker (test/harness/linearizability.ts) on
// hand-made histories: it must accept linearizable ones (including overlapping
// and indeterminate operations) and refuse the classic violations (stale read,
// lost write, two successful compare-and-sets from one value, a read of a value
// never written, revisions out of real-time order), shrinking each to a short
// replay that still fails. No etcd processes: this file runs in milliseconds.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkHistories, checkRegister, checkRevisions, replay, shrink, type HistoryOp, type RegisterOp, type RegisterResult } from '../harness/linearizability.js';

let nextId = 0;
function op(client: string, start: number, end: number, o: RegisterOp, result?: RegisterResult, extra: Partial<HistoryOp> = {}): HistoryOp {
  return { id: nextId++, key: 'k', client, op: o, start, end, ok: true, ...(result ? { result } : {}), ...extra };
}
const put = (c: string, s: number, e: number, v: string, rev?: number) => op(c, s, e, { kind: 'put', value: v }, undefined, rev !== undefined ? { revision: BigInt(rev) } : {});
const get = (c: string, s: number, e: number, v: string | null, rev?: number) => op(c, s, e, { kind: 'get' }, { value: v }, rev !== undefined ? { revision: BigInt(rev) } : {});
const cas = (c: string, s: number, e: number, expect: string | null, v: string, ok: boolean, saw?: string | null) =>
  op(c, s, e, { kind: 'cas', expect, value: v }, { succeeded: ok, ...(saw !== undefined ? { value: saw } : {}) });
const del = (c: string, s: number, e: number, deleted: number) => op(c, s, e, { kind: 'delete' }, { deleted });

test('accepts sequential and overlapping linearizable histories', () => {
  assert.ok(checkRegister([put('a', 0, 1, 'x'), get('b', 2, 3, 'x'), del('a', 4, 5, 1), get('b', 6, 7, null)]).ok);
  // Overlapping put and get: the get may see either value.
  assert.ok(checkRegister([put('a', 0, 1, 'x'), put('a', 2, 10, 'y'), get('b', 3, 4, 'x'), get('c', 5, 6, 'y')]).ok);
  // Concurrent CAS from the same value: only one succeeds.
  assert.ok(checkRegister([put('a', 0, 1, 'x'), cas('b', 2, 5, 'x', 'y', true), cas('c', 2, 5, 'x', 'z', false, 'y'), get('a', 6, 7, 'y')]).ok);
  // Create-if-absent.
  assert.ok(checkRegister([cas('a', 0, 1, null, 'x', true), cas('b', 2, 3, null, 'y', false, 'x'), get('c', 4, 5, 'x')]).ok);
});

test('indeterminate operations may take effect late or never', () => {
  const failedPut = { ...put('a', 0, 1, 'x'), ok: false, error: 'UNAVAILABLE' };
  assert.ok(checkRegister([failedPut, get('b', 5, 6, null)]).ok, 'never applied');
  assert.ok(checkRegister([{ ...failedPut, id: nextId++ }, get('b', 5, 6, null), get('b', 7, 8, 'x')]).ok, 'applied late');
  assert.ok(!checkRegister([{ ...failedPut, id: nextId++ }, get('b', 5, 6, 'x'), get('b', 7, 8, null)]).ok, 'but not undone');
});

test('failed writes nobody saw are pruned; failed writes somebody saw are kept', () => {
  // 40 failed puts that never took effect, interleaved with reads: without pruning the search would branch on each.
  const h: HistoryOp[] = [put('a', 0, 1, 'x')];
  for (let i = 0; i < 40; i++) {
    h.push({ ...put(`f${i}`, 2 + i, 3 + i, `lost${i}`), ok: false, error: 'UNAVAILABLE' });
    h.push(get('r', 2.5 + i, 2.7 + i, 'x'));
  }
  const r = checkRegister(h);
  assert.ok(r.ok && r.states < 1000, JSON.stringify({ ok: r.ok, states: r.states }));
  // A failed put that a later read saw must be kept (and applied).
  const seen = [put('a', 0, 1, 'x'), { ...put('b', 2, 3, 'y'), ok: false, error: 'UNAVAILABLE' }, get('c', 4, 5, 'y')];
  assert.ok(checkRegister(seen).ok);
  // A delete that reports what it deleted must have deleted that value.
  const wrongPrev = [put('a', 0, 1, 'x'), op('b', 2, 3, { kind: 'delete' }, { deleted: 1, prev: 'zzz' })];
  assert.ok(!checkRegister(wrongPrev).ok);
});

test('refuses a stale read, a lost write, a double CAS and a value from nowhere; shrinks to a minimal replay', () => {
  const stale = [put('a', 0, 1, 'x'), put('a', 2, 3, 'y'), get('b', 4, 5, 'x'), get('c', 0.5, 0.7, null)];
  const lost = [put('a', 0, 1, 'x'), put('b', 2, 3, 'y'), get('c', 4, 5, 'x')];
  const double = [put('a', 0, 1, 'x'), cas('b', 2, 5, 'x', 'y', true), cas('c', 2, 5, 'x', 'z', true)];
  const nowhere = [put('a', 0, 1, 'x'), get('b', 2, 3, 'q')];
  const deleteOfNothing = [put('a', 0, 1, 'x'), del('b', 2, 3, 0)];
  for (const [name, h] of Object.entries({ stale, lost, double, nowhere, deleteOfNothing })) {
    const r = checkRegister(h);
    assert.equal(r.ok, false, `${name} must be refused`);
    assert.ok(!r.unknown, name);
    const min = shrink(h);
    assert.ok(!checkRegister(min).ok, `${name}: the shrunk history still fails`);
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
  assert.ok(r.ok && !r.unknown, JSON.stringify({ ok: r.ok, unknown: r.unknown, states: r.states }));
  assert.ok(performance.now() - started < 5000, `took ${performance.now() - started} ms`);
});

test('checkHistories reports failing keys with replays; checkRevisions finds reused and reordered revisions', () => {
  const a = put('a', 0, 1, 'x', 5);
  const b = { ...put('b', 2, 3, 'y', 5), key: 'other' };
  const c = get('c', 4, 5, 'x', 4);
  const report = checkHistories([a, c, { ...get('d', 6, 7, 'zzz'), key: 'k' }]);
  assert.equal(report.failures.length, 1);
  assert.match(report.failures[0]!.replay!, /get\(\) => zzz/);
  const problems = checkRevisions([a, b, c]);
  assert.ok(problems.some((p) => p.includes('acknowledged to two writes')), problems.join('\n'));
  assert.ok(problems.some((p) => p.includes('had returned 5 before it started')), problems.join('\n'));
});
