// A linearizability checker for histories of multi-key transactions over a
// key → value map, using the server's revisions as the witness order (as the
// register checker's checkRevisions does for one key, test/harness/linearizability.ts).
//
// An operation is a transaction: compares on several keys, then the branch
// taken (success when every compare holds) — reads first, then puts and
// deletes. A plain put is a transaction without compares; a multi-key read is
// one without writes. Each acknowledged operation reports whether its compares
// held, what its reads saw (value and mod_revision, or nothing), how many keys
// its deletes removed, and its header revision: a writing operation's own
// revision (unique), a read-only one's the revision it read at.
//
// The witness order is revision order: writes ordered by revision; a read-only
// operation at R after the write at R. The history is linearizable in that
// order when:
//   (i)   no two writes share a revision;
//   (ii)  it respects real time: when A responded before B was invoked,
//         rev(A) <= rev(B), and rev(A) < rev(B) when B writes (a write that
//         began after A ended cannot be at or below what A saw);
//   (iii) replaying the writes in revision order on the model, every operation's
//         compare outcome and reads match the model: a writing operation the
//         state just before its revision, a read-only one the state at its
//         revision; and every delete count matches.
// Operations that failed with an error are indeterminate. One counts as
// applied exactly when some acknowledged read saw a value one of its puts
// wrote (values must be unique per put: the checker refuses a history where
// they are not); it is then placed at the mod_revision that read reports (all
// such reads must agree) and replayed like the others — its branch is the one
// whose put was seen, its compares must select that branch, and its other keys
// are written too (a later read that misses them is a violation: a partial
// transaction). An errored operation nobody saw is left out; that is sound when
// every write is a put with a fresh value and anything that depends on a
// key's state reads it (a compare on a mod_revision the checker has not seen
// written fails the replay instead of passing silently). Errored read-only
// operations have no effect and are dropped.
//
// The first violation found is reported with a readable description.

export type CompareTarget = 'value' | 'version' | 'create' | 'mod';
export type CompareResult = '=' | '!=' | '<' | '>';

export interface MkCompare {
  key: string;
  target: CompareTarget;
  result: CompareResult;
  /** A string for 'value'; a revision or version for the others (0: the key is absent). */
  value: string | bigint;
}

export interface MkBranch {
  /** Keys read (each one key), before the writes. */
  reads?: string[];
  puts?: { key: string; value: string }[];
  /** Keys deleted (each one key). */
  deletes?: string[];
}

export interface MkRead {
  key: string;
  /** null: the key was absent. */
  value: string | null;
  /** mod_revision of the value read (required to place an errored write that wrote it). */
  mod?: bigint;
}

export interface MkOp {
  id: number;
  client: string;
  via?: string;
  compares: MkCompare[];
  success: MkBranch;
  failure: MkBranch;
  /** Invocation and response times (ms, one monotonic clock). */
  start: number;
  end: number;
  /** false: the call failed with an error (outcome unknown). */
  ok: boolean;
  error?: string;
  /** When ok: whether the compares held. */
  succeeded?: boolean;
  /** When ok: what the branch taken's reads saw, in order. */
  reads?: MkRead[];
  /** When ok: keys the branch taken's deletes removed. */
  deleted?: number;
  /** When ok: the response header's revision. */
  revision?: bigint;
}

export interface MkEntry {
  value: string;
  create: bigint;
  mod: bigint;
  version: bigint;
}

export type MkState = Map<string, MkEntry>;

export interface MkReport {
  ok: boolean;
  /** The first violation found, described. */
  violation?: string;
  /** Every violation found (the first ones), for diagnostics. */
  violations: string[];
  writes: number;
  readOnly: number;
  /** Errored operations placed in the history (someone saw their writes). */
  erroredApplied: number;
  /** Errored operations left out (nobody saw them). */
  erroredDropped: number;
  /** For the first violation of the replay: the operations around it on its keys (revision window, and errored ones overlapping it in time). */
  context?: string[];
}

