// Whether a member's watch stream is up, for the write path: a write needs the
// stream (its revision is resolved only when the stream shows it), so a write
// that finds the stream down asks for an immediate reconnect and waits — until
// the stream is back, until an attempt started after it asked fails (the member
// really is unreachable: fail fast), or until its deadline (the member hangs). An
// attempt that was already dialing when the write asked may fail because the
// member was still down then (a member that just restarted answers reads before
// that dial gives up): it does not count, the write waits for the next one.
// (The write path then also asks the member directly before it fails: see
// streamUsable in kv/txn/write-executor.ts.)

interface Waiter {
  resolve: (up: boolean) => void;
  timer: NodeJS.Timeout;
  /** Attempts started before this waiter asked. */
  after: number;
}

export class StreamLink {
  private up = false;
  private waiters: Waiter[] = [];
  private attempts = 0;
  /** Set by the member stream: reconnect now instead of at the end of its back-off. */
  onWanted: (() => void) | undefined;

  get connected(): boolean {
    return this.up;
  }

  /** The stream is established (true) or lost (false). */
  set(up: boolean): void {
    this.up = up;
    if (up) this.wake(true);
  }

  /** An attempt to (re)open the stream begins; returns its number for attemptFailed. */
  attemptStarted(): number {
    return ++this.attempts;
  }

  /**
   * Attempt `attempt` failed: the waiters that asked before it started give up.
   * Returns whether others still wait (they asked while it was dialing, so they
   * want another attempt at once).
   */
  attemptFailed(attempt: number): boolean {
    const failed = this.waiters.filter((w) => w.after < attempt);
    this.waiters = this.waiters.filter((w) => w.after >= attempt);
    for (const w of failed) {
      clearTimeout(w.timer);
      w.resolve(false);
    }
    return this.waiters.length > 0;
  }

  /** Resolves true once the stream is up, false when a reconnect attempt fails or at `deadline`. */
  usable(deadline: number): Promise<boolean> {
    if (this.up) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const w: Waiter = {
        resolve,
        after: this.attempts,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          resolve(false);
        }, Math.max(0, deadline - Date.now())),
      };
      this.waiters.push(w);
      this.onWanted?.();
    });
  }

  private wake(up: boolean): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) {
      clearTimeout(w.timer);
      w.resolve(up);
    }
  }
}
