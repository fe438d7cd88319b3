// Shared workload for the fault tests: writers that only ever write fresh keys
// (a put of one key, or a transaction putting three keys of one member), so
// that after a fault every write can be judged on its own from the final
// state: an acknowledged write must be there with its revision; a write that
// failed must be there completely (every key, one revision) or not at all; and
// no two writes may share a revision.

import assert from 'node:assert/strict';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { Event, KeyValue } from '../../src/proto/gen/kv.js';
import { Event_EventType } from '../../src/proto/gen/kv.js';
import type { WatchResponse } from '../../src/proto/gen/rpc.js';
import type { Router } from '../../src/shard/layout.js';
import { describeErr, sleep } from '../harness/faults.js';

export interface WriteRecord {
  writer: string;
  via: string;
  keys: string[];
  value: string;
  start: number;
  end: number;
  /** Header revision when acknowledged. */
  rev?: bigint;
  error?: string;
  code?: number;
}

export interface WriterLoopOptions {
  name: string;
  via: string;
  client: () => EtcdClient;
  router: Router;
  prefix: string;
  /** Runs until this returns true. */
  stop: () => boolean;
  out: WriteRecord[];
  /** Fraction of writes that are 3-key transactions (default 0.3). */
  txnShare?: number;
  /** Pause after an error (default 50 ms). */
  errorPauseMs?: number;
  /** Client deadline per call (default 10 s). */
  timeoutMs?: number;
  /** Only write keys of these members (default all); consulted before every write. */
  members?: () => number[];
  /** Writes in progress (added before the call, removed after). */
  inflight?: Set<WriteRecord>;
}

/** Keys `${base}-${i}` (i = 0, 1, ...) until `n` of them live on the member of the first. */
export function sameMemberKeys(router: Router, base: string, n: number): string[] {
  const out: string[] = [];
  let member: number | undefined;
  for (let i = 0; out.length < n && i < 10_000; i++) {
    const k = `${base}-${i}`;
    const m = router.memberOf(Buffer.from(k));
    member ??= m;
    if (m === member) out.push(k);
  }
  return out;
}

/** One writer: fresh keys only, never repeating a key (a failed write's keys are not reused). */
export async function writerLoop(o: WriterLoopOptions): Promise<void> {
  let n = 0;
  const txnShare = o.txnShare ?? 0.3;
  while (!o.stop()) {
    const i = n++;
    const value = `${o.name}#${i}`;
    const isTxn = (i * 7919) % 100 < txnShare * 100;
    const allowed = o.members?.() ?? o.router.allMembers();
    let keys: string[] = [];
    for (let j = 0; keys.length === 0 || !allowed.includes(o.router.memberOf(Buffer.from(keys[0]!))); j++) {
      const base = `${o.prefix}${o.name}-${isTxn ? 't' : 'p'}${i}${j ? `.${j}` : ''}`;
      keys = isTxn ? sameMemberKeys(o.router, base, 3) : [base];
      if (j > 1000) throw new Error(`no key of members ${allowed.join(',')}`);
    }
    const rec: WriteRecord = { writer: o.name, via: o.via, keys, value, start: performance.now(), end: 0 };
    o.inflight?.add(rec);
    try {
      const c = o.client();
      const opts = { timeoutMs: o.timeoutMs ?? 10_000 };
      if (isTxn) {
        const r = await c.txnPartial(
          { success: keys.map((k) => ({ request: { $case: 'requestPut' as const, value: { key: Buffer.from(k), value: Buffer.from(value) } } })) },
          opts,
        );
        rec.rev = r.header!.revision;
      } else {
        const r = await c.put({ key: Buffer.from(keys[0]!), value: Buffer.from(value) }, opts);
        rec.rev = r.header!.revision;
      }
      rec.end = performance.now();
    } catch (err) {
      rec.end = performance.now();
      rec.error = describeErr(err);
      rec.code = (err as { code?: number }).code;
    }
    o.inflight?.delete(rec);
    o.out.push(rec);
    if (rec.error) await sleep(o.errorPauseMs ?? 50);
  }
}

