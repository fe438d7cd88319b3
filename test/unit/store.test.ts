// What metaetcd stores in members: the value envelope, the clock record and the
// member key mapping (client keys never collide with bookkeeping keys).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clockAtLeastValue, clockGuardValue, ClockKind, decodeClockRecord, encodeClockRecord } from '../../src/store/clock-record.js';
import { decodeEnvelope, encodeEnvelope, MAX_ENVELOPE_OVERHEAD } from '../../src/store/envelope.js';
import {
  InternalKey,
  isDataKey,
  leaseIndexKey,
  leaseOfRecordKey,
  leaseRecordKey,
  parseLeaseIndexKey,
  toClientKey,
  toMemberKey,
  toMemberRange,
} from '../../src/store/keyspace.js';
import { inRange } from '../../src/util/bytes.js';
import { rng } from '../harness/watch-checker.js';

const r = rng(40);
const bytes = (max: number) => Buffer.from(Array.from({ length: Math.floor(r() * max) }, () => Math.floor(r() * 256)));
const rev = () => Math.floor(r() * 2 ** Math.floor(r() * 53));
const lease = () => [0n, 1n, -1n, 2n ** 63n - 1n, -(2n ** 63n), BigInt(rev())][Math.floor(r() * 6)]!;

test('envelope round trip: binary and empty values, signed 64-bit leases, version bases, bounded overhead', () => {
  for (let i = 0; i < 1000; i++) {
    const e = { modRevision: rev(), createRevision: rev(), lease: lease(), versionBase: i % 3 === 0 ? 0 : rev(), value: bytes(20) };
    const raw = encodeEnvelope(e);
    assert.deepEqual(decodeEnvelope(raw), e);
    // Format 1 unless there is a base, so members that never saw a move keep the old format.
    assert.equal(raw[0], e.versionBase === 0 ? 1 : 2);
    assert.ok(raw.length - e.value.length <= MAX_ENVELOPE_OVERHEAD);
  }
  assert.deepEqual(decodeEnvelope(encodeEnvelope({ modRevision: 0, createRevision: 0, lease: 0n, versionBase: 0, value: Buffer.alloc(0) })).value, Buffer.alloc(0));
  // A format 2 envelope, byte by byte: mod 300, create 5, lease 0, base 7, value "v".
  assert.deepEqual(
    encodeEnvelope({ modRevision: 300, createRevision: 5, lease: 0n, versionBase: 7, value: Buffer.from('v') }),
    Buffer.from([2, 0xac, 0x02, 5, 0, 7, 0x76]),
  );
  assert.throws(() => encodeEnvelope({ modRevision: 1, createRevision: 1, lease: 0n, versionBase: -1, value: Buffer.alloc(0) }), /version base/);
  assert.throws(() => decodeEnvelope(Buffer.from([2, 1, 1, 0])), /truncated/);
  assert.throws(() => decodeEnvelope(Buffer.alloc(0)), /not a metaetcd envelope/);
  assert.throws(() => decodeEnvelope(Buffer.from('plain value')), /not a metaetcd envelope/);
  assert.throws(() => decodeEnvelope(Buffer.from([1, 0x80])), /truncated/);
});

