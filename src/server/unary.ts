// Wraps a promise-returning handler as a grpc-js unary handler: counts the
// request, times it by method and status code, and turns any error into a gRPC
// status (etcd's own statuses unchanged; anything unexpected becomes Internal and
// is logged). A malformed request can never throw out of a handler.

import { status as Status, type handleUnaryCall, type ServerUnaryCall } from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { isExpected, toServiceStatus } from '../errors/grpc-status.js';

export interface HandlerDeps {
  metrics: Metrics;
  log: Logger;
  /** Refuses every call once the proxy has stopped serving (app/serving-gate.ts). */
  gate?: { check(): void };
}

export function unary<Req, Res>(
  method: string,
  deps: HandlerDeps,
  fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const started = performance.now();
    deps.metrics.requestCount.inc({ method });
    let result: Promise<Res>;
    try {
      deps.gate?.check();
      result = fn(call.request, call);
    } catch (err) {
      result = Promise.reject(err);
    }
    result.then(
      (res) => {
        deps.metrics.requestDuration.observe({ method, code: 'OK' }, (performance.now() - started) / 1000);
        callback(null, res);
      },
      (err: unknown) => {
        const st = toServiceStatus(err);
        deps.metrics.requestDuration.observe({ method, code: Status[st.code ?? Status.UNKNOWN] ?? 'UNKNOWN' }, (performance.now() - started) / 1000);
        if (!isExpected(err)) {
          deps.log.error({ method, err: err instanceof Error ? err.stack : String(err) }, 'unexpected error serving a request');
        }
        callback(st);
      },
    );
  };
}