export interface Verdict {
  acked: number;
  failed: number;
  failedApplied: number;
  failedAbsent: number;
}

/**
 * Judges every write against the final state of its prefix: acknowledged writes
 * present with their value and revision; failed writes all-or-nothing; one
 * revision per write. `final` must be a linearizable read taken after the fault
 * was over (so writes still in flight can no longer land).
 */
export function judgeWrites(records: WriteRecord[], final: KeyValue[], label: string): Verdict {
  const byKey = new Map(final.map((kv) => [kv.key.toString(), kv]));
  const problems: string[] = [];
  const revOwner = new Map<bigint, WriteRecord>();
  const claim = (rev: bigint, w: WriteRecord) => {
    const other = revOwner.get(rev);
    if (other && other !== w) problems.push(`revision ${rev} used by two writes: ${show(other)} and ${show(w)}`);
    revOwner.set(rev, w);
  };
  const v: Verdict = { acked: 0, failed: 0, failedApplied: 0, failedAbsent: 0 };
  const known = new Set<string>();
  for (const w of records) {
    for (const k of w.keys) known.add(k);
    const kvs = w.keys.map((k) => byKey.get(k));
    if (w.rev !== undefined) {
      v.acked++;
      kvs.forEach((kv, i) => {
        if (!kv) problems.push(`acknowledged write lost: ${show(w)} (key ${w.keys[i]} missing)`);
        else if (kv.value.toString() !== w.value || kv.modRevision !== w.rev) {
          problems.push(`acknowledged write altered: ${show(w)}; key ${w.keys[i]} holds ${kv.value} at mod ${kv.modRevision}`);
        }
      });
      claim(w.rev, w);
    } else {
      v.failed++;
      const present = kvs.filter((kv) => kv !== undefined);
      if (present.length === 0) v.failedAbsent++;
      else if (present.length === kvs.length) {
        v.failedApplied++;
        const revs = new Set(present.map((kv) => kv!.modRevision));
        if (revs.size !== 1) problems.push(`failed write applied at several revisions ${[...revs].join(',')}: ${show(w)}`);
        for (const kv of present) {
          if (kv!.value.toString() !== w.value) problems.push(`failed write ${show(w)}: key ${kv!.key} holds ${kv!.value}`);
        }
        claim(present[0]!.modRevision, w);
      } else {
        problems.push(`failed write half-applied: ${show(w)}; present: ${present.map((kv) => kv!.key.toString()).join(',')}`);
      }
    }
  }
  for (const kv of final) {
    if (!known.has(kv.key.toString())) problems.push(`key nobody wrote: ${kv.key} = ${kv.value}`);
    if (kv.version !== 1n) problems.push(`key ${kv.key} has version ${kv.version}; every key is written once`);
    if (kv.createRevision !== kv.modRevision) problems.push(`key ${kv.key}: create ${kv.createRevision} != mod ${kv.modRevision}`);
  }
  assert.deepEqual(problems.slice(0, 20), [], `${label}: ${problems.length} problems`);
  return v;
}

export function show(w: WriteRecord): string {
  return `${w.writer}@${w.via} ${w.keys.length > 1 ? 'txn' : 'put'} ${w.keys.join(',')}=${w.value} ${w.rev !== undefined ? `acked at ${w.rev}` : `failed (${w.error})`} [${w.start.toFixed(0)}..${w.end.toFixed(0)} ms]`;
}

/**
 * Checks a watch stream over fresh-key writes against the final state: revisions
 * strictly increase between responses (and never go down inside one), no key
 * appears twice, and the PUT events are exactly the final keys (with the same
 * revisions) whose revision is above `fromRev`.
 */
