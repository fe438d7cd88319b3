// What this proxy last saw of each recently written key (from the member streams
// and its own writes): enough to build a write's guards without reading the key
// first. A write built from this cache is still guarded by the key's member
// mod_revision, so a stale entry only costs a retry (the failed attempt returns
// the key's real state); it never changes an outcome. Values are not kept, so
// transactions that need a value (VALUE compares, ignore_value) still read it.

import type { Event } from '../proto/gen/kv.js';
import { Event_EventType } from '../proto/gen/kv.js';
import { decodeEnvelope } from '../store/envelope.js';

export interface KeyMeta {
  /** Member revision of this information (the key's member mod_revision when present). */
  rev: number;
  /** undefined: the key was deleted at `rev`. */
  present?: {
    /** The reported version (member version + versionBase). */
    version: bigint;
    /** The envelope's version base, which a put of the key keeps. */
    versionBase: number;
    createRevision: number;
    modRevision: number;
    lease: bigint;
  };
}

export class KeyCache {
  private readonly entries = new Map<string, KeyMeta>();

  constructor(private readonly maxEntries: number) {}

  /** latin1(member key) → what is known, or undefined when nothing is. */
  get(memberKey: string): KeyMeta | undefined {
    return this.entries.get(memberKey);
  }

  /** Learns from a member revision's client-key events (member form). */
  observe(memberRevision: number, events: Event[]): void {
    for (const ev of events) {
      const k = ev.kv!.key.toString('latin1');
      if (ev.type === Event_EventType.PUT) {
        const env = decodeEnvelope(ev.kv!.value);
        this.set(k, {
          rev: memberRevision,
          present: {
            version: ev.kv!.version + BigInt(env.versionBase),
            versionBase: env.versionBase,
            createRevision: env.createRevision,
            modRevision: env.modRevision,
            lease: env.lease,
          },
        });
      } else {
        this.set(k, { rev: memberRevision });
      }
    }
  }

  set(memberKey: string, meta: KeyMeta): void {
    const old = this.entries.get(memberKey);
    if (old && old.rev >= meta.rev) return;
    this.entries.delete(memberKey);
    this.entries.set(memberKey, meta);
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
  }

  get size(): number {
    return this.entries.size;
  }
}
