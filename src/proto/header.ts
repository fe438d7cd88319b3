// Response headers. Every response carries the meta cluster's id (stable: derived
// from the layout), this proxy's member id (derived from the meta cluster id and
// the proxy's advertised URLs), the meta revision and a raft term (the highest
// term reported by the member clusters, refreshed by Status calls).

import { createHash } from 'node:crypto';
import type { ResponseHeader } from '../proto/gen/rpc.js';

export class HeaderFactory {
  readonly clusterId: bigint;
  readonly memberId: bigint;
  raftTerm = 1n;

  constructor(metaClusterId: string, advertisedUrls: string[]) {
    this.clusterId = BigInt.asUintN(64, BigInt(`0x${metaClusterId}`));
    const digest = createHash('sha256').update(metaClusterId).update('\0').update(advertisedUrls.join(',')).digest();
    this.memberId = digest.readBigUInt64BE(0);
  }

  make(revision: number): ResponseHeader {
    return { clusterId: this.clusterId, memberId: this.memberId, revision: BigInt(revision), raftTerm: this.raftTerm };
  }

  observeTerm(term: bigint): void {
    if (term > this.raftTerm) this.raftTerm = term;
  }
}
