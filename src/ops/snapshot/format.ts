// The snapshot file: JSON lines, one object per line, ASCII only.
//
//   {"t":"header","format":"metaetcd-snapshot","version":1,"revision":R,"created":"<ISO time>","keys":N,"leases":L}
//   {"t":"lease","id":"<decimal>","ttl":T,"grantedTtl":G}            × L
//   {"t":"kv","k":"<b64>","v":"<b64>","c":C,"m":M,"ver":V,"l":"<decimal>"}   × N, in key order
//   {"t":"end","keys":N,"leases":L,"sha256":"<hex>"}
//
// The trailer's sha256 is over every byte before it (header and records, with
// their newlines). Keys and values are base64; lease IDs are decimal strings
// (signed 64-bit, as etcd's), revisions and versions plain numbers.

import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

export const FORMAT_NAME = 'metaetcd-snapshot';
export const FORMAT_VERSION = 1;

export interface SnapshotHeader {
  revision: number;
  created: string;
  keys: number;
  leases: number;
}

export interface SnapshotLease {
  id: bigint;
  /** Remaining TTL (seconds) when the snapshot was taken. */
  ttl: number;
  grantedTtl: number;
}

export interface SnapshotKv {
  key: Buffer;
  value: Buffer;
  createRevision: number;
  modRevision: number;
  version: number;
  lease: bigint;
}

export type SnapshotRecord = { t: 'lease'; lease: SnapshotLease } | { t: 'kv'; kv: SnapshotKv };

export function encodeHeader(h: SnapshotHeader): string {
  return JSON.stringify({ t: 'header', format: FORMAT_NAME, version: FORMAT_VERSION, revision: h.revision, created: h.created, keys: h.keys, leases: h.leases }) + '\n';
}

export function encodeLease(l: SnapshotLease): string {
  return JSON.stringify({ t: 'lease', id: l.id.toString(), ttl: l.ttl, grantedTtl: l.grantedTtl }) + '\n';
}

export function encodeKv(kv: SnapshotKv): string {
  return (
    JSON.stringify({
      t: 'kv',
      k: kv.key.toString('base64'),
      v: kv.value.toString('base64'),
      c: kv.createRevision,
      m: kv.modRevision,
      ver: kv.version,
      l: kv.lease.toString(),
    }) + '\n'
  );
}

export function encodeTrailer(keys: number, leases: number, sha256: string): string {
  return JSON.stringify({ t: 'end', keys, leases, sha256 }) + '\n';
}

