// The snapshot file codec (src/ops/snapshot/format.ts): round trip, and every
// kind of damage refused with CorruptSnapshotError.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  CorruptSnapshotError,
  encodeHeader,
  encodeKv,
  encodeLease,
  encodeTrailer,
  readSnapshot,
  SnapshotHasher,
  verifySnapshot,
  type SnapshotKv,
} from '../../src/ops/snapshot/format.js';

const dir = mkdtempSync(join(tmpdir(), 'metaetcd-snapshot-format-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const kvs: SnapshotKv[] = [
  { key: Buffer.from([0, 0xff, 0x0a]), value: Buffer.from([0x0d, 0x0a]), createRevision: 2, modRevision: 5, version: 3, lease: 0n },
  { key: Buffer.from('b'), value: Buffer.alloc(0), createRevision: 7, modRevision: 7, version: 1, lease: -5n },
];

function file(name: string, o: { revision?: number; tamper?: (lines: string[]) => string[] } = {}): string {
  const h = new SnapshotHasher();
  const lines = [encodeHeader({ revision: o.revision ?? 9, created: '2026-01-01T00:00:00.000Z', keys: kvs.length, leases: 1 }), encodeLease({ id: -5n, ttl: 10, grantedTtl: 60 }), ...kvs.map(encodeKv)];
  for (const l of lines) h.update(l);
  const all = [...lines, encodeTrailer(kvs.length, 1, h.digest())];
  const p = join(dir, name);
  writeFileSync(p, (o.tamper ? o.tamper(all) : all).join(''));
  return p;
}

test('round trip', async () => {
  const p = file('ok');
  assert.equal((await verifySnapshot(p)).revision, 9);
  const got: unknown[] = [];
  for await (const item of readSnapshot(p)) if ('record' in item) got.push(item.record);
  assert.deepEqual(got, [{ t: 'lease', lease: { id: -5n, ttl: 10, grantedTtl: 60 } }, ...kvs.map((kv) => ({ t: 'kv', kv }))]);
});

test('damage is refused', async () => {
  const cases: Record<string, (l: string[]) => string[]> = {
    truncated: (l) => l.slice(0, -1),
    'record dropped': (l) => [...l.slice(0, 2), ...l.slice(3)],
    'value changed': (l) => l.map((x, i) => (i === 3 ? x.replace('"v":"', '"v":"AAAA') : x)),
    'not json': (l) => l.map((x, i) => (i === 2 ? x.slice(3) : x)),
    'data after the trailer': (l) => [...l, l[2]!],
    empty: () => [],
  };
  for (const [name, tamper] of Object.entries(cases)) {
    await assert.rejects(verifySnapshot(file(name.replace(/ /g, '-'), { tamper })), CorruptSnapshotError, name);
  }
  // A key modified after the snapshot's revision cannot be in it.
  await assert.rejects(verifySnapshot(file('future', { revision: 6 })), /after the snapshot's revision/);
});
