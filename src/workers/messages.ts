// What the primary and its worker processes say to each other over the cluster
// IPC channel (besides prom-client's own metric requests, which it routes itself).

import type { HealthReport } from '../health.js';

/** Primary → worker. */
export type ToWorker = { type: 'metaetcd:stop' } | { type: 'metaetcd:health'; id: number };

/** Worker → primary. */
export type FromWorker =
  | { type: 'metaetcd:ready'; port: number }
  | { type: 'metaetcd:failed'; error: string }
  | { type: 'metaetcd:health'; id: number; report: HealthReport };

/** The environment variable that tells a forked process which worker it is. */
export const WORKER_INDEX_ENV = 'METAETCD_WORKER_INDEX';

/** One of our messages (the channel also carries prom-client's and node:cluster's own); the receiver names which side's. */
export function isOurMessage<T extends ToWorker | FromWorker>(m: unknown): m is T {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string' && (m as { type: string }).type.startsWith('metaetcd:');
}
