// Pure planning of partition moves: which partitions go from which member to
// which. A plan is a list of moves, each with one source and one target (the
// protocol moves partitions of one source at a time; see docs/notes/repartitioning.md).

export interface PlannedMove {
  from: number;
  to: number;
  /** Ascending. */
  partitions: number[];
}

/** "move 12 partitions from member 0 to member 2" */
export function describeMove(m: PlannedMove): string {
  return `move ${m.partitions.length} partition${m.partitions.length === 1 ? '' : 's'} from member ${m.from} to member ${m.to}`;
}

export function describePlan(plan: PlannedMove[]): string {
  if (plan.length === 0) return 'nothing to move\n';
  return plan.map((m) => `${describeMove(m)}\n`).join('');
}

function checkMember(n: number, members: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n >= members) throw new Error(`${what} ${n} is not a member (the meta cluster has members 0..${members - 1})`);
}

function partitionsOf(assignment: number[], member: number): number[] {
  const out: number[] = [];
  assignment.forEach((m, p) => {
    if (m === member) out.push(p);
  });
  return out;
}

/** Groups (partition, from, to) triples into moves, ordered by source then target. */
function group(steps: { p: number; from: number; to: number }[]): PlannedMove[] {
  const byPair = new Map<string, PlannedMove>();
  for (const s of steps) {
    const k = `${s.from}>${s.to}`;
    let m = byPair.get(k);
    if (!m) byPair.set(k, (m = { from: s.from, to: s.to, partitions: [] }));
    m.partitions.push(s.p);
  }
  const moves = [...byPair.values()];
  for (const m of moves) m.partitions.sort((a, b) => a - b);
  return moves.sort((a, b) => a.from - b.from || a.to - b.to);
}

/** `partitions move P... --to N`: one move per current owner; partitions already on N are left out. */
export function planMove(assignment: number[], members: number, partitions: number[], to: number): PlannedMove[] {
  checkMember(to, members, 'target member');
  for (const p of partitions) {
    if (!Number.isInteger(p) || p < 0 || p >= assignment.length) throw new Error(`partition ${p} does not exist (the meta cluster has partitions 0..${assignment.length - 1})`);
  }
  const unique = [...new Set(partitions)];
  return group(unique.filter((p) => assignment[p] !== to).map((p) => ({ p, from: assignment[p]!, to })));
}

/** `members drain N`: every partition of N goes to the member with the fewest partitions at that point. */
export function planDrain(assignment: number[], members: number, drained: number): PlannedMove[] {
  checkMember(drained, members, 'member');
  if (members < 2) throw new Error('cannot drain the only member');
  const counts = Array.from({ length: members }, (_, m) => partitionsOf(assignment, m).length);
  const steps: { p: number; from: number; to: number }[] = [];
  for (const p of partitionsOf(assignment, drained)) {
    let best = -1;
    for (let m = 0; m < members; m++) if (m !== drained && (best < 0 || counts[m]! < counts[best]!)) best = m;
    counts[best]!++;
    steps.push({ p, from: drained, to: best });
  }
  return group(steps);
}

/**
 * `rebalance`: every member ends with floor(n/m) or ceil(n/m) partitions, moving
 * as few as possible. The members holding the most keep the extra ones (so no
 * partition moves only to make room), and only a member's surplus moves.
 */
export function planRebalance(assignment: number[], members: number): PlannedMove[] {
  const held = Array.from({ length: members }, (_, m) => partitionsOf(assignment, m));
  const base = Math.floor(assignment.length / members);
  let extra = assignment.length % members;
  const byCount = [...held.keys()].sort((a, b) => held[b]!.length - held[a]!.length || a - b);
  const target = new Array<number>(members).fill(base);
  for (const m of byCount) if (extra > 0 && held[m]!.length > base) (target[m] = base + 1), extra--;
  for (const m of byCount) if (extra > 0 && target[m] === base) (target[m] = base + 1), extra--;
  // The surplus leaves from the end of each donor's list (deterministic plans).
  const surplus: { p: number; from: number }[] = [];
  for (let m = 0; m < members; m++) for (const p of held[m]!.slice(target[m]!)) surplus.push({ p, from: m });
  const steps: { p: number; from: number; to: number }[] = [];
  for (let m = 0; m < members; m++) {
    for (let need = target[m]! - held[m]!.length; need > 0; need--) {
      const s = surplus.shift()!;
      steps.push({ ...s, to: m });
    }
  }
  return group(steps);
}

/** Parses "3", "0-15" and comma-separated lists of those into partition numbers. */
export function parsePartitionList(args: string[]): number[] {
  const out: number[] = [];
  for (const piece of args.flatMap((a) => a.split(',')).filter((s) => s !== '')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(piece);
    if (!m) throw new Error(`invalid partition ${JSON.stringify(piece)} (want N or N-M)`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo) throw new Error(`invalid partition range ${piece}`);
    for (let p = lo; p <= hi; p++) out.push(p);
  }
  return out;
}
