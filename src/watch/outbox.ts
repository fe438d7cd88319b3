// The outbound side of one client stream: responses are written in order,
// honouring the stream's backpressure ('drain'), with a bound on what may wait.
// A client that does not read its stream while the bound is exceeded is cut off
// (the caller ends the call with a retryable status) instead of growing memory.

import type { ServerDuplexStream } from '@grpc/grpc-js';

export class Outbox<Req, Res> {
  private queue: { msg: Res; bytes: number }[] = [];
  private head = 0;
  private queuedBytes = 0;
  private waitingDrain = false;
  private closed = false;
  private drainWaiters: (() => void)[] = [];

  constructor(
    private readonly call: ServerDuplexStream<Req, Res>,
    private readonly maxQueuedBytes: number,
    private readonly onOverflow: () => void,
  ) {
    call.on('drain', () => {
      this.waitingDrain = false;
      this.flush();
    });
  }

  get pendingBytes(): number {
    return this.queuedBytes;
  }

  /** Resolves when everything queued has been handed to the transport (or the outbox closed). */
  whenDrained(): Promise<void> {
    if (this.closed || (!this.waitingDrain && this.head === this.queue.length)) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  send(msg: Res, bytes: number): void {
    if (this.closed) return;
    if (!this.waitingDrain && this.head === this.queue.length) {
      if (!this.call.write(msg)) this.waitingDrain = true;
      return;
    }
    this.queue.push({ msg, bytes });
    this.queuedBytes += bytes;
    if (this.queuedBytes > this.maxQueuedBytes) {
      this.close();
      this.onOverflow();
    }
  }

  close(): void {
    this.closed = true;
    this.queue = [];
    this.head = 0;
    this.queuedBytes = 0;
    this.wakeDrainWaiters();
  }

  private wakeDrainWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  private flush(): void {
    while (!this.closed && !this.waitingDrain && this.head < this.queue.length) {
      const item = this.queue[this.head++]!;
      this.queuedBytes -= item.bytes;
      if (!this.call.write(item.msg)) this.waitingDrain = true;
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
      if (!this.waitingDrain) this.wakeDrainWaiters();
    }
  }
}
