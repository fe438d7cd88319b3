// The proxy's health, as etcd's `/health` endpoint reports its own: healthy
// when the proxy can serve a linearizable read of any key and a write — the
// coordinator answers a clock read, and every member cluster answers a
// linearizable read and has no alarm raised (NOSPACE or CORRUPT). Readiness
// (`/readyz`) needs that and every member's watch stream up as well.
//
// Concurrent probes share one check, so a busy prober costs one round of calls.

import type { Clock } from './clock/clock.js';
import type { EtcdClient } from './members/etcd-client.js';
import { AlarmRequest_AlarmAction, AlarmType } from './proto/gen/rpc.js';
import { messageOf } from './errors/etcd-error.js';
import { InternalKey } from './store/keyspace.js';
import { withTimeout } from './util/timeout.js';

/** One named check: "coordinator", "member-N" (behind /health) or "watch-member-N" (readiness only). */
export interface CheckResult {
  name: string;
  ok: boolean;
  /** Empty when ok; otherwise every problem found, `; `-separated. */
  reason: string;
}

export interface HealthReport {
  healthy: boolean;
  /** Empty when healthy; otherwise every reason found, `; `-separated, each naming its cluster ("member 2: …"). */
  reason: string;
  /** Every check /readyz lists: those behind `healthy`, then the member watch streams. */
  checks: CheckResult[];
}

export interface HealthCheckOptions {
  clock: Clock;
  members: EtcdClient[];
  /** Whether each member's watch stream is up (by member index). */
  streams: { readonly connected: boolean }[];
  /** How long each part of the check may take (etcd's own check allows 1 s per request). */
  timeoutMs: number;
  /** Why the proxy stopped serving, if it did (app/serving-gate.ts). */
  stopped?: () => string | undefined;
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

/** Whether a report says the proxy is ready: every check passed. */
export function isReady(r: HealthReport): boolean {
  return r.checks.every((c) => c.ok);
}

async function check(o: HealthCheckOptions): Promise<HealthReport> {
  const health = await Promise.all([
    withTimeout(o.clock.now(), o.timeoutMs, 'clock read').then(
      () => result('coordinator', []),
      (err: unknown) => result('coordinator', [messageOf(err)]),
    ),
    ...o.members.map((client, i) => memberProblems(client, o.timeoutMs).then((p) => result(`member-${i}`, p))),
  ]);
  const stopped = o.stopped?.();
  if (stopped !== undefined) health.push(result('serving', [stopped]));
  const watches = o.streams.map((s, i) => result(`watch-member-${i}`, s.connected ? [] : ['the watch stream is down']));
  const failed = health.filter((c) => !c.ok);
  return {
    healthy: failed.length === 0,
    // "member-2" → "member 2: …", as /health has always named the cluster.
    reason: failed.map((c) => `${c.name.replace('-', ' ')}: ${c.reason}`).join('; '),
    checks: [...health, ...watches],
  };
}

function result(name: string, problems: string[]): CheckResult {
  return { name, ok: problems.length === 0, reason: problems.join('; ') };
}

async function memberProblems(client: EtcdClient, timeoutMs: number): Promise<string[]> {
  const [read, alarms] = await Promise.allSettled([
    client.range({ key: InternalKey.identity, countOnly: true }, { timeoutMs }),
    client.alarm({ action: AlarmRequest_AlarmAction.GET, memberID: 0n, alarm: AlarmType.NONE }, { timeoutMs }),
  ]);
  const out: string[] = [];
  if (read.status === 'rejected') out.push(messageOf(read.reason));
  if (alarms.status === 'rejected') {
    if (read.status === 'fulfilled') out.push(`alarm list: ${messageOf(alarms.reason)}`);
  } else {
    for (const a of alarms.value.alarms) {
      if (a.alarm !== AlarmType.NONE) out.push(`alarm ${AlarmType[a.alarm] ?? a.alarm} raised`);
    }
  }
  return out;
}

/** The report when the checks themselves could not run (e.g. no worker answered), as one failed check. */
export function failedReport(name: string, reason: string): HealthReport {
  return { healthy: false, reason, checks: [{ name, ok: false, reason }] };
}
