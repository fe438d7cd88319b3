// The lean server's HTTP/2 sessions: how many calls each has open, keepalive
// pings while it lives (a ping not answered in time destroys it), and closing it
// after --grpc-server-keepalive-max-idle without calls. Calls report their start
// and end here (CallHost); the server learns when the last session has closed.

import type http2 from 'node:http2';
import type { CallHost } from './calls.js';
import { WINDOW } from './wire.js';

export interface SessionOptions {
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
  /** Close sessions without calls for this long; 0 = never. */
  maxIdleMs: number;
}

interface SessionState {
  calls: number;
  idleTimer: NodeJS.Timeout | undefined;
  pingTimer: NodeJS.Timeout | undefined;
}

export class Sessions implements CallHost {
  private readonly all = new Map<http2.Http2Session, SessionState>();

  constructor(
    private readonly o: SessionOptions,
    /** Called after each session closes. */
    private readonly onClosed: () => void,
  ) {}

  get size(): number {
    return this.all.size;
  }

  /** A new session; with `closing` (the server is shutting down) it is closed at once. */
  add(s: http2.Http2Session, closing: boolean): void {
    const st: SessionState = { calls: 0, idleTimer: undefined, pingTimer: undefined };
    this.all.set(s, st);
    s.on('error', () => {});
    try {
      s.setLocalWindowSize(WINDOW);
    } catch {
      /* closed already */
    }
    s.once('close', () => {
      if (st.idleTimer) clearTimeout(st.idleTimer);
      if (st.pingTimer) clearTimeout(st.pingTimer);
      this.all.delete(s);
      this.onClosed();
    });
    if (closing) {
      s.close();
      return;
    }
    this.armIdle(s, st);
    if (this.o.keepaliveIntervalMs > 0) this.armPing(s, st);
  }

  callStarted(s: http2.Http2Session | undefined): void {
    const st = s && this.all.get(s);
    if (!st) return;
    st.calls++;
    if (st.idleTimer) {
      clearTimeout(st.idleTimer);
      st.idleTimer = undefined;
    }
  }

  callEnded(s: http2.Http2Session | undefined): void {
    const st = s && this.all.get(s);
    if (!st) return;
    st.calls--;
    if (st.calls === 0) this.armIdle(s!, st);
  }

  /** Closes every session (gracefully, or at once with `destroy`). */
  closeAll(destroy: boolean): void {
    for (const s of this.all.keys()) {
      if (destroy && !s.destroyed) s.destroy();
      else if (!destroy && !s.closed) s.close();
    }
  }

  private armPing(s: http2.Http2Session, st: SessionState): void {
    st.pingTimer = setTimeout(() => {
      st.pingTimer = undefined;
      if (s.destroyed || s.closed) return;
      let answered = false;
      const dead = setTimeout(() => {
        if (!answered && !s.destroyed) s.destroy();
      }, this.o.keepaliveTimeoutMs);
      dead.unref();
      try {
        s.ping((err) => {
          answered = true;
          clearTimeout(dead);
          if (err) {
            if (!s.destroyed) s.destroy();
            return;
          }
          this.armPing(s, st);
        });
      } catch {
        clearTimeout(dead);
        if (!s.destroyed) s.destroy();
      }
    }, this.o.keepaliveIntervalMs);
    st.pingTimer.unref();
  }

  private armIdle(s: http2.Http2Session, st: SessionState): void {
    if (this.o.maxIdleMs <= 0 || st.calls > 0) return;
    if (st.idleTimer) clearTimeout(st.idleTimer);
    st.idleTimer = setTimeout(() => {
      st.idleTimer = undefined;
      if (st.calls === 0 && !s.closed && !s.destroyed) {
        s.goaway();
        s.close();
      }
    }, this.o.maxIdleMs);
    st.idleTimer.unref();
  }
}
