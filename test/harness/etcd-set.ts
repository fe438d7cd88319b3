// Test harness: a coordinator etcd, N member etcds and optionally a lone
// "oracle" etcd (plain etcd to compare the proxy against), started in parallel
// under one scratch directory that stop() removes.

import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { defaultScratchRoot, EtcdProcess, type EtcdProcessOptions } from '../../src/sandbox/etcd-process.js';
import { memberEtcdSettings } from '../../src/sandbox/member-settings.js';

export interface EtcdSet {
  coordinator: EtcdProcess;
  members: EtcdProcess[];
  oracle?: EtcdProcess;
  root: string;
  stop(): Promise<void>;
}

export interface EtcdSetOptions {
  /** Number of member etcds (default 3). */
  members?: number;
  /** Also start a lone oracle etcd (default false). */
  oracle?: boolean;
  /** --max-request-bytes of the proxy the members serve (members get room for its bookkeeping; the oracle gets exactly this). */
  maxRequestBytes?: number;
  /** Used in the directory name and etcd names (default 'set'). */
  name?: string;
}

export async function startEtcdSet(opts: EtcdSetOptions = {}): Promise<EtcdSet> {
  const setName = opts.name ?? 'set';
  const memberCount = opts.members ?? 3;
  if (!Number.isInteger(memberCount) || memberCount < 0) throw new Error(`startEtcdSet: invalid member count ${memberCount}`);
  const root = join(defaultScratchRoot(), `metaetcd-test-${setName}-${randomBytes(4).toString('hex')}`);
  mkdirSync(root, { recursive: true });

  const roles = ['coordinator', ...Array.from({ length: memberCount }, (_, i) => `member-${i}`), ...(opts.oracle ? ['oracle'] : [])];
  const starts = roles.map((role) => EtcdProcess.start(processOptions(root, setName, role, opts.maxRequestBytes)));
  const results = await Promise.allSettled(starts);
  const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) {
    await stopAll(started, root);
    throw failure.reason;
  }

  const [coordinator, ...rest] = started as [EtcdProcess, ...EtcdProcess[]];
  const members = rest.slice(0, memberCount);
  const oracle = opts.oracle ? rest[memberCount] : undefined;
  let stopping: Promise<void> | undefined;
  return {
    coordinator,
    members,
    ...(oracle ? { oracle } : {}),
    root,
    stop: () => (stopping ??= stopAll(started, root)),
  };
}

function processOptions(root: string, setName: string, role: string, maxRequestBytes: number | undefined): EtcdProcessOptions {
  const base = { name: `${setName}-${role}`, dataDir: join(root, role) };
  // The oracle is a plain etcd with plain etcd's limits; members are configured as the sandbox configures them.
  if (role === 'oracle') return { ...base, ...(maxRequestBytes !== undefined ? { maxRequestBytes } : {}) };
  return { ...base, ...memberEtcdSettings(maxRequestBytes ?? 1.5 * 1024 * 1024, 128) };
}

/** Stops every process in parallel, then removes the directory; rethrows the first stop failure. */
async function stopAll(processes: EtcdProcess[], root: string): Promise<void> {
  const results = await Promise.allSettled(processes.map((p) => p.stop()));
  rmSync(root, { recursive: true, force: true });
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
}
