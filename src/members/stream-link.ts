// Whether a member's watch stream is up, for the write path: a write needs the
// stream (its revision is resolved only when the stream shows it), so a write
// that finds the stream down asks for an immediate reconnect and waits — until
// the stream is back, until that attempt fails (the member really is
// unreachable: fail fast), or until its deadline (the member hangs).

interface Waiter {
  resolve: (up: boolean) => void;
  timer: NodeJS.Timeout;
}

export class StreamLink {
  private up = false;
  private waiters: Waiter[] = [];
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

  /** An attempt to (re)open the stream failed. */
  attemptFailed(): void {
    this.wake(false);
  }

  /** Resolves true once the stream is up, false when a reconnect attempt fails or at `deadline`. */
  usable(deadline: number): Promise<boolean> {
    if (this.up) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const w: Waiter = {
        resolve,
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
