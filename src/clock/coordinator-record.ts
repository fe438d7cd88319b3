// The clock record kept in the coordinator etcd: the meta cluster's logical
// clock. `revision` is the highest meta revision handed out; `last[i]` is the
// highest revision handed to a write on member i (what a reader must see member
// i reach before it can read that member "now"); `ceiling` is the bound up to
// which revisions may be handed out before a higher bound is first written
// durably to the members (so a rebuilt clock never goes below a revision any
// client may have seen).

export const CLOCK_KEY = Buffer.from('metaetcd/clock');

export interface CoordinatorRecord {
  format: 1;
  revision: number;
  ceiling: number;
  last: number[];
  /**
   * Per member, a priority revision (0: none): writes on that member allocated
   * after it must not land before it has (see Clock.tick's priority). Absent in
   * records written before priorities existed.
   */
  first?: number[];
  /**
   * The layout generation in force (absent: 1). Bumped by a partition move once
   * every member holds that generation's layout; ticks and readings of the
   * clock route by it (see docs/design.md, "Repartitioning").
   */
  layoutGeneration?: number;
}

export function encodeCoordinatorRecord(r: CoordinatorRecord): Buffer {
  return Buffer.from(JSON.stringify(r));
}

/** Decodes and checks a record; `members`: the member count its arrays must have (absent: any, as long as they agree). */
export function decodeCoordinatorRecord(raw: Buffer, members?: number): CoordinatorRecord {
  const v = JSON.parse(raw.toString('utf8')) as Partial<CoordinatorRecord>;
  if (members !== undefined && v.format === 1 && Array.isArray(v.last) && v.last.length !== members) {
    throw new Error(
      `the clock record in the coordinator covers ${v.last.length} member(s), the layout in the members ${members}: ` +
        'a `metaetcd members add` or `members remove` is unfinished (run the same command again to finish it)',
    );
  }
  members ??= Array.isArray(v.last) ? v.last.length : 0;
  if (
    v.format !== 1 ||
    !Number.isSafeInteger(v.revision) ||
    !Number.isSafeInteger(v.ceiling) ||
    !Array.isArray(v.last) ||
    v.last.length !== members ||
    v.last.some((x) => !Number.isSafeInteger(x)) ||
    (v.first !== undefined && (!Array.isArray(v.first) || v.first.length !== members || v.first.some((x) => !Number.isSafeInteger(x)))) ||
    (v.layoutGeneration !== undefined && !Number.isSafeInteger(v.layoutGeneration))
  ) {
    throw new Error('malformed metaetcd clock record in the coordinator');
  }
  return v as CoordinatorRecord;
}
