// The member sequencer: first sends go out in revision order, resends only wait
// for room, and no more than maxInFlight writes are in flight.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemberSequencer } from '../../src/members/member-sequencer.js';

/** Lets pending promise callbacks run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Calls turn(revision) and records when it resolves. */
function turn(seq: MemberSequencer, revision: number, log: number[]): Promise<void> {
  return seq.turn(revision).then(() => {
    log.push(revision);
  });
}

test('first sends go out in revision order, whatever order they ask in', async () => {
  const seq = new MemberSequencer(Infinity);
  for (const r of [3, 1, 2]) seq.register(r);
  const log: number[] = [];
  void turn(seq, 3, log);
  void turn(seq, 2, log);
  await settle();
  assert.deepEqual(log, [], 'revision 1 has not gone out yet');
  void turn(seq, 1, log);
  await settle();
  assert.deepEqual(log, [1]);
  seq.sent(1);
  await settle();
  assert.deepEqual(log, [1, 2]);
  seq.sent(2);
  await settle();
  assert.deepEqual(log, [1, 2, 3]);
  seq.sent(3);
  assert.equal(seq.pending, 0);
});

test('a revision given up without being sent no longer holds the later ones back', async () => {
  const seq = new MemberSequencer(Infinity);
  seq.register(1);
  seq.register(2);
  const log: number[] = [];
  void turn(seq, 2, log);
  await settle();
  assert.deepEqual(log, []);
  seq.sent(1); // the write holding 1 failed before sending
  await settle();
  assert.deepEqual(log, [2]);
});

test('a resend (revision already gone out) does not wait for lower revisions', async () => {
  const seq = new MemberSequencer(Infinity);
  seq.register(6);
  await seq.turn(6);
  seq.sent(6);
  seq.finished();
  seq.register(5); // handed out later (another coordinator round trip), still to go out
  const log: number[] = [];
  void turn(seq, 6, log); // 6 retries with a fresh state
  await settle();
  assert.deepEqual(log, [6]);
});

test('the in-flight bound: a turn waits for a finished write', async () => {
  const seq = new MemberSequencer(1);
  seq.register(1);
  seq.register(2);
  const log: number[] = [];
  await turn(seq, 1, log);
  seq.sent(1);
  void turn(seq, 2, log);
  await settle();
  assert.deepEqual(log, [1], 'one write is in flight');
  seq.finished();
  await settle();
  assert.deepEqual(log, [1, 2]);
});

test('resends wait only for room in flight, and ordered sends for both', async () => {
  const seq = new MemberSequencer(2);
  seq.register(10);
  const log: number[] = [];
  // 7 went out before and is resent: not registered any more, so not ordered.
  await turn(seq, 7, log);
  await turn(seq, 8, log);
  void turn(seq, 9, log);
  void turn(seq, 10, log);
  await settle();
  assert.deepEqual(log, [7, 8], 'two in flight');
  seq.finished();
  await settle();
  assert.equal(log.length, 3, 'one more goes out');
  seq.finished();
  await settle();
  assert.deepEqual([...log].sort((a, b) => a - b), [7, 8, 9, 10]);
});
