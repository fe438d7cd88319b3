// The record a cross-member transaction keeps in each member it writes while it
// commits (key m/xtxn/<R>, docs/notes/cross-member-transactions.md):
//
// - on every secondary member, written before the decision: the secondary's part
//   of the transaction as the member transaction that applies it (`apply`), and
//   which member is the primary. While it exists, nothing may close revision R or
//   anything above it on that member without first resolving the transaction.
// - on the primary member, written in the same member transaction as the primary's
//   part: the secondaries. Its existence is the decision: committed.
//
// Layout: u8 format (1) | u8 role | uvarint primary | uvarint n | n × uvarint member
//         | the apply transaction (protobuf TxnRequest; secondaries only).

import { TxnRequest } from '../proto/gen/rpc.js';
import { readVarint, varintLength, writeVarint, readVarintList } from '../util/varint.js';

export enum CrossRole {
  Primary = 0,
  Secondary = 1,
}

export interface CrossRecord {
  role: CrossRole;
  /** The member whose record decides the transaction. */
  primary: number;
  /** Primary: the secondary members. Secondary: unused (empty). */
  members: number[];
  /** Secondary: the member transaction that applies this member's part (guarded by its clock). */
  apply?: TxnRequest;
}

const FORMAT = 1;

export function encodeCrossRecord(r: CrossRecord): Buffer {
  const apply = r.apply ? Buffer.from(TxnRequest.encode(r.apply).finish()) : Buffer.alloc(0);
  let size = 2 + varintLength(r.primary) + varintLength(r.members.length) + apply.length;
  for (const m of r.members) size += varintLength(m);
  const out = Buffer.allocUnsafe(size);
  out[0] = FORMAT;
  out[1] = r.role;
  let o = writeVarint(out, 2, r.primary);
  o = writeVarint(out, o, r.members.length);
  for (const m of r.members) o = writeVarint(out, o, m);
  apply.copy(out, o);
  return out;
}

export function decodeCrossRecord(raw: Buffer): CrossRecord {
  if (raw.length < 4 || raw[0] !== FORMAT) throw new Error('malformed metaetcd cross-member transaction record');
  const role = raw[1] as CrossRole;
  const [primary, afterPrimary] = readVarint(raw, 2);
  const [members, o] = readVarintList(raw, afterPrimary);
  const rec: CrossRecord = { role, primary, members };
  if (role === CrossRole.Secondary) rec.apply = TxnRequest.decode(raw.subarray(o));
  return rec;
}
