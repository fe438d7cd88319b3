// Sends this proxy's writes to one member in revision order, with a bound on
// how many are in flight.
//
// A member accepts a write at revision R only while its clock is below R, so a
// write that reaches the member after a higher-revision write has landed must
// retry with a new revision. Writes get their revisions in batches but then
// wait for their own state reads, so without ordering they would go out in
// random order. And etcd itself does not apply concurrent requests in arrival
// order, so the number of writes in flight per member is bounded as well.
//
// The first send of a revision waits until every lower revision this proxy holds
// for the member has gone out; a resend (after a stale-state retry) only waits
// for room in flight.

interface Waiter {
  revision: number;
  ordered: boolean;
  go: () => void;
}

export class MemberSequencer {
  /** Revisions handed to writes on this member that have not gone out yet, ascending. */
  private outstanding: number[] = [];
  private waiters: Waiter[] = [];
  private inFlight = 0;

  constructor(private readonly maxInFlight: number) {}

  /** Called as soon as a revision is handed out. */
  register(revision: number): void {
    const o = this.outstanding;
    let i = o.length;
    while (i > 0 && o[i - 1]! > revision) i--;
    o.splice(i, 0, revision);
  }

  /** Resolves when the write holding `revision` may go out; the caller must then call sent() and, later, finished(). */
  turn(revision: number): Promise<void> {
    const ordered = this.outstanding.includes(revision);
    if (this.inFlight < this.maxInFlight && (!ordered || this.outstanding[0] === revision)) {
      this.inFlight++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push({ revision, ordered, go: resolve }));
  }

  /** The write holding `revision` has gone out, or never will (it was given up). */
  sent(revision: number): void {
    const i = this.outstanding.indexOf(revision);
    if (i >= 0) this.outstanding.splice(i, 1);
    this.wake();
  }

  /** A write that went out has been answered. */
  finished(): void {
    this.inFlight--;
    this.wake();
  }

  /** Whether a write of this proxy holds a revision on this member and has not been answered. */
  get busy(): boolean {
    return this.inFlight > 0 || this.outstanding.length > 0;
  }

  get pending(): number {
    return this.outstanding.length;
  }

  private wake(): void {
    while (this.inFlight < this.maxInFlight && this.waiters.length > 0) {
      const head = this.outstanding[0];
      let i = this.waiters.findIndex((w) => w.ordered && w.revision === head);
      if (i < 0) i = this.waiters.findIndex((w) => !w.ordered);
      if (i < 0) return;
      const [w] = this.waiters.splice(i, 1);
      this.inFlight++;
      w!.go();
    }
  }
}
