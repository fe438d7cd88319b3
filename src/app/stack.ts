// An ordered start with a reverse-ordered stop: each part that started registers
// how to stop it, and stop() runs those in reverse, one after the other, so a
// part is stopped only after everything started after it (and depending on it)
// has stopped. A stop that fails is logged and the rest still run.

import type { Logger } from '../log.js';

export class StopStack {
  private readonly stops: { what: string; stop: () => void | Promise<void> }[] = [];
  private stopping: Promise<void> | undefined;

  constructor(private readonly log: Logger) {}

  /** Registers how to stop a part that has just started. */
  defer(what: string, stop: () => void | Promise<void>): void {
    this.stops.push({ what, stop });
  }

  /** Stops every part, last started first; concurrent callers share one stop. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const { what, stop } of this.stops.reverse()) {
        try {
          await stop();
        } catch (err) {
          this.log.warn({ part: what, err: String(err) }, 'stopping a part of the proxy failed');
        }
      }
      this.stops.length = 0;
    })();
    return this.stopping;
  }
}
