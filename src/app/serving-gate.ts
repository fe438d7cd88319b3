// Stops a proxy from serving once a partition move or placement change begins
// on its member clusters. Those run offline (docs/design.md, "Repartitioning"):
// the mover refuses while a proxy announces itself in the coordinator, and a
// proxy refuses to start while `m/move/state` exists. A proxy that started in
// the moment between the mover's check and its state record would otherwise go
// on serving with a layout the move is about to change. Its member streams see
// the record appear; from then on every unary call fails with Unavailable and
// /health says why, until the proxy is restarted (after the change it routes by
// the new layout). Watch and keep-alive streams go on: they do not route by the
// layout.

import { unavailable } from '../errors/etcd-error.js';

export class ServingGate {
  private why: string | undefined;

  /** Why the proxy stopped serving, if it did. */
  get closedBecause(): string | undefined {
    return this.why;
  }

  close(why: string): void {
    this.why ??= why;
  }

  /** Throws Unavailable once closed. */
  check(): void {
    if (this.why !== undefined) throw unavailable(this.why);
  }
}
