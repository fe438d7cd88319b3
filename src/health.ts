// The proxy's health, as etcd's `/health` endpoint reports its own: healthy
// when the proxy can serve a linearizable read of any key and a write — the
// coordinator answers a clock read, and every member cluster answers a
// linearizable read and has no alarm raised (NOSPACE or CORRUPT).
//
// Concurrent probes share one check, so a busy prober costs one round of calls.

import type { Clock } from './clock/clock.js';
import type { EtcdClient } from './members/etcd-client.js';
import { AlarmRequest_AlarmAction, AlarmType } from './proto/gen/rpc.js';
import { messageOf } from './errors/etcd-error.js';
import { InternalKey } from './store/keyspace.js';
import { withTimeout } from './util/timeout.js';

export interface HealthReport {
  healthy: boolean;
  /** Empty when healthy; otherwise every reason found, `; `-separated. */
  reason: string;
}

export interface HealthCheckOptions {
  clock: Clock;
  members: EtcdClient[];
  /** How long each part of the check may take (etcd's own check allows 1 s per request). */
  timeoutMs: number;
}

export function createHealthCheck(o: HealthCheckOptions): () => Promise<HealthReport> {
  let running: Promise<HealthReport> | undefined;
  return () => {
    running ??= check(o).finally(() => {
      running = undefined;
    });
    return running;
  };
}

async function check(o: HealthCheckOptions): Promise<HealthReport> {
  const problems = await Promise.all([
    withTimeout(o.clock.now(), o.timeoutMs, 'clock read').then(
      () => [],
      (err: unknown) => [`coordinator: ${messageOf(err)}`],
    ),
    ...o.members.map((client, i) => memberProblems(client, i, o.timeoutMs)),
  ]);
  const reasons = problems.flat();
  return { healthy: reasons.length === 0, reason: reasons.join('; ') };
}

async function memberProblems(client: EtcdClient, member: number, timeoutMs: number): Promise<string[]> {
  const [read, alarms] = await Promise.allSettled([
    client.range({ key: InternalKey.identity, countOnly: true }, { timeoutMs }),
    client.alarm({ action: AlarmRequest_AlarmAction.GET, memberID: 0n, alarm: AlarmType.NONE }, { timeoutMs }),
  ]);
  const out: string[] = [];
  if (read.status === 'rejected') out.push(`member ${member}: ${messageOf(read.reason)}`);
  if (alarms.status === 'rejected') {
    if (read.status === 'fulfilled') out.push(`member ${member}: alarm list: ${messageOf(alarms.reason)}`);
  } else {
    for (const a of alarms.value.alarms) {
      if (a.alarm !== AlarmType.NONE) out.push(`member ${member}: alarm ${AlarmType[a.alarm] ?? a.alarm} raised`);
    }
  }
  return out;
}