export function judgeWatch(
  responses: WatchResponse[],
  final: KeyValue[],
  fromRev: bigint,
  label: string,
  opts: { allowCancel?: boolean; failedKeys?: Set<string> } = {},
): { canceled?: WatchResponse } {
  const problems: string[] = [];
  let last = 0n;
  const seen = new Map<string, Event>();
  let canceled: WatchResponse | undefined;
  for (const r of responses) {
    if (canceled) {
      problems.push(`response after the cancel: ${JSON.stringify({ events: r.events.length, canceled: r.canceled })}`);
      break;
    }
    if (r.canceled) {
      canceled = r;
      // The proxy may cut a watch off (it must then say so: compact_revision and a reason), never skip silently.
      if (!opts.allowCancel) problems.push(`watch canceled: ${r.cancelReason} (compact_revision ${r.compactRevision})`);
      else if (r.compactRevision <= 0n || r.cancelReason === '') problems.push(`watch canceled without compact_revision/reason: ${r.cancelReason}`);
      continue;
    }
    if (r.events.length === 0) continue;
    // A response may carry several revisions (etcd sends a catching-up watch its backlog that
    // way), in order; a revision is never split over two responses.
    const revs = r.events.map((e) => e.kv!.modRevision);
    for (let i = 1; i < revs.length; i++) if (revs[i]! < revs[i - 1]!) problems.push(`revisions out of order in one response: ${revs.join(',')}`);
    if (revs[0]! <= last) problems.push(`revision ${revs[0]} delivered after ${last}`);
    last = revs[revs.length - 1]!;
    for (const e of r.events) {
      const k = e.kv!.key.toString();
      if (e.type !== Event_EventType.PUT) problems.push(`unexpected ${Event_EventType[e.type]} of ${k}`);
      if (seen.has(k)) problems.push(`duplicate event for ${k} (revisions ${seen.get(k)!.kv!.modRevision} and ${e.kv!.modRevision})`);
      seen.set(k, e);
    }
  }
  for (const kv of final) {
    if (kv.modRevision <= fromRev) continue;
    const e = seen.get(kv.key.toString());
    // After the cut-off the client relists; before it, only a write that failed (and landed late) may be missing.
    if (!e && canceled && (kv.modRevision > last || opts.failedKeys?.has(kv.key.toString()))) continue;
    if (!e) problems.push(`no event for ${kv.key} (mod ${kv.modRevision})`);
    else if (e.kv!.modRevision !== kv.modRevision || !e.kv!.value.equals(kv.value)) {
      problems.push(`event for ${kv.key} at ${e.kv!.modRevision} = ${e.kv!.value}, final state mod ${kv.modRevision} = ${kv.value}`);
    }
  }
  const finalKeys = new Set(final.map((kv) => kv.key.toString()));
  for (const k of seen.keys()) if (!finalKeys.has(k)) problems.push(`event for ${k}, which is not in the final state`);
  assert.deepEqual(problems.slice(0, 20), [], `${label}: ${problems.length} problems`);
  return canceled ? { canceled } : {};
}

export function failedKeys(records: WriteRecord[]): Set<string> {
  return new Set(records.filter((w) => w.rev === undefined).flatMap((w) => w.keys));
}

export function maxRev(records: WriteRecord[], before = Infinity): bigint {
  let m = 0n;
  for (const w of records) if (w.rev !== undefined && w.end < before && w.rev > m) m = w.rev;
  return m;
}

export function summarize(records: WriteRecord[]): string {
  const errs = new Map<string, number>();
  for (const w of records) if (w.error) errs.set(w.error.slice(0, 120), (errs.get(w.error.slice(0, 120)) ?? 0) + 1);
  return `${records.filter((w) => w.rev !== undefined).length} acked, ${records.filter((w) => w.error).length} failed${
    errs.size ? ': ' + [...errs].map(([e, n]) => `${n}× ${e}`).join(' | ') : ''
  }`;
}
