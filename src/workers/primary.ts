// `metaetcd --workers N`: one command serving one address from N worker
// processes (node:cluster). The primary owns the listening socket and hands each
// new client connection to a worker in turn; every worker is a complete proxy
// over the same clusters, so they coordinate exactly as separate proxies do (the
// clock in the coordinator, the order guards in the members). What a worker
// costs the members: one watch stream per member, its own lease sweeps and
// keep-alive streams — N workers cost what N proxies cost.
//
// The primary serves /metrics (the sum over workers, through prom-client's
// cluster aggregator), /health and /readyz (answered by one worker), restarts a worker
// that dies, and on SIGINT/SIGTERM stops every worker before it exits.

import cluster, { type Worker } from 'node:cluster';
import type { Server as HttpServer } from 'node:http';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AggregatorRegistry } from 'prom-client';
import type { ProxyConfig } from '../config.js';
import { failedReport, type HealthReport } from '../health.js';
import { waitForSignal } from '../lifecycle.js';
import type { Logger } from '../log.js';
import { startMetricsServer } from '../metrics-server.js';
import { isOurMessage, WORKER_INDEX_ENV, type FromWorker, type ToWorker } from './messages.js';

/** How long a stopping worker may take before it is killed. */
const STOP_GRACE_MS = 10_000;
const HEALTH_TIMEOUT_MS = 5000;
const RESTART_BACKOFF_MS = { first: 500, max: 30_000 };

interface Slot {
  index: number;
  worker: Worker | undefined;
  /** Whether the worker has said it serves (until then it has no clients, and may not hear messages yet). */
  ready: boolean;
  backoffMs: number;
}

export async function runPrimary(config: ProxyConfig, argv: string[], log: Logger): Promise<number> {
  const plog = log.child({ component: 'primary' });
  const slots: Slot[] = Array.from({ length: config.workers }, (_, index) => ({ index, worker: undefined, ready: false, backoffMs: RESTART_BACKOFF_MS.first }));
  let stopping = false;
  const aggregator = new AggregatorRegistry();
  // Workers run the command with the same flags, whichever way this process was started.
  cluster.setupPrimary({ exec: workerEntry(), args: argv });
  let metricsServer: HttpServer | undefined;
  // Signals from now on: one that comes while workers start stops them once they have.
  const signalled = waitForSignal(log);

  const fork = (slot: Slot): Promise<number> => {
    const worker = cluster.fork({ [WORKER_INDEX_ENV]: String(slot.index) });
    slot.worker = worker;
    slot.ready = false;
    const ready = new Promise<number>((resolve, reject) => {
      const onMessage = (m: unknown) => {
        if (!isOurMessage<FromWorker>(m)) return;
        if (m.type === 'metaetcd:ready') {
          slot.ready = true;
          resolve(m.port);
        }
        else if (m.type === 'metaetcd:failed') reject(new Error(m.error));
      };
      worker.on('message', onMessage);
      worker.once('exit', (code, signal) => reject(new Error(`worker ${slot.index} exited during start (code ${code}, signal ${signal})`)));
    });
    worker.once('exit', (code, signal) => {
      slot.worker = undefined;
      slot.ready = false;
      if (stopping) return;
      plog.error({ worker: slot.index, code, signal, restartInMs: slot.backoffMs }, 'a worker process ended; restarting it');
      const delay = slot.backoffMs;
      slot.backoffMs = Math.min(slot.backoffMs * 2, RESTART_BACKOFF_MS.max);
      setTimeout(() => {
        if (stopping) return;
        fork(slot).then(
          () => (slot.backoffMs = RESTART_BACKOFF_MS.first),
          (err: unknown) => plog.error({ worker: slot.index, err: String(err) }, 'a restarted worker failed to start'),
        );
      }, delay).unref();
    });
    return ready;
  };

  const stopWorkers = async () => {
    stopping = true;
    await Promise.all(slots.map((s) => (s.worker ? stopWorker(s.worker, s.ready) : undefined)));
  };

  try {
    // The first worker alone: on fresh clusters it records the members' identity and layout.
    const port = await fork(slots[0]!);
    await Promise.all(slots.slice(1).map(fork));
    if (config.metricsPort > 0) {
      const health = healthFromWorkers(slots);
      const ms = await startMetricsServer({
        scrape: { body: () => aggregator.clusterMetrics(), contentType: aggregator.contentType },
        host: config.metricsAddr,
        port: config.metricsPort,
        health,
      });
      metricsServer = ms.server;
    }
    plog.info({ listen: config.listenAddr, port, workers: slots.length }, 'ready to serve');
  } catch (err) {
    await stopWorkers();
    // Exit here: the signal watch above would keep the process alive.
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }

  await signalled;
  await stopWorkers();
  await new Promise<void>((r) => (metricsServer ? metricsServer.close(() => r()) : r()));
  plog.info('stopped');
  return 0;
}

/** worker-entry beside this module (.ts when running from source through tsx). */
function workerEntry(): string {
  const here = fileURLToPath(import.meta.url);
  return join(dirname(here), `worker-entry${extname(here)}`);
}

function stopWorker(worker: Worker, ready: boolean): Promise<void> {
  return new Promise<void>((resolve) => {
    if (worker.isDead()) return resolve();
    const timer = setTimeout(() => worker.process.kill('SIGKILL'), STOP_GRACE_MS);
    worker.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    if (ready && worker.isConnected()) worker.send({ type: 'metaetcd:stop' } satisfies ToWorker);
    else worker.process.kill('SIGKILL');
  });
}

/** /health and /readyz answered by the live workers in turn (every worker checks the same clusters). */
function healthFromWorkers(slots: Slot[]): () => Promise<HealthReport> {
  let next = 0;
  let ids = 0;
  return () => {
    const live = slots.flatMap((s) => (s.worker && s.ready && s.worker.isConnected() ? [s.worker] : []));
    if (live.length === 0) return Promise.resolve(failedReport('workers', 'no worker process is running'));
    const worker = live[next++ % live.length]!;
    const id = ids++;
    return new Promise<HealthReport>((resolve) => {
      const done = (report: HealthReport) => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        resolve(report);
      };
      const onMessage = (m: unknown) => {
        if (isOurMessage<FromWorker>(m) && m.type === 'metaetcd:health' && m.id === id) done(m.report);
      };
      const timer = setTimeout(() => done(failedReport('workers', `worker ${worker.id} did not answer the health check`)), HEALTH_TIMEOUT_MS);
      worker.on('message', onMessage);
      worker.send({ type: 'metaetcd:health', id } satisfies ToWorker);
    });
  };
}
