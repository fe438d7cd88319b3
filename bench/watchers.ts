// Watch fan-out: N watchers on P prefixes (N/P identical prefix watches each,
// as many apiserver clients watch the same resource), several watches per gRPC
// stream created one at a time as clientv3 does, all with prev_kv and
// progress_notify as the watch cache asks (contract §4.1). Writers then put to
// keys under those prefixes at a steady rate. Measured on the load generator's
// clock: the delay from a put's acknowledgement to each watcher receiving its
// event (an event that arrives before the ack counts as 0), delivery
// completeness, and the front process's RSS (a proxy's with its workers') before
// and after the watches exist.

import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { WatchRequest, WatchResponse } from '../src/proto/gen/rpc.js';
import { WatchRequest as WatchRequestMsg } from '../src/proto/gen/rpc.js';
import { BenchConnection, grpcCode, prefixEnd, type ConnectionPool } from './client.js';
import { cpuDelta, cpuSnapshot, nowMs, rssOf, Samples, sleep, type ProcessRef } from './stats.js';

export interface WatchOptions {
  watchers: number;
  prefixes: number;
  perStream: number;
  seconds: number;
  putsPerSecond: number;
  valueBytes: number;
  timeoutMs: number;
}

export interface WatchResult {
  watchers: number;
  streams: number;
  createS: number;
  rssBefore: number;
  rssAfterCreate: number;
  rssAfterLoad: number;
  /** Put acknowledged → event received (≥ 0). */
  delay: Samples;
  /** Put sent → event received. */
  delayFromSend: Samples;
  putLatency: Samples;
  puts: number;
  putErrors: number;
  putSeconds: number;
  /** Writer loop turns that found MAX_PUTS_IN_FLIGHT puts outstanding (the target fell behind the rate). */
  writerStalls: number;
  expected: number;
  delivered: number;
  /** Events that arrived before their put was acknowledged. */
  early: number;
  /** CPU seconds of each process (and the load generator) from the first put until every event arrived. */
  cpu: Map<string, number>;
  cpuSeconds: number;
  /** Events for unknown puts, duplicates, cancellations and stream errors. */
  anomalies: string[];
}

const WATCH_PREFIX = '/registry/wbench/';
const CREATE_TIMEOUT_MS = 15_000;
const DRAIN_TIMEOUT_MS = 15_000;
const SETTLE_MS = 1_000;
const WARMUP_SECONDS = 2;
const MAX_PUTS_IN_FLIGHT = 32;

interface PutRecord {
  sentAt: number;
  ackedAt: number | undefined;
  /** Receive times of events that came before the ack. */
  early: number[];
  received: number;
}

/**
 * `pool` carries the watch streams; the writers use a connection of their own, as another
 * client would. A short warm-up round (a few watchers, a few seconds, other keys) comes first,
 * so that the RSS baseline already includes the code and buffers any watch traffic brings.
 */
export async function runWatchers(pool: ConnectionPool, front: ProcessRef, processes: ProcessRef[], o: WatchOptions): Promise<WatchResult> {
  const warm = await watchRound(pool, front, processes, { ...o, watchers: Math.min(o.watchers, o.perStream), seconds: WARMUP_SECONDS }, `${WATCH_PREFIX}warmup/`);
  if (warm.anomalies.length) throw new Error(`watch warm-up: ${warm.anomalies.join(' | ')}`);
  return watchRound(pool, front, processes, o, `${WATCH_PREFIX}run/`);
}

