// One worker process of a `metaetcd --workers N` command: a whole proxy (its own
// member streams, clock batching and lease bookkeeping, like any other proxy over
// the same clusters) whose gRPC server shares the primary's listening socket.
// Its metrics and health are served by the primary, which asks for them over IPC.

import { AggregatorRegistry } from 'prom-client';
import { startProxy, type ProxyHandle } from '../app.js';
import type { ProxyConfig } from '../config.js';
import { failedReport } from '../health.js';
import { keepServingOnStrayRejections } from '../lifecycle.js';
import type { Logger } from '../log.js';
import { Metrics } from '../metrics.js';
import { isOurMessage, type FromWorker, type ToWorker } from './messages.js';

export async function runWorker(config: ProxyConfig, log: Logger, index: number): Promise<number> {
  const wlog = log.child({ worker: index });
  keepServingOnStrayRejections(wlog);
  // The primary decides when to stop: a terminal's Ctrl-C reaches every process of
  // the group, and a worker that left on its own would look like a crash.
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => undefined);

  const metrics = new Metrics({ processMetrics: true });
  // Constructing an aggregator in a worker installs prom-client's IPC responder.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([metrics.registry]);

  // The primary is gone (killed): no new connections reach us; end like a crashed proxy.
  process.on('disconnect', () => {
    wlog.warn('the primary process is gone; worker exits');
    process.exit(1);
  });

  let proxy: ProxyHandle;
  try {
    proxy = await startProxy({ ...config, metricsPort: 0 }, wlog, metrics);
  } catch (err) {
    send({ type: 'metaetcd:failed', error: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  }
  // The primary sends requests only after this (a worker still starting is killed, not asked).
  process.on('message', (m: unknown) => {
    if (!isOurMessage<ToWorker>(m)) return;
    // Leave at once when stopped: the IPC channel would keep the process alive.
    if (m.type === 'metaetcd:stop') void proxy.stop().then(() => process.exit(0));
    else if (m.type === 'metaetcd:health') {
      void proxy.health().then(
        (r) => send({ type: 'metaetcd:health', id: m.id, report: r }),
        (err: unknown) => send({ type: 'metaetcd:health', id: m.id, report: failedReport('health', String(err)) }),
      );
    }
  });
  send({ type: 'metaetcd:ready', port: proxy.port });
  // Runs until the primary says stop.
  return new Promise<number>(() => undefined);
}

function send(m: FromWorker): void {
  process.send?.(m);
}
