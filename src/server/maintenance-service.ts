// The Maintenance service. Status aggregates the member clusters (db sizes
// summed, highest raft term, member errors) and reports the etcd version this
// proxy honours; a member cluster that does not answer is listed in `errors`
// rather than failing the call. Alarm and Defragment fan out to every member
// cluster. Hash, HashKV, Snapshot and MoveLeader have no meaning for a keyspace
// spread over several clusters and are refused with Unimplemented.

import type { Clock } from '../clock/clock.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { type MaintenanceServer, type StatusResponse } from '../proto/gen/rpc.js';
import { messageOf, unimplemented } from '../errors/etcd-error.js';
import { toServiceStatus } from '../errors/grpc-status.js';
import type { HeaderFactory } from '../proto/header.js';
import { withTimeout } from '../util/timeout.js';
import { unary, type HandlerDeps } from './unary.js';
import { MAINTENANCE_ADMIN_ERRORS, type AuthGuard } from '../auth/guard.js';

export interface MaintenanceServiceDeps extends HandlerDeps {
  members: EtcdClient[];
  coordinator: EtcdClient;
  clock: Clock;
  header: HeaderFactory;
  /** The etcd version Status reports (see the README: it gates kube-apiserver features). */
  version: () => string;
  auth?: AuthGuard | undefined;
}

/** How long Status waits for each member cluster before listing it as unreachable. */
const STATUS_MEMBER_TIMEOUT_MS = 1000;

/**
 * The clock's current revision; when the coordinator does not answer within
 * STATUS_MEMBER_TIMEOUT_MS (or fails), the highest revision this proxy has seen
 * (the proxy read the clock before it started serving, so there is one).
 */
async function currentRevision(clock: Clock): Promise<number> {
  try {
    return (await withTimeout(clock.now(), STATUS_MEMBER_TIMEOUT_MS, 'clock read')).revision;
  } catch (err) {
    if (clock.highestSeen() > 0) return clock.highestSeen();
    throw err;
  }
}

export function createMaintenanceService(d: MaintenanceServiceDeps): MaintenanceServer {
  const all = async <T>(fn: (c: EtcdClient, i: number) => Promise<T>): Promise<T[]> =>
    Promise.all(
      d.members.map(async (c, i) => {
        return await fn(c, i);
      }),
    );
  return {
    status: unary('Status', d, async () => {
      // Status describes the proxy, which keeps serving while a member cluster is
      // unreachable: such a member is listed in `errors` instead of failing the
      // call (kube-apiserver reads the version from it at start and on every scrape).
      const [settled, revision] = await Promise.all([
        Promise.allSettled(d.members.map((c) => c.status({ timeoutMs: STATUS_MEMBER_TIMEOUT_MS }))),
        currentRevision(d.clock),
      ]);
      let dbSize = 0n;
      let dbSizeInUse = 0n;
      let raftIndex = 0n;
      let raftAppliedIndex = 0n;
      const errors: string[] = [];
      let reached = 0;
      settled.forEach((r, i) => {
        if (r.status === 'rejected') {
          errors.push(`member ${i} unreachable: ${messageOf(r.reason)}`);
          return;
        }
        const s = r.value;
        reached++;
        dbSize += s.dbSize;
        dbSizeInUse += s.dbSizeInUse;
        raftIndex += s.raftIndex;
        raftAppliedIndex += s.raftAppliedIndex;
        d.header.observeTerm(s.raftTerm);
        for (const e of s.errors) errors.push(`member ${i}: ${e}`);
      });
      if (reached === 0) throw (settled[0] as PromiseRejectedResult).reason;
      const resp: StatusResponse = {
        header: d.header.make(revision),
        version: d.version(),
        dbSize,
        leader: d.header.memberId,
        raftIndex,
        raftTerm: d.header.raftTerm,
        raftAppliedIndex,
        errors,
        dbSizeInUse,
        isLearner: false,
      };
      return resp;
    }),
    alarm: unary('Alarm', d, async (req) => {
      const [resps, now] = await Promise.all([all((c) => c.alarm(req)), d.clock.now()]);
      const alarms = resps.flatMap((r) => r.alarms);
      return { header: d.header.make(now.revision), alarms };
    }),
    defragment: unary('Defragment', d, async (_req, call) => {
      d.auth?.checkAdmin(call, MAINTENANCE_ADMIN_ERRORS);
      await all((c) => c.defragment({ timeoutMs: 120_000 }));
      const now = await d.clock.now();
      return { header: d.header.make(now.revision) };
    }),
    // etcd lets only admins call Hash, HashKV and Snapshot: others get its refusal, not ours.
    hash: unary('Hash', d, async (_req, call) => {
      d.auth?.checkAdmin(call, MAINTENANCE_ADMIN_ERRORS);
      throw unimplemented('Hash (a sharded keyspace has no single backend hash)');
    }),
    hashKv: unary('HashKV', d, async (_req, call) => {
      d.auth?.checkAdmin(call, MAINTENANCE_ADMIN_ERRORS);
      throw unimplemented('HashKV (a sharded keyspace has no single backend hash)');
    }),
    moveLeader: unary('MoveLeader', d, () => Promise.reject(unimplemented('MoveLeader'))),
    snapshot: (call) => {
      d.metrics.requestCount.inc({ method: 'Snapshot' });
      let err: unknown = unimplemented('Snapshot (back up each member cluster instead)');
      try {
        d.auth?.checkAdmin(call, MAINTENANCE_ADMIN_ERRORS);
      } catch (e) {
        err = e;
      }
      call.destroy(Object.assign(new Error('snapshot refused'), toServiceStatus(err)));
    },
  };
}