export function describeMkOp(h: MkOp, t0 = 0): string {
  const cmp = h.compares.map((c) => `${c.target}(${c.key}) ${c.result} ${typeof c.value === 'string' ? JSON.stringify(c.value) : c.value}`).join(' && ');
  const branch = (b: MkBranch) =>
    [...(b.reads ?? []).map((k) => `get ${k}`), ...(b.puts ?? []).map((p) => `put ${p.key}=${p.value}`), ...(b.deletes ?? []).map((k) => `del ${k}`)].join(', ') || '-';
  const what = h.compares.length > 0 ? `if ${cmp} then [${branch(h.success)}] else [${branch(h.failure)}]` : `[${branch(h.success)}]`;
  let res: string;
  if (!h.ok) res = `ERROR ${h.error ?? ''}`;
  else {
    const reads = (h.reads ?? []).map((r) => `${r.key}=${r.value === null ? '<absent>' : r.value}${r.mod !== undefined ? `@${r.mod}` : ''}`).join(' ');
    res = `=> ${h.compares.length > 0 ? (h.succeeded ? 'succeeded' : 'failed') : 'ok'}${reads ? ` read ${reads}` : ''}${h.deleted !== undefined && h.deleted > 0 ? ` deleted ${h.deleted}` : ''} at revision ${h.revision}`;
  }
  const end = h.ok ? (h.end - t0).toFixed(1) : 'inf';
  return `#${h.id} ${h.client}${h.via ? `@${h.via}` : ''} [${(h.start - t0).toFixed(1)} .. ${end} ms] ${what} ${res}`;
}

const showEntry = (e: MkEntry | undefined) => (e ? `${e.value} (mod ${e.mod}, create ${e.create}, version ${e.version})` : '<absent>');

/** Whether the branch taken writes (a put, or a delete that removed something). */
function writesOf(h: MkOp): boolean {
  const b = h.succeeded ? h.success : h.failure;
  return (b.puts?.length ?? 0) > 0 || (h.deleted ?? 0) > 0;
}

function compareHolds(c: MkCompare, e: MkEntry | undefined): boolean {
  let cmp: number;
  if (c.target === 'value') {
    if (!e) return false; // etcd: a value compare on an absent key is false
    const v = c.value as string;
    cmp = e.value < v ? -1 : e.value > v ? 1 : 0;
  } else {
    const have = !e ? 0n : c.target === 'mod' ? e.mod : c.target === 'create' ? e.create : e.version;
    const want = BigInt(c.value);
    cmp = have < want ? -1 : have > want ? 1 : 0;
  }
  switch (c.result) {
    case '=':
      return cmp === 0;
    case '!=':
      return cmp !== 0;
    case '<':
      return cmp < 0;
    case '>':
      return cmp > 0;
  }
}

interface Placed {
  op: MkOp;
  rev: bigint;
  writes: boolean;
  /** The branch taken. */
  succeeded: boolean;
  errored: boolean;
}

/**
 * Checks a history from `initial` (the state at `initialRevision`: every
 * write's revision must be above it, every read's at or above). Returns a report; `ok` false names the
 * first violation.
 */
