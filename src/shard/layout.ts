// The meta cluster's layout: how many partitions keys hash to and which member
// holds each partition. It is stored durably in every member (see
// members/bootstrap.ts) so that every proxy routes identically, whatever order
// its --members flag lists the clusters in, and so that partitions can later be
// moved between members without changing the data format.

import { PlacementRules, route, validPlacementChanges, validRules, type PlacementChange, type PlacementRule, type Route } from './placement.js';

/** Partitions per meta cluster; fixed for its lifetime (the original had 16). */
export const DEFAULT_PARTITIONS = 1024;

/**
 * One completed or running partition move, kept in the layout's history while
 * reads at revisions before it may still need it (see docs/design.md,
 * "Repartitioning"). Until `doneAt`, reads of `from` at revisions >= `at` and of
 * `to` at revisions < `at` must drop the moved partitions' keys (copies).
 */
export interface MoveEntry {
  /** The layout generation that made this move (the first generation with `to` as owner). */
  generation: number;
  partitions: number[];
  from: number;
  to: number;
  /** Flip revision F: writes at revisions < F are on `from`, writes at revisions >= F on `to`. */
  at: number;
  /** Clock revision once the source copies were removed (0 while they are not). */
  doneAt: number;
}

export interface Layout {
  /**
   * Format version of this record (1: no moves ever; 2: with moves, frozen
   * partitions, lease homes or recorded endpoints; 3: with placement rules or
   * their history, set by encodeLayout, so that a proxy of a version without
   * rules, which would route pinned keys by partition, refuses the record instead).
   */
  format: 1 | 2 | 3;
  /** Random identifier of this meta cluster, chosen once at bootstrap (16 hex digits). */
  clusterId: string;
  /** Generation of the assignment; bumped by any future repartitioning. */
  generation: number;
  /** Number of member clusters. */
  members: number;
  /** Number of hash partitions. */
  partitions: number;
  /** assignment[p] = index of the member holding partition p. */
  assignment: number[];
  /**
   * Partition -> member used for lease homes only (leaseHome); fixed at
   * bootstrap so that moves never move lease records. Absent: `assignment` as it
   * was at generation 1 (format 1 records never had moves, so `assignment`).
   */
  leaseAssignment?: number[];
  /**
   * Partitions whose writes are fenced in this member (a move in its final
   * step). Only the source member's record carries them; they are cleared by the
   * flip (next generation) or by a rollback (same generation, rewritten).
   */
  frozen?: number[];
  /** Move history, oldest first (pruned once compaction passes an entry's doneAt). */
  moves?: MoveEntry[];
  /**
   * Each member's endpoints ("url;url") in slot order, as `members add` last
   * recorded them (`members remove` drops the removed slot's entry); only for
   * messages (a proxy missing a member names it). Absent in layouts of meta
   * clusters that never had a member added.
   */
  endpoints?: string[];
  /** Placement rules: key prefixes pinned to members (shard/placement.ts); absent: none. */
  rules?: PlacementRule[];
  /** Applied rule changes, oldest first (pruned once compaction passes an entry's doneAt). */
  placementChanges?: PlacementChange[];
}

export function newLayout(clusterId: string, members: number, partitions = DEFAULT_PARTITIONS): Layout {
  if (members < 1) throw new Error('a meta cluster needs at least one member');
  if (members > partitions) throw new Error(`at most ${partitions} members are supported`);
  const assignment = Array.from({ length: partitions }, (_, p) => p % members);
  return { format: 1, clusterId, generation: 1, members, partitions, assignment };
}

export function encodeLayout(layout: Layout): Buffer {
  const placed = (layout.rules?.length ?? 0) > 0 || (layout.placementChanges?.length ?? 0) > 0;
  return Buffer.from(JSON.stringify(placed ? { ...layout, format: 3 } : layout));
}

export function decodeLayout(raw: Buffer): Layout {
  const v = JSON.parse(raw.toString('utf8')) as Partial<Layout>;
  const partitionList = (a: unknown) =>
    a === undefined || (Array.isArray(a) && a.every((p) => Number.isInteger(p) && p >= 0 && p < (v.partitions as number)));
  if (
    (v.format !== 1 && v.format !== 2 && v.format !== 3) ||
    typeof v.clusterId !== 'string' ||
    typeof v.members !== 'number' ||
    typeof v.partitions !== 'number' ||
    !Array.isArray(v.assignment) ||
    v.assignment.length !== v.partitions ||
    v.assignment.some((m) => !Number.isInteger(m) || m < 0 || m >= (v.members as number)) ||
    (v.leaseAssignment !== undefined &&
      (!Array.isArray(v.leaseAssignment) || v.leaseAssignment.length !== v.partitions || v.leaseAssignment.some((m) => !Number.isInteger(m) || m < 0 || m >= (v.members as number)))) ||
    !partitionList(v.frozen) ||
    (v.moves !== undefined && (!Array.isArray(v.moves) || v.moves.some((e) => !partitionList(e.partitions) || !Number.isSafeInteger(e.at)))) ||
    (v.endpoints !== undefined && (!Array.isArray(v.endpoints) || v.endpoints.length !== v.members || v.endpoints.some((e) => typeof e !== 'string'))) ||
    !validRules(v.rules, v.members) ||
    !validPlacementChanges(v.placementChanges)
  ) {
    throw new Error('malformed metaetcd layout record');
  }
  return v as Layout;
}

/** Routes client keys to member indexes according to a layout. */
export class Router {
  readonly rules: PlacementRules;

  constructor(readonly layout: Layout) {
    this.rules = new PlacementRules(layout.rules);
  }

  get memberCount(): number {
    return this.layout.members;
  }

  /** Where `key` lives: its placement rule's member, else its partition's owner. */
  route(key: Uint8Array): Route {
    return route(this.rules, this.layout.assignment, key);
  }

  memberOf(key: Uint8Array): number {
    return this.route(key).member;
  }

  /**
   * Members that may hold keys of a client range: one for a single key or for a
   * range inside one placement rule (without nested rules elsewhere), otherwise all.
   */
  membersOf(key: Buffer, rangeEnd: Buffer): number[] {
    if (rangeEnd.length === 0) return [this.memberOf(key)];
    const pinned = this.rules.rangeMember(key, rangeEnd);
    return pinned === undefined ? this.allMembers() : [pinned];
  }

  allMembers(): number[] {
    return Array.from({ length: this.layout.members }, (_, i) => i);
  }
}
