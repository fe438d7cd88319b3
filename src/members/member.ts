// One member cluster as the rest of the proxy sees it: its slot and name, the
// client that talks to it, what this proxy knows of its history (the timeline:
// watermark, revision index, fencing), the sequencer that sends this proxy's
// writes to it in revision order, the batcher that shares its calls among
// concurrent single-key reads, the write batcher that groups its writes, and whether its watch stream is up. The
// stream that feeds the timeline is attached once the composition root has
// wired its listeners.

import type { MemberSequencer } from './member-sequencer.js';
import { MemberReadBatcher } from './read-batcher.js';
import { MemberWriteBatcher } from './write-batcher.js';
import type { MemberTimeline } from '../revision/member-timeline.js';
import type { EtcdClient } from './etcd-client.js';
import type { StreamLink } from './stream-link.js';

export class Member {
  /** Single-key reads of this member, coalesced into shared calls under load. */
  readonly reads: MemberReadBatcher;
  /** This proxy's writes to this member, one member transaction in flight at a time (group commit). */
  readonly writes: MemberWriteBatcher;

  constructor(
    /** The member's slot in the layout (its index in MemberSet). */
    readonly index: number,
    readonly client: EtcdClient,
    readonly timeline: MemberTimeline,
    readonly sequencer: MemberSequencer,
    /** Told the number of client writes of each member transaction the write batcher sends. */
    onWriteBatch?: (writes: number) => void,
  ) {
    this.reads = new MemberReadBatcher(client);
    this.writes = new MemberWriteBatcher(client, onWriteBatch);
  }

  get name(): string {
    return this.client.name;
  }

  /** Whether the member's watch stream is up, and a way to wait for it. */
  get link(): StreamLink {
    return this.timeline.link;
  }
}

/** The member clusters of the meta cluster, by slot. */
export class MemberSet implements Iterable<Member> {
  constructor(private readonly members: readonly Member[]) {}

  get size(): number {
    return this.members.length;
  }

  /** The member in slot `index`; a slot outside the layout is a bug. */
  get(index: number): Member {
    const m = this.members[index];
    if (!m) throw new Error(`no member cluster in slot ${index} (the layout has ${this.members.length})`);
    return m;
  }

  map<T>(f: (m: Member) => T): T[] {
    return this.members.map(f);
  }

  get clients(): EtcdClient[] {
    return this.members.map((m) => m.client);
  }

  [Symbol.iterator](): Iterator<Member> {
    return this.members[Symbol.iterator]();
  }
}