export function checkMultiKey(history: MkOp[], initial: MkState = new Map(), initialRevision = 0n): MkReport {
  const violations: string[] = [];
  const t0 = Math.min(...history.map((h) => h.start), Infinity);
  const d = (h: MkOp) => describeMkOp(h, Number.isFinite(t0) ? t0 : 0);
  const report = (extra: Partial<MkReport> = {}): MkReport => ({
    ok: violations.length === 0,
    ...(violations.length > 0 ? { violation: violations[0]! } : {}),
    violations: violations.slice(0, 20),
    writes: 0,
    readOnly: 0,
    erroredApplied: 0,
    erroredDropped: 0,
    ...extra,
  });

  // Who wrote which value (values are unique per put).
  const writerOf = new Map<string, { op: MkOp; branch: 'success' | 'failure' }>();
  for (const h of history) {
    for (const branch of ['success', 'failure'] as const) {
      for (const p of h[branch].puts ?? []) {
        const id = `${p.key}\u0000${p.value}`;
        const other = writerOf.get(id);
        if (other && other.op !== h) throw new Error(`checkMultiKey: the value ${p.value} of ${p.key} is put by two operations (#${other.op.id}, #${h.id}); values must be unique per put`);
        writerOf.set(id, { op: h, branch });
      }
    }
  }
  for (const [k, e] of initial) writerOf.delete(`${k}\u0000${e.value}`);

  // Errored operations: applied where some acknowledged read saw one of their values, at the mod_revision it reports.
  const placedErrored = new Map<MkOp, { rev: bigint; branch: 'success' | 'failure'; seenBy: MkOp }>();
  for (const h of history) {
    if (!h.ok) continue;
    for (const r of h.reads ?? []) {
      if (r.value === null) continue;
      const w = writerOf.get(`${r.key}\u0000${r.value}`);
      if (!w || w.op.ok) continue;
      if (r.mod === undefined) {
        violations.push(`${d(h)} read ${r.key}=${r.value}, written by the failed ${d(w.op)}, without its mod_revision: the failed operation cannot be placed`);
        continue;
      }
      const prev = placedErrored.get(w.op);
      if (prev && prev.rev !== r.mod) violations.push(`the failed ${d(w.op)} is seen at two revisions: ${prev.rev} by ${d(prev.seenBy)} and ${r.mod} by ${d(h)} (applied in parts)`);
      else if (prev && prev.branch !== w.branch) violations.push(`the failed ${d(w.op)} is seen to have taken both branches (${d(prev.seenBy)}, ${d(h)})`);
      else if (!prev) placedErrored.set(w.op, { rev: r.mod, branch: w.branch, seenBy: h });
    }
  }

  const placed: Placed[] = [];
  let erroredDropped = 0;
  for (const h of history) {
    if (h.ok) {
      if (h.revision === undefined || h.succeeded === undefined) {
        violations.push(`${d(h)} is acknowledged without a revision or a compare outcome`);
        continue;
      }
      placed.push({ op: h, rev: h.revision, writes: writesOf(h), succeeded: h.succeeded, errored: false });
    } else {
      const p = placedErrored.get(h);
      if (p) placed.push({ op: h, rev: p.rev, writes: true, succeeded: p.branch === 'success', errored: true });
      else erroredDropped++;
    }
  }
  const counts = {
    writes: placed.filter((p) => p.writes).length,
    readOnly: placed.filter((p) => !p.writes).length,
    erroredApplied: placedErrored.size,
    erroredDropped,
  };
  if (violations.length > 0) return report(counts);

  // (i) A write's revision is its own.
  const writeAt = new Map<bigint, Placed>();
  for (const p of placed) {
    if (p.writes ? p.rev <= initialRevision : p.rev < initialRevision) violations.push(`${d(p.op)} has revision ${p.rev}, ${p.writes ? 'not above' : 'below'} the initial state's ${initialRevision}`);
    if (!p.writes) continue;
    const other = writeAt.get(p.rev);
    if (other) violations.push(`revision ${p.rev} is taken by two writes: ${d(other.op)}${other.errored ? ' (failed; placed by a read)' : ''} and ${d(p.op)}${p.errored ? ' (failed; placed by a read)' : ''}`);
    else writeAt.set(p.rev, p);
  }

  // (ii) Real time: sweep invocations in order, keeping the highest revision of the operations that had responded.
  const ended = placed.filter((p) => !p.errored).sort((a, b) => a.op.end - b.op.end);
  const byStart = [...placed].sort((a, b) => a.op.start - b.op.start);
  let i = 0;
  let max: Placed | undefined;
  for (const p of byStart) {
    while (i < ended.length && ended[i]!.op.end < p.op.start) {
      if (!max || ended[i]!.rev > max.rev) max = ended[i];
      i++;
    }
    if (!max) continue;
    if (p.writes ? p.rev <= max.rev : p.rev < max.rev) {
      violations.push(
        `real-time order: ${d(p.op)}${p.errored ? ` (failed; placed at ${p.rev} by a read)` : ''} has revision ${p.rev}, but ${d(max.op)} had responded with ${max.rev} before it was invoked`,
      );
    }
  }

  // (iii) Replay in revision order: at each revision, the write (checked against the state before it, then applied), then the read-only operations at it.
  const state: MkState = new Map([...initial].map(([k, e]) => [k, { ...e }]));
  let context: string[] | undefined;
  const touches = (h: MkOp) =>
    new Set([...h.compares.map((c) => c.key), ...[h.success, h.failure].flatMap((b) => [...(b.reads ?? []), ...(b.puts ?? []).map((x) => x.key), ...(b.deletes ?? [])])]);
  const around = (p: Placed): string[] => {
    const keys = touches(p.op);
    const near = (h: MkOp) => [...touches(h)].some((k) => keys.has(k));
    const placedNear = placed.filter((q) => q.rev >= p.rev - 12n && q.rev <= p.rev + 3n && near(q.op)).sort((a, b) => (a.rev < b.rev ? -1 : a.rev > b.rev ? 1 : 0));
    const droppedNear = history.filter((h) => !h.ok && !placedErrored.has(h) && near(h) && h.start < p.op.end);
    return [
      ...placedNear.map((q) => `${q.rev}${q.writes ? ' write' : ' read'}${q.errored ? ' (failed; placed by a read)' : ''}: ${d(q.op)}`),
      ...droppedNear.slice(-5).map((h) => `left out (failed, never seen): ${d(h)}`),
    ];
  };
  const replayViolation = (p: Placed, text: string) => {
    context ??= around(p);
    violations.push(text);
  };
  const order = [...placed].sort((a, b) => (a.rev < b.rev ? -1 : a.rev > b.rev ? 1 : Number(b.writes) - Number(a.writes)));
  for (const p of order) {
    const h = p.op;
    const where = p.writes ? `just before revision ${p.rev}` : `at revision ${p.rev}`;
    const holds = h.compares.every((c) => compareHolds(c, state.get(c.key)));
    if (holds !== p.succeeded) {
      const seen = h.compares.map((c) => `${c.key}: ${showEntry(state.get(c.key))}`).join('; ');
      replayViolation(p, `${d(h)}${p.errored ? ' (failed; placed by a read)' : ''}: its compares ${holds ? 'hold' : 'do not hold'} in the state ${where} (${seen}), but it ${p.succeeded ? 'took the success branch' : 'failed'}`);
    }
    const branch = p.succeeded ? h.success : h.failure;
    if (!p.errored) {
      const want = branch.reads ?? [];
      const got = h.reads ?? [];
      if (got.length !== want.length) replayViolation(p, `${d(h)}: ${got.length} reads reported for ${want.length} reads in the branch taken`);
      for (const r of got) {
        const e = state.get(r.key);
        const okValue = (e?.value ?? null) === r.value;
        const okMod = r.mod === undefined || r.value === null || (e !== undefined && e.mod === r.mod);
        if (!okValue || !okMod) {
          replayViolation(p, `${d(h)}: read ${r.key}=${r.value === null ? '<absent>' : r.value}${r.mod !== undefined ? `@${r.mod}` : ''}, but the state ${where} holds ${showEntry(e)}`);
        }
      }
      if (h.deleted !== undefined) {
        const present = new Set((branch.deletes ?? []).filter((k) => state.has(k))).size;
        if (present !== h.deleted) replayViolation(p, `${d(h)}: deleted ${h.deleted} keys, but ${present} of its delete targets exist in the state ${where}`);
      }
    }
    if (!p.writes) continue;
    for (const k of branch.deletes ?? []) state.delete(k);
    for (const put of branch.puts ?? []) {
      const e = state.get(put.key);
      state.set(put.key, { value: put.value, mod: p.rev, create: e ? e.create : p.rev, version: e ? e.version + 1n : 1n });
    }
  }
  return report({ ...counts, ...(context ? { context } : {}) });
}