/** Writes lines while hashing them: the checksum the trailer carries. */
export class SnapshotHasher {
  private readonly hash: Hash = createHash('sha256');
  update(line: string): string {
    this.hash.update(line, 'utf8');
    return line;
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

export class CorruptSnapshotError extends Error {
  constructor(file: string, why: string) {
    super(`${file}: not a valid metaetcd snapshot (${why}); refusing to restore from it`);
    this.name = 'CorruptSnapshotError';
  }
}

function int(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error(`bad ${what}`);
  return v;
}

function leaseId(v: unknown): bigint {
  if (typeof v !== 'string' || !/^-?\d+$/.test(v)) throw new Error('bad lease id');
  return BigInt.asIntN(64, BigInt(v));
}

function b64(v: unknown, what: string): Buffer {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw new Error(`bad ${what}`);
  return Buffer.from(v, 'base64');
}

function parseHeader(o: Record<string, unknown>): SnapshotHeader {
  if (o.t !== 'header' || o.format !== FORMAT_NAME) throw new Error('no metaetcd snapshot header');
  if (o.version !== FORMAT_VERSION) throw new Error(`format version ${String(o.version)}, this metaetcd reads version ${FORMAT_VERSION}`);
  return { revision: int(o.revision, 'revision'), created: String(o.created), keys: int(o.keys, 'key count'), leases: int(o.leases, 'lease count') };
}

function parseRecord(o: Record<string, unknown>): SnapshotRecord {
  if (o.t === 'lease') return { t: 'lease', lease: { id: leaseId(o.id), ttl: int(o.ttl, 'ttl'), grantedTtl: int(o.grantedTtl, 'granted ttl') } };
  if (o.t === 'kv') {
    const kv: SnapshotKv = {
      key: b64(o.k, 'key'),
      value: b64(o.v, 'value'),
      createRevision: int(o.c, 'create revision'),
      modRevision: int(o.m, 'mod revision'),
      version: int(o.ver, 'version'),
      lease: leaseId(o.l),
    };
    if (kv.key.length === 0 || kv.version < 1 || kv.createRevision < 1 || kv.modRevision < kv.createRevision) throw new Error('impossible key record');
    return { t: 'kv', kv };
  }
  throw new Error(`unknown record type ${JSON.stringify(o.t)}`);
}

/** A record with the byte offset and length of its line (for reading it again, see readRecordAt). */
export interface PositionedRecord {
  record: SnapshotRecord;
  offset: number;
  length: number;
}

/**
 * Reads the file's header and records in order, checking structure as it goes;
 * the checksum and counts are checked at the trailer, so a consumer must not act
 * on the records before the iteration has ended (see verifySnapshot).
 */
export async function* readSnapshot(file: string): AsyncGenerator<SnapshotHeader | PositionedRecord> {
  const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  const hasher = new SnapshotHasher();
  let header: SnapshotHeader | undefined;
  let keys = 0;
  let leases = 0;
  let offset = 0;
  let lineNo = 0;
  let ended = false;
  try {
    for await (const line of lines) {
      lineNo++;
      if (ended) throw new CorruptSnapshotError(file, `data after the trailer at line ${lineNo}`);
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line) as Record<string, unknown>;
        if (typeof o !== 'object' || o === null) throw new Error('not an object');
      } catch {
        throw new CorruptSnapshotError(file, `line ${lineNo} does not parse`);
      }
      const length = Buffer.byteLength(line) + 1;
      try {
        if (!header) {
          header = parseHeader(o);
          hasher.update(line + '\n');
          yield header;
        } else if (o.t === 'end') {
          ended = true;
          const sum = hasher.digest();
          if (o.sha256 !== sum) throw new Error(`checksum mismatch: the trailer says ${String(o.sha256)}, the content hashes to ${sum}`);
          if (o.keys !== keys || o.leases !== leases || header.keys !== keys || header.leases !== leases) {
            throw new Error(`record counts do not match (${keys} keys and ${leases} leases read, header says ${header.keys}/${header.leases})`);
          }
        } else {
          const record = parseRecord(o);
          if (record.t === 'kv' && record.kv.modRevision > header.revision) throw new Error(`a key modified at ${record.kv.modRevision}, after the snapshot's revision`);
          hasher.update(line + '\n');
          if (record.t === 'kv') keys++;
          else leases++;
          yield { record, offset, length };
        }
      } catch (err) {
        if (err instanceof CorruptSnapshotError) throw err;
        throw new CorruptSnapshotError(file, `line ${lineNo}: ${(err as Error).message}`);
      }
      offset += length;
    }
  } finally {
    lines.close();
  }
  if (!header) throw new CorruptSnapshotError(file, 'the file is empty');
  if (!ended) throw new CorruptSnapshotError(file, 'no trailer: the file is truncated');
}

/** Reads the whole file once, checking checksum, structure and counts; returns the header. */
export async function verifySnapshot(file: string): Promise<SnapshotHeader> {
  let header: SnapshotHeader | undefined;
  for await (const item of readSnapshot(file)) if (!('record' in item)) header = item;
  return header!;
}

/** Parses the record line at `offset` (from a PositionedRecord of a verified file). */
export function parseRecordLine(line: string): SnapshotRecord {
  return parseRecord(JSON.parse(line) as Record<string, unknown>);
}
