// An append-only index from meta revisions to member revisions for one member,
// learned from the member's watch stream. Entry i says: from member revision
// memberRev[i] on, the member's clock record names meta revision metaRev[i]. Both
// columns strictly increase (per-member order). A bounded number of entries is
// kept; older lookups go to the member's history (revision/member-timeline.ts).

export class RevisionIndex {
  private meta: Float64Array;
  private member: Float64Array;
  private start = 0;
  private end = 0;

  constructor(private readonly maxEntries: number) {
    const initial = Math.min(1024, Math.max(2, maxEntries));
    this.meta = new Float64Array(initial);
    this.member = new Float64Array(initial);
  }

  get size(): number {
    return this.end - this.start;
  }

  /** Meta revision of the newest entry (undefined when empty). */
  get lastMeta(): number | undefined {
    return this.end > this.start ? this.meta[this.end - 1] : undefined;
  }

  get firstMeta(): number | undefined {
    return this.end > this.start ? this.meta[this.start] : undefined;
  }

  get firstMember(): number | undefined {
    return this.end > this.start ? this.member[this.start] : undefined;
  }

  /** Forgets every entry (after the member stream lost continuity). */
  clear(): void {
    this.start = 0;
    this.end = 0;
  }

  append(metaRev: number, memberRev: number): void {
    if (this.end > this.start) {
      const lastMeta = this.meta[this.end - 1]!;
      const lastMember = this.member[this.end - 1]!;
      if (metaRev <= lastMeta || memberRev < lastMember) {
        throw new Error(`revision index out of order: (${metaRev}, ${memberRev}) after (${lastMeta}, ${lastMember})`);
      }
    }
    if (this.end === this.meta.length) this.makeRoom();
    this.meta[this.end] = metaRev;
    this.member[this.end] = memberRev;
    this.end++;
    if (this.end - this.start > this.maxEntries) this.start++;
  }

  /**
   * The newest member revision whose data is the member's state at meta revision
   * `metaRev`, given that the member has processed up to `processed`; undefined
   * when `metaRev` is older than the oldest entry kept.
   */
  lookup(metaRev: number, processed: number): number | undefined {
    return this.locate(metaRev, processed)?.memberRevision;
  }

  /**
   * lookup, and whether `metaRev` falls inside a batch: its entry shares the member
   * revision with the next one, so that member revision (the one returned) also
   * holds the batch's writes above metaRev (readers correct them: kv/batch-read.ts).
   */
  locate(metaRev: number, processed: number): { memberRevision: number; insideBatch: boolean } | undefined {
    const i = this.atOrBefore(metaRev);
    if (i === undefined) return undefined;
    if (i === this.end - 1) return { memberRevision: processed, insideBatch: false };
    if (this.member[i + 1] === this.member[i]) return { memberRevision: this.member[i]!, insideBatch: true };
    return { memberRevision: this.member[i + 1]! - 1, insideBatch: false };
  }

  /**
   * The member revision of the clock record for the newest entry at or below
   * `metaRev` (undefined: older than the index); inside a batch, the one before
   * the batch's, so that compacting there keeps the batch readable.
   */
  recordRevision(metaRev: number): number | undefined {
    const i = this.atOrBefore(metaRev);
    if (i === undefined) return undefined;
    return i < this.end - 1 && this.member[i + 1] === this.member[i] ? this.member[i]! - 1 : this.member[i];
  }

  /** Index of the newest entry whose meta revision is <= metaRev, if any is kept. */
  private atOrBefore(metaRev: number): number | undefined {
    if (this.end === this.start || metaRev < this.meta[this.start]!) return undefined;
    let lo = this.start;
    let hi = this.end - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.meta[mid]! <= metaRev) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Meta revision of the newest entry at or before member revision `memberRev`. */
  metaAt(memberRev: number): number | undefined {
    if (this.end === this.start || memberRev < this.member[this.start]!) return undefined;
    let lo = this.start;
    let hi = this.end - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.member[mid]! <= memberRev) lo = mid;
      else hi = mid - 1;
    }
    return this.meta[lo];
  }

  private makeRoom(): void {
    // At most maxEntries are live, and capacity grows up to twice that, so the
    // in-place compaction below runs once per ~maxEntries appends (amortised O(1)).
    const live = this.end - this.start;
    if (this.start > 0 && live <= this.meta.length / 2) {
      this.meta.copyWithin(0, this.start, this.end);
      this.member.copyWithin(0, this.start, this.end);
    } else {
      const cap = Math.max(this.meta.length * 2, live + 1);
      const meta = new Float64Array(cap);
      const member = new Float64Array(cap);
      meta.set(this.meta.subarray(this.start, this.end));
      member.set(this.member.subarray(this.start, this.end));
      this.meta = meta;
      this.member = member;
    }
    this.start = 0;
    this.end = live;
  }
}
