// The Cluster service. MemberList answers with this proxy alone, advertising its
// own client URLs — never the member clusters' — so that clients which sync
// their endpoint list from it keep talking to the proxy. Membership changes are
// refused: member clusters are managed by their own operators.

import type { ClusterServer } from '../proto/gen/rpc.js';
import { unimplemented } from '../errors/etcd-error.js';
import type { HeaderFactory } from '../proto/header.js';
import { unary, type HandlerDeps } from './unary.js';

export interface ClusterServiceDeps extends HandlerDeps {
  header: HeaderFactory;
  name: string;
  clientUrls: string[];
}

export function createClusterService(d: ClusterServiceDeps): ClusterServer {
  const refuse = (what: string) => () => Promise.reject(unimplemented(`${what} (metaetcd proxies are not raft members)`));
  return {
    memberList: unary('MemberList', d, async () => {
      // etcd's MemberList header carries no revision.
      return {
        header: d.header.make(0),
        members: [{ ID: d.header.memberId, name: d.name, peerURLs: [], clientURLs: d.clientUrls, isLearner: false }],
      };
    }),
    memberAdd: unary('MemberAdd', d, refuse('MemberAdd')),
    memberRemove: unary('MemberRemove', d, refuse('MemberRemove')),
    memberUpdate: unary('MemberUpdate', d, refuse('MemberUpdate')),
    memberPromote: unary('MemberPromote', d, refuse('MemberPromote')),
  };
}