async function watchRound(pool: ConnectionPool, front: ProcessRef, processes: ProcessRef[], o: WatchOptions, root: string): Promise<WatchResult> {
  const prefixes = Array.from({ length: o.prefixes }, (_, i) => Buffer.from(`${root}p-${String(i).padStart(4, '0')}/`));
  const watchersOn = new Array<number>(o.prefixes).fill(0);
  for (let w = 0; w < o.watchers; w++) watchersOn[w % o.prefixes]!++;

  const r: WatchResult = {
    watchers: o.watchers,
    streams: Math.ceil(o.watchers / o.perStream),
    createS: 0,
    rssBefore: 0,
    rssAfterCreate: 0,
    rssAfterLoad: 0,
    delay: new Samples(),
    delayFromSend: new Samples(),
    putLatency: new Samples(),
    puts: 0,
    putErrors: 0,
    putSeconds: 0,
    writerStalls: 0,
    expected: 0,
    delivered: 0,
    early: 0,
    cpu: new Map(),
    cpuSeconds: 0,
    anomalies: [],
  };
  const anomaly = (msg: string) => {
    if (r.anomalies.length < 10) r.anomalies.push(msg);
  };
  const puts: PutRecord[] = [];

  const onEvent = (value: Buffer, at: number) => {
    const bar = value.indexOf(0x7c); // '|'
    const id = bar > 0 ? Number(value.subarray(0, bar).toString('latin1')) : NaN;
    const p = Number.isInteger(id) ? puts[id] : undefined;
    if (!p) {
      anomaly(`event for an unknown put (${value.subarray(0, 24).toString('latin1')})`);
      return;
    }
    p.received++;
    r.delivered++;
    if (p.ackedAt === undefined) {
      p.early.push(at);
      return;
    }
    r.delay.add(Math.max(0, at - p.ackedAt));
    r.delayFromSend.add(at - p.sentAt);
  };

  await sleep(SETTLE_MS);
  r.rssBefore = rssOf(front);

  // 1. Watches: streams in parallel, creates within a stream one at a time.
  const t0 = nowMs();
  const streams: ClientDuplexStream<WatchRequest, WatchResponse>[] = [];
  let conn: BenchConnection | undefined;
  try {
    await Promise.all(
      Array.from({ length: r.streams }, async (_, s) => {
        const stream = pool.get(s).watch();
        streams.push(stream);
        await openWatches(stream, s, o, prefixes, onEvent, anomaly);
      }),
    );
    r.createS = (nowMs() - t0) / 1000;
    await sleep(SETTLE_MS);
    r.rssAfterCreate = rssOf(front);

    // 2. Writers at a steady rate, round-robin over the prefixes and a few keys each.
    conn = new BenchConnection(pool.get(0).address);
    const inFlight = new Set<Promise<void>>();
    const cpuBefore = cpuSnapshot(processes);
    const start = nowMs();
    const end = start + o.seconds * 1000;
    const filler = Buffer.alloc(o.valueBytes, 0x78);
    let next = 0;
    while (nowMs() < end) {
      const due = Math.floor(((nowMs() - start) / 1000) * o.putsPerSecond);
      // Open loop at the given rate, but never more than MAX_PUTS_IN_FLIGHT outstanding:
      // a target that falls behind gets fewer puts (r.puts shows how many) rather than a pile-up.
      if (inFlight.size >= MAX_PUTS_IN_FLIGHT) r.writerStalls++;
      for (; next < due && inFlight.size < MAX_PUTS_IN_FLIGHT; next++) {
        const id = next;
        const prefix = id % o.prefixes;
        const key = Buffer.concat([prefixes[prefix]!, Buffer.from(`obj-${Math.floor(id / o.prefixes) % 20}`)]);
        const value = Buffer.from(filler);
        value.write(`${id}|`, 0, 'latin1');
        const rec: PutRecord = { sentAt: nowMs(), ackedAt: undefined, early: [], received: 0 };
        puts[id] = rec;
        r.expected += watchersOn[prefix]!;
        const p = conn
          .txn({ compare: [], success: [{ request: { $case: 'requestPut', value: { key, value } } }], failure: [] }, o.timeoutMs)
          .then(
            () => {
              rec.ackedAt = nowMs();
              r.putLatency.add(rec.ackedAt - rec.sentAt);
              for (const at of rec.early) {
                r.early++;
                r.delay.add(0);
                r.delayFromSend.add(at - rec.sentAt);
              }
              rec.early = [];
            },
            (err: unknown) => {
              r.putErrors++;
              r.expected -= watchersOn[prefix]!;
              anomaly(`put failed: ${grpcCode(err)}`);
            },
          )
          .finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      await sleep(5);
    }
    r.puts = next;
    await Promise.all(inFlight);
    r.putSeconds = (nowMs() - start) / 1000;

    // 3. Wait for every event to arrive (bounded).
    const drainBy = nowMs() + DRAIN_TIMEOUT_MS;
    while (r.delivered < r.expected && nowMs() < drainBy) await sleep(20);
    r.cpu = cpuDelta(cpuBefore, cpuSnapshot(processes));
    r.cpuSeconds = (nowMs() - start) / 1000;
    r.rssAfterLoad = rssOf(front);
    return r;
  } finally {
    for (const s of streams) s.cancel();
    conn?.close();
  }
}

/** Creates this stream's watches, one at a time, each waiting for its `created` reply. */
async function openWatches(
  stream: ClientDuplexStream<WatchRequest, WatchResponse>,
  s: number,
  o: WatchOptions,
  prefixes: Buffer[],
  onEvent: (value: Buffer, at: number) => void,
  anomaly: (msg: string) => void,
): Promise<void> {
  let waiting: { resolve: () => void; reject: (e: Error) => void } | undefined;
  let failed: Error | undefined;
  stream.on('data', (res: WatchResponse) => {
    const at = nowMs();
    if (res.created) {
      const w = waiting;
      waiting = undefined;
      w?.resolve();
      return;
    }
    if (res.canceled) anomaly(`watch ${res.watchId} canceled: ${res.cancelReason || `compacted at ${res.compactRevision}`}`);
    for (const ev of res.events) if (ev.kv) onEvent(ev.kv.value, at);
  });
  stream.on('error', (err: Error) => {
    if ((err as { code?: number }).code === 1) return; // our own cancel at the end
    failed = err;
    anomaly(`watch stream ${s}: ${grpcCode(err)}`);
    waiting?.reject(err);
  });
  const first = s * o.perStream;
  const last = Math.min(o.watchers, first + o.perStream);
  for (let w = first; w < last; w++) {
    if (failed) throw failed;
    const prefix = prefixes[w % o.prefixes]!;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`watch ${w}: no created reply within ${CREATE_TIMEOUT_MS} ms`)), CREATE_TIMEOUT_MS);
      waiting = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      stream.write(
        WatchRequestMsg.fromPartial({
          requestUnion: { $case: 'createRequest', value: { key: prefix, rangeEnd: prefixEnd(prefix), prevKv: true, progressNotify: true } },
        }),
      );
    });
  }
}
