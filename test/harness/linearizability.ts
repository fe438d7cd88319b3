// A linearizability checker for single-key register histories (Wing & Gong's
// search with Lowe's memoisation, as in Knossos/Porcupine), plus a shrinker
// that turns a violation into a minimal replay, and cheaper sufficient checks
// that use the server-assigned revisions. A search has three outcomes:
// linearizable, violation, or inconclusive (it ran out of states); the history
// is split at quiescent points (no operation in flight) and each part searched
// from every state the previous part can end in, which keeps most searches small.
//
// Operations on one key (values are unique per write, so the model is a plain
// register holding a value or nothing):
//   put(v)                      -> v
//   delete                      -> nothing; reports deleted 0/1
//   get                         -> observes the value (or nothing)
//   cas(expect, v)              -> if value == expect (expect null: key absent) then v;
//                                  reports whether it succeeded, and on failure
//                                  may report the value it saw
// An operation that failed with an error is indeterminate: it may have taken
// effect at any time after it started (or never); its return time is +inf and
// any result is accepted. Failed gets are dropped (they have no effect).

export type RegisterOp =
  | { kind: 'put'; value: string }
  | { kind: 'delete' }
  | { kind: 'get' }
  | { kind: 'cas'; expect: string | null; value: string };

export interface RegisterResult {
  /** get: the value read; cas failure: the value seen (when reported). */
  value?: string | null;
  /** cas: whether the compare held. */
  succeeded?: boolean;
  /** delete: keys deleted. */
  deleted?: number;
  /** delete: the value it deleted (prev_kv), when it deleted one. */
  prev?: string;
}

export interface HistoryOp {
  id: number;
  key: string;
  /** Which client issued it (for replays). */
  client: string;
  /** Which proxy served it (for replays). */
  via?: string;
  op: RegisterOp;
  /** Invocation and response times (ms, monotonic clock). */
  start: number;
  end: number;
  /** false: the call failed (indeterminate outcome). */
  ok: boolean;
  result?: RegisterResult;
  /** Header revision of the response. */
  revision?: bigint;
  /** get: mod_revision of the value read. */
  modRevision?: bigint;
  error?: string;
}

type State = string | null;

/** The next state if `op` (with its observed result) is legal in `state`, else undefined. */
function step(state: State, h: HistoryOp): { next: State } | undefined {
  const op = h.op;
  const r = h.result;
  switch (op.kind) {
    case 'put':
      return { next: op.value };
    case 'delete':
      if (h.ok && r?.deleted !== undefined && r.deleted !== (state === null ? 0 : 1)) return undefined;
      if (h.ok && r?.prev !== undefined && r.prev !== state) return undefined;
      return { next: null };
    case 'get':
      if (!h.ok) return { next: state };
      return r?.value === state ? { next: state } : undefined;
    case 'cas': {
      const holds = state === op.expect;
      if (!h.ok) return { next: holds ? op.value : state };
      if (r?.succeeded !== holds) return undefined;
      if (!holds && r?.value !== undefined && r.value !== state) return undefined;
      return { next: holds ? op.value : state };
    }
  }
}

/** Operations with an effect on the register (a determinate failed cas, a get, or a delete of nothing has none). */
export function hasEffect(h: HistoryOp): boolean {
  switch (h.op.kind) {
    case 'get':
      return false;
    case 'cas':
      return !h.ok || h.result?.succeeded === true;
    case 'delete':
      return !h.ok || h.result?.deleted !== 0;
    case 'put':
      return true;
  }
}

/** What a search established: a proof, a refutation, or neither (it ran out of states). */
export type Outcome = 'linearizable' | 'violation' | 'inconclusive';

export interface CheckResult {
  outcome: Outcome;
  /** Longest linearized prefix found (ids), for diagnostics. */
  partial?: number[];
  states: number;
}

interface Entry {
  kind: 'call' | 'return';
  op: number; // index into ops
  time: number;
  match?: Entry; // call -> its return
  prev?: Entry;
  next?: Entry;
}

/** Values some operation saw in the register (so some write must have put them there). */
function observedValues(history: HistoryOp[]): Set<string> {
  const seen = new Set<string>();
  for (const h of history) {
    if (!h.ok) continue;
    const r = h.result;
    if (h.op.kind === 'get' && typeof r?.value === 'string') seen.add(r.value);
    if (h.op.kind === 'cas' && r?.succeeded && h.op.expect !== null) seen.add(h.op.expect);
    if (h.op.kind === 'cas' && !r?.succeeded && typeof r?.value === 'string') seen.add(r.value);
    if (h.op.kind === 'delete' && r?.prev !== undefined) seen.add(r.prev);
  }
  return seen;
}

