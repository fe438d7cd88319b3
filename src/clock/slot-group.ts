// The revisions handed, in one coordinator round trip, to the writes on one
// member: they share them as slots (whichever write reaches the member first
// takes the lowest still free, see kv/txn/member-txn.ts).
//
// The group also knows when its unused revisions can be given back. A reader at
// revision R waits until every member has reached R, so a revision nobody will
// write must be released (the member's clock raised to it). That may only happen
// once every write of the group is done: raising the clock earlier would push a
// sibling still in flight out of its slots. And since the clock only moves up,
// releasing the top slot covers every unused slot below it.

/** A meta revision a write may land at. */
export interface Slot {
  revision: number;
  /** Allocation vector at this revision (see store/clock-record.ts). */
  allocation: number[];
}

/** Most revisions that concurrent writes on one member may share as slots. */
export const SLOT_GROUP = 8;

export class SlotGroup {
  /** Ascending; one per write of the group. */
  readonly slots: Slot[] = [];
  /** Writes of the group not done with it yet. */
  private pending = 0;
  /** Whether a write landed at the top slot (which releases nothing then). */
  private topTaken = false;

  /** Adds the slot of one more write (only while the clock allocates the group). */
  add(slot: Slot): void {
    this.slots.push(slot);
    this.pending++;
  }

  get full(): boolean {
    return this.slots.length >= SLOT_GROUP;
  }

  /** The highest revision of the group. */
  get top(): Slot {
    return this.slots[this.slots.length - 1]!;
  }

  /**
   * One write is done with the group: it landed at revision `landed`, or it gave
   * up or moved to another group (undefined). True when this was the last write
   * and none took the top slot: the caller must then release the top revision
   * (clock := top, if still lower).
   */
  finish(landed: number | undefined): boolean {
    if (landed !== undefined && landed === this.top.revision) this.topTaken = true;
    return --this.pending === 0 && !this.topTaken;
  }
}
