// `BENCH_MOVE=1 npm run bench`: what moving partitions costs. Moves are made with
// the proxies stopped for now (docs/design.md, "Repartitioning"), so this measures
// the move itself and the service before and after it: over a fresh proxy cluster
// (3 members) with the usual pods preloaded, clients run guarded updates of random
// pods for a window; then the proxy is stopped, `metaetcd partitions move` moves
// BENCH_MOVE_PARTITIONS of member 0's partitions to member 1, the proxy is started
// again and the clients run another window. Reported: keys moved, the move's
// duration and its own summary, the downtime (proxy stopped → serving again), and
// update throughput and latency before and after (for all keys and for moved ones).
//
// Settings: BENCH_MOVE_PARTITIONS (64), BENCH_MOVE_CLIENTS (32), BENCH_MOVE_SECONDS (5).

import { join } from 'node:path';
import { partitionOf } from '../src/shard/hash.js';
import { DEFAULT_PARTITIONS } from '../src/shard/layout.js';
import { Compare_CompareResult, Compare_CompareTarget } from '../src/proto/gen/rpc.js';
import { ConnectionPool, grpcCode } from './client.js';
import { runMetaetcd, scratchDir, startProxyCluster } from './cluster.js';
import { DEFAULT_SHAPE, Keyspace, preload } from './load.js';
import { envInt, fmt, nowMs, Samples, table } from './stats.js';

const TIMEOUT_MS = 10_000;

interface Sample {
  ms: number;
  moved: boolean;
}

export async function runMoveBench(o: { members: number }): Promise<void> {
  const partitions = envInt('BENCH_MOVE_PARTITIONS', 64);
  const clients = envInt('BENCH_MOVE_CLIENTS', 32);
  const seconds = envInt('BENCH_MOVE_SECONDS', 5);
  if (o.members < 2) throw new Error('BENCH_MOVE needs at least 2 members');
  const target = await startProxyCluster(join(scratchDir(), 'move'), { memberCount: o.members, nodeArgs: [] });
  const pool = new ConnectionPool(target.address, 4);
  try {
    const ks = new Keyspace(DEFAULT_SHAPE);
    await preload(pool, ks, 64, TIMEOUT_MS);
    // A fresh layout assigns partition p to member p % members.
    const moving = Array.from({ length: DEFAULT_PARTITIONS }, (_, p) => p).filter((p) => p % o.members === 0).slice(0, partitions);
    const movingSet = new Set(moving);
    const movedKey = ks.pods.map((k) => movingSet.has(partitionOf(k, DEFAULT_PARTITIONS)));
    console.log(`\n[move] ${ks.pods.length} pods preloaded; ${movedKey.filter(Boolean).length} of them in the ${moving.length} partitions to move`);

    const errors: string[] = [];
    const run = async (seconds: number): Promise<Sample[]> => {
      const samples: Sample[] = [];
      const deadline = nowMs() + seconds * 1000;
      const worker = async (w: number) => {
        const conn = pool.get(w);
        while (nowMs() < deadline) {
          const i = Math.floor(Math.random() * ks.pods.length);
          const key = ks.pods[i]!;
          const t0 = nowMs();
          try {
            const res = await conn.txn(
              {
                compare: [{ key, target: Compare_CompareTarget.MOD, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'modRevision', value: BigInt(ks.podRevs[i]!) } }],
                success: [{ request: { $case: 'requestPut', value: { key, value: ks.value() } } }],
                failure: [{ request: { $case: 'requestRange', value: { key } } }],
              },
              TIMEOUT_MS,
            );
            const r = res.responses[0]?.response;
            const rev = res.succeeded ? Number(res.header?.revision ?? 0n) : r?.$case === 'responseRange' ? Number(r.value.kvs[0]?.modRevision ?? 0n) : 0;
            ks.podRevs[i] = Math.max(ks.podRevs[i]!, rev);
            samples.push({ ms: nowMs() - t0, moved: movedKey[i]! });
          } catch (err) {
            if (errors.length < 1000) errors.push(grpcCode(err));
          }
        }
      };
      await Promise.all(Array.from({ length: clients }, (_, w) => worker(w)));
      return samples;
    };
    const before = await run(seconds);

    const down = nowMs();
    await target.stopProxy!();
    const moveStart = nowMs();
    const out = await runMetaetcd([
      'partitions',
      'move',
      ...moving.map(String),
      '--to',
      '1',
      '--coordinator',
      target.clusters!.coordinator,
      '--members',
      target.clusters!.members.join(','),
    ]);
    const moveMs = nowMs() - moveStart;
    if (out.code !== 0) throw new Error(`the move failed (exit ${out.code}):\n${out.tail}`);
    await target.startProxy!();
    const downMs = nowMs() - down;
    const afterMove = await run(seconds);

    const stats = (xs: Sample[], moved?: boolean) => {
      const s = new Samples();
      for (const x of xs) if (moved === undefined || x.moved === moved) s.add(x.ms);
      return s;
    };
    const rows = [
      ['before the move, all keys', stats(before)],
      ['after the move, all keys', stats(afterMove)],
      ['before the move, moved keys', stats(before, true)],
      ['after the move, moved keys', stats(afterMove, true)],
    ] as const;
    const movedKeys = movedKey.filter(Boolean).length;
    console.log(`\n### Moving ${moving.length} partitions (${movedKeys} pods of ${ks.shape.valueBytes} B) from member 0 to member 1, proxy stopped\n`);
    console.log(`move: ${fmt(moveMs / 1000)} s (${fmt(movedKeys / (moveMs / 1000), 0)} pods/s); proxy down ${fmt(downMs / 1000)} s in all; the mover's summary: ${out.summary || '(none)'}\n`);
    console.log(
      table(
        ['updates (' + clients + ' clients, ' + seconds + ' s)', 'updates/s', 'p50 ms', 'p99 ms'],
        rows.map(([name, s]) => [name, fmt(s.count / seconds, 0), fmt(s.quantile(0.5)), fmt(s.quantile(0.99))]),
      ),
    );
    console.log(`\nfailed updates: ${errors.length}${errors.length > 0 ? ` (first: ${[...new Set(errors)].slice(0, 3).join(' | ')})` : ''}`);
    if (errors.length > 0) throw new Error(`${errors.length} updates failed`);
  } finally {
    pool.close();
    await target.stop();
  }
}