/**
 * Operations the search must consider: failed gets are dropped (no effect),
 * and so are failed writes whose value nobody ever saw. That is sound when
 * every operation that depends on the register's value reports it (gets, cas
 * failures, deletes with their prev value): a linearization that applies such
 * a write stays legal without it, since nothing in between could have seen it.
 */
export function relevant(history: HistoryOp[]): HistoryOp[] {
  const seen = observedValues(history);
  const reportsState = (h: HistoryOp) =>
    !h.ok || h.op.kind === 'put' || h.op.kind === 'get' || (h.op.kind === 'cas' && (h.result?.succeeded || h.result?.value !== undefined)) || (h.op.kind === 'delete' && (h.result?.deleted === 0 || h.result?.prev !== undefined));
  const prunable = history.every(reportsState);
  return history.filter((h) => {
    if (h.ok) return true;
    if (h.op.kind === 'get') return false;
    if (prunable && (h.op.kind === 'put' || h.op.kind === 'cas') && !seen.has(h.op.value)) return false;
    return true;
  });
}

/**
 * Splits operations (sorted by invocation) at quiescent points: every operation
 * before a cut returned before every operation after it was invoked, so every
 * linearization is one of the first part followed by one of the rest.
 */
function quiescentSegments(ops: HistoryOp[]): HistoryOp[][] {
  const sorted = [...ops].sort((a, b) => a.start - b.start);
  const segments: HistoryOp[][] = [];
  let maxEnd = -Infinity;
  for (const h of sorted) {
    if (segments.length === 0 || h.start > maxEnd) segments.push([]);
    segments[segments.length - 1]!.push(h);
    maxEnd = Math.max(maxEnd, h.ok ? h.end : Number.POSITIVE_INFINITY);
  }
  return segments;
}

/** Is this history of ONE key linearizable from `initial`? Searches each quiescent segment from every state the previous one can end in. */
export function checkRegister(history: HistoryOp[], initial: State = null, maxStates = 2_000_000): CheckResult {
  const segments = quiescentSegments(relevant(history));
  let starts = new Set<State>([initial]);
  let states = 0;
  const done: number[] = [];
  for (const [i, seg] of segments.entries()) {
    const last = i === segments.length - 1;
    const ends = new Set<State>();
    let best: number[] = [];
    for (const s of starts) {
      const r = search(seg, s, maxStates - states, !last);
      states += r.states;
      if (r.partial.length > best.length) best = r.partial;
      if (r.exhausted) return { outcome: 'inconclusive', partial: [...done, ...best], states };
      for (const e of r.ends) ends.add(e);
      if (last && ends.size > 0) break;
    }
    if (ends.size === 0) return { outcome: 'violation', partial: [...done, ...best], states };
    starts = ends;
    done.push(...seg.map((h) => h.id));
  }
  return { outcome: 'linearizable', states };
}

interface SearchResult {
  /** States the register can be in after a linearization of all of `ops` (only the first one found unless `all`). */
  ends: Set<State>;
  /** The budget ran out before the search finished. */
  exhausted: boolean;
  partial: number[];
  states: number;
}

function search(ops: HistoryOp[], initial: State, maxStates: number, all: boolean): SearchResult {
  const n = ops.length;
  const ends = new Set<State>();
  // Events: calls before returns at equal times (such operations overlap).
  const entries: Entry[] = [];
  ops.forEach((h, i) => {
    const call: Entry = { kind: 'call', op: i, time: h.start };
    const ret: Entry = { kind: 'return', op: i, time: h.ok ? h.end : Number.POSITIVE_INFINITY };
    call.match = ret;
    entries.push(call, ret);
  });
  entries.sort((a, b) => a.time - b.time || (a.kind === b.kind ? a.op - b.op : a.kind === 'call' ? -1 : 1));
  const head: Entry = { kind: 'call', op: -1, time: -Infinity };
  let prev = head;
  for (const e of entries) {
    prev.next = e;
    e.prev = prev;
    prev = e;
  }

  const lift = (e: Entry) => {
    e.prev!.next = e.next;
    if (e.next) e.next.prev = e.prev;
    const m = e.match!;
    m.prev!.next = m.next;
    if (m.next) m.next.prev = m.prev;
  };
  const unlift = (e: Entry) => {
    const m = e.match!;
    m.prev!.next = m;
    if (m.next) m.next.prev = m;
    e.prev!.next = e;
    if (e.next) e.next.prev = e;
  };

  const words = Math.ceil(n / 30);
  const bits = new Array<number>(words).fill(0);
  const setBit = (i: number, on: boolean) => {
    const w = Math.floor(i / 30);
    const m = 1 << i % 30;
    bits[w] = on ? bits[w]! | m : bits[w]! & ~m;
  };
  const cache = new Set<string>();
  const stack: { entry: Entry; state: State }[] = [];
  let state = initial;
  let entry = head.next;
  let states = 0;
  let best: number[] = [];
  const result = (exhausted: boolean): SearchResult => ({ ends, exhausted, partial: best, states });

  for (;;) {
    if (!head.next) {
      // Everything linearized: note the end state; look for other ones only when asked to.
      ends.add(state);
      if (!all) return result(false);
    }
    if (++states > maxStates) return result(true);
    if (!entry || entry.kind === 'return') {
      // Nothing more can be linearized here (or a return whose call is not linearized yet: every order from here on is impossible): backtrack.
      const top = stack.pop();
      if (!top) return result(false);
      state = top.state;
      setBit(top.entry.op, false);
      unlift(top.entry);
      entry = top.entry.next;
      continue;
    }
    const r = step(state, ops[entry.op]!);
    if (r) {
      setBit(entry.op, true);
      const key = `${bits.join(',')}|${r.next === null ? '\u0000null' : r.next}`;
      if (!cache.has(key)) {
        cache.add(key);
        stack.push({ entry, state });
        if (stack.length > best.length) best = stack.map((s) => ops[s.entry.op]!.id);
        state = r.next;
        lift(entry);
        entry = head.next;
        continue;
      }
      setBit(entry.op, false);
    }
    entry = entry.next;
  }
}