test('clock record round trip, and the guard values order like the revisions', () => {
  for (let i = 0; i < 500; i++) {
    const rec = { revision: rev(), kind: [ClockKind.Write, ClockKind.Fence, ClockKind.Bootstrap][i % 3]!, allocation: Array.from({ length: Math.floor(r() * 5) }, rev) };
    assert.deepEqual(decodeClockRecord(encodeClockRecord(rec)), rec);
  }
  // A cross-member part's record carries the op index of each of its events.
  const withRanks = { revision: 42, kind: ClockKind.Write, allocation: [40, 42, 41], ranks: [2, 0, 130, 1] };
  assert.deepEqual(decodeClockRecord(encodeClockRecord(withRanks)), withRanks);
  assert.deepEqual(decodeClockRecord(Buffer.concat([clockGuardValue(7), Buffer.from([ClockKind.Fence])])), { revision: 7, kind: ClockKind.Fence, allocation: [] });
  assert.throws(() => decodeClockRecord(Buffer.alloc(8)), /malformed/);
  // "stored < mine" and "stored >= rev" as byte compares on whole records.
  for (let i = 0; i < 500; i++) {
    const stored = encodeClockRecord({ revision: 1 + Math.floor(r() * 100), kind: ClockKind.Write, allocation: Array.from({ length: 3 }, rev) });
    const storedRev = decodeClockRecord(stored).revision;
    const mine = 1 + Math.floor(r() * 100);
    assert.equal(Buffer.compare(stored, clockGuardValue(mine)) < 0, storedRev < mine, `stored ${storedRev} < ${mine}`);
    assert.equal(Buffer.compare(stored, clockAtLeastValue(mine)) > 0, storedRev >= mine, `stored ${storedRev} >= ${mine}`);
  }
});

test('member keys: round trip, byte order kept, never an internal key', () => {
  const internal = [...Object.values(InternalKey), leaseRecordKey(5n), leaseIndexKey(5n, Buffer.from('k'))];
  for (let i = 0; i < 1000; i++) {
    const a = bytes(6);
    const b = bytes(6);
    const ma = toMemberKey(a);
    assert.ok(isDataKey(ma));
    assert.deepEqual(toClientKey(ma), a);
    assert.equal(Math.sign(Buffer.compare(ma, toMemberKey(b))), Math.sign(Buffer.compare(a, b)));
    for (const k of internal) assert.ok(!isDataKey(k) && !ma.equals(k));
  }
  assert.ok(!isDataKey(Buffer.alloc(0)));
});

test('member ranges cover exactly the translated client range and never reach internal keys', () => {
  const internal = [...Object.values(InternalKey), leaseRecordKey(-1n), leaseIndexKey(1n, Buffer.from([0xff]))];
  const ends = [Buffer.alloc(0), Buffer.from([0]), Buffer.from('m'), Buffer.from([0xff, 0xff])];
  for (let i = 0; i < 1000; i++) {
    const start = bytes(3);
    const end = r() < 0.5 ? ends[Math.floor(r() * ends.length)]! : bytes(3);
    const m = toMemberRange(start, end);
    assert.ok(m.rangeEnd.length === 0 || !(m.rangeEnd.length === 1 && m.rangeEnd[0] === 0), 'never a keyspace-wide end');
    const probe = bytes(4);
    assert.equal(inRange(toMemberKey(probe), m.key, m.rangeEnd), inRange(probe, start, end), `${probe.toString('hex')} in [${start.toString('hex')}, ${end.toString('hex')})`);
    for (const k of internal) assert.ok(!inRange(k, m.key, m.rangeEnd));
  }
});

test('lease record and index keys round trip (signed IDs), other keys are not mistaken for them', () => {
  for (const id of [1n, 0x7fffffffffffffffn, -1n, -(2n ** 63n), 0x1234n]) {
    assert.equal(leaseOfRecordKey(leaseRecordKey(id)), id);
    const ck = bytes(8);
    assert.deepEqual(parseLeaseIndexKey(leaseIndexKey(id, ck)), { lease: id, clientKey: ck });
  }
  assert.equal(leaseRecordKey(1n).toString(), 'm/leases/0000000000000001');
  assert.equal(leaseOfRecordKey(Buffer.from('m/leases/01')), undefined);
  assert.equal(leaseOfRecordKey(toMemberKey(Buffer.from('m/leases/0000000000000001'))), undefined);
  assert.equal(parseLeaseIndexKey(Buffer.from('m/lease/0000000000000001')), undefined);
  assert.equal(parseLeaseIndexKey(Buffer.from('m/lease/0000000000000001xk')), undefined);
});
