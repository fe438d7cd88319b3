// The Watch service: each client stream is handed to the watch fan-out
// (watch/fanout.ts), which serves it from the hub.

import type { Metrics } from '../metrics.js';
import type { WatchServer } from '../proto/gen/rpc.js';
import type { WatchFanout } from '../watch/fanout.js';

export function createWatchService(fanout: WatchFanout, metrics: Metrics): WatchServer {
  return {
    watch: (call) => {
      metrics.requestCount.inc({ method: 'Watch' });
      fanout.open(call);
    },
  };
}