// ---------------------------------------------------------------------------
// Shrinking a violation to a minimal replay

/**
 * A sub-history that is a sound witness: it keeps every write that started
 * before the last included operation ended (such writes may have been
 * linearized before it), so if the full history were linearizable, so would
 * this one be.
 */
function closedPrefix(byStart: HistoryOp[], k: number): HistoryOp[] {
  const inc = new Set<HistoryOp>(byStart.slice(0, k));
  for (;;) {
    let maxEnd = -Infinity;
    for (const h of inc) maxEnd = Math.max(maxEnd, h.ok ? h.end : Number.POSITIVE_INFINITY);
    let added = false;
    for (const h of byStart) {
      if (!inc.has(h) && hasEffect(h) && h.start < maxEnd) {
        inc.add(h);
        added = true;
      }
    }
    if (!added) break;
  }
  return byStart.filter((h) => inc.has(h));
}

/**
 * Shrinks a non-linearizable history: the shortest closed prefix (by
 * invocation) that fails, then operations without effect (gets, failed cas,
 * deletes of nothing) removed one by one while it still fails. Removing an
 * operation without effect, or writes that started after everything else
 * ended, never turns a linearizable history into a failing one, so the result
 * is a real violation.
 */
export function shrink(history: HistoryOp[], initial: State = null): HistoryOp[] {
  const byStart = relevant(history).sort((a, b) => a.start - b.start);
  const fails = (h: HistoryOp[]) => {
    return checkRegister(h, initial, 200_000).outcome === 'violation';
  };
  let lo = 1;
  let hi = byStart.length;
  if (!fails(closedPrefix(byStart, hi))) return byStart;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (fails(closedPrefix(byStart, mid))) hi = mid;
    else lo = mid + 1;
  }
  let cur = closedPrefix(byStart, lo);
  for (let i = cur.length - 1; i >= 0; i--) {
    if (hasEffect(cur[i]!)) continue;
    const without = cur.filter((_, j) => j !== i);
    if (fails(without)) cur = without;
  }
  return cur;
}

export function describeOp(h: HistoryOp, t0 = 0): string {
  const o = h.op;
  const what =
    o.kind === 'put'
      ? `put(${o.value})`
      : o.kind === 'delete'
        ? 'delete()'
        : o.kind === 'get'
          ? 'get()'
          : `cas(${o.expect === null ? '<absent>' : o.expect} -> ${o.value})`;
  let res: string;
  if (!h.ok) res = `ERROR ${h.error ?? ''}`;
  else if (o.kind === 'get') res = `=> ${h.result?.value === null ? '<absent>' : h.result?.value}${h.modRevision !== undefined ? ` mod ${h.modRevision}` : ''}`;
  else if (o.kind === 'cas') res = `=> ${h.result?.succeeded ? 'ok' : `failed${h.result?.value !== undefined ? ` (saw ${h.result.value ?? '<absent>'})` : ''}`}`;
  else if (o.kind === 'delete') res = `=> deleted ${h.result?.deleted}${h.result?.prev !== undefined ? ` (${h.result.prev})` : ''}`;
  else res = '=> ok';
  const end = h.ok ? (h.end - t0).toFixed(1) : 'inf';
  return `[${(h.start - t0).toFixed(1)} .. ${end} ms] ${h.client}${h.via ? `@${h.via}` : ''} #${h.id} ${what} ${res}${h.revision !== undefined ? ` (header ${h.revision})` : ''}`;
}

/** A printable replay of a (shrunk) history, times relative to its first invocation. */
export function replay(history: HistoryOp[], initial: State = null): string {
  const sorted = [...history].sort((a, b) => a.start - b.start);
  const t0 = sorted[0]?.start ?? 0;
  return [`key ${sorted[0]?.key ?? '?'}, initially ${initial === null ? '<absent>' : initial}:`, ...sorted.map((h) => '  ' + describeOp(h, t0))].join('\n');
}

export interface KeyReport {
  key: string;
  ops: number;
  result: CheckResult;
  /** A violation: a minimal replay. Inconclusive: what was tried. */
  detail: string;
}

export interface HistoryReport {
  checked: number;
  violations: KeyReport[];
  /** Keys whose search gave up: neither proven linearizable nor refuted. */
  inconclusive: KeyReport[];
  states: number;
}

const RETRY_FACTOR = 4;

/** Checks each key's history: violations (with minimal replays) and inconclusive keys, reported apart. */
export function checkHistories(history: HistoryOp[], initial: (key: string) => State = () => null, maxStates = 2_000_000): HistoryReport {
  const byKey = new Map<string, HistoryOp[]>();
  for (const h of history) byKey.set(h.key, [...(byKey.get(h.key) ?? []), h]);
  const report: HistoryReport = { checked: byKey.size, violations: [], inconclusive: [], states: 0 };
  for (const [key, ops] of byKey) {
    const init = initial(key);
    const result = checkRegister(ops, init, maxStates);
    report.states += result.states;
    if (result.outcome === 'violation') {
      report.violations.push({ key, ops: ops.length, result, detail: replay(shrink(ops, init), init) });
    } else if (result.outcome === 'inconclusive') {
      // One retry with a larger budget before giving up on the key.
      const retry = checkRegister(ops, init, maxStates * RETRY_FACTOR);
      report.states += retry.states;
      if (retry.outcome === 'violation') report.violations.push({ key, ops: ops.length, result: retry, detail: replay(shrink(ops, init), init) });
      else if (retry.outcome === 'inconclusive') report.inconclusive.push({ key, ops: ops.length, result: retry, detail: `key ${key}: search gave up after ${result.states} and then ${retry.states} states over ${ops.length} operations` });
    }
  }
  return report;
}

// ---------------------------------------------------------------------------
// Sufficient conditions from server revisions

/**
 * Checks, over all keys, that acknowledged writes have distinct revisions; that
 * revisions respect real time (an operation that started after another ended
 * has a header revision at least as high, strictly higher for writes with an
 * effect); and that every get that read a value reports the mod_revision of
 * the acknowledged write that wrote it. Returns the problems found.
 */
export function checkRevisions(history: HistoryOp[]): string[] {
  const problems: string[] = [];
  const ok = history.filter((h) => h.ok && h.revision !== undefined);
  const writers = new Map<string, HistoryOp>();
  const byRev = new Map<bigint, HistoryOp>();
  for (const h of ok) {
    if (h.op.kind === 'put' || (h.op.kind === 'cas' && h.result?.succeeded)) {
      writers.set(`${h.key}\u0000${h.op.value}`, h);
    }
    if (hasEffect(h)) {
      const dup = byRev.get(h.revision!);
      if (dup) problems.push(`revision ${h.revision} acknowledged to two writes: ${describeOp(dup)} and ${describeOp(h)}`);
      byRev.set(h.revision!, h);
    }
  }
  // Real-time order: sweep by end time keeping the highest revision returned so far.
  const byEnd = [...ok].sort((a, b) => a.end - b.end);
  const byStart = [...ok].sort((a, b) => a.start - b.start);
  let i = 0;
  let max = -1n;
  let maxOp: HistoryOp | undefined;
  for (const h of byStart) {
    while (i < byEnd.length && byEnd[i]!.end < h.start) {
      if (byEnd[i]!.revision! > max) {
        max = byEnd[i]!.revision!;
        maxOp = byEnd[i];
      }
      i++;
    }
    if (!maxOp) continue;
    if (hasEffect(h) ? h.revision! <= max : h.revision! < max) {
      problems.push(`${describeOp(h)} has header revision ${h.revision}, but ${describeOp(maxOp)} had returned ${max} before it started`);
    }
  }
  for (const h of ok) {
    if (h.op.kind !== 'get' || h.result?.value === null || h.result?.value === undefined || h.modRevision === undefined) continue;
    const w = writers.get(`${h.key}\u0000${h.result.value}`);
    if (w && w.revision !== h.modRevision) problems.push(`${describeOp(h)} reports mod_revision ${h.modRevision}, but the write was acknowledged at ${w.revision}`);
  }
  return problems;
}
