// Scraping Prometheus text from the proxy's /metrics and from etcd's own
// /metrics (on its client URL), and counting round trips from the difference
// of two scrapes.

import { get as httpGet } from 'node:http';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export type Scrape = Sample[];

/** GET url (http only) with a bound; rejects on a non-200 answer. */
export function scrape(url: string, timeoutMs = 5_000): Promise<Scrape> {
  return new Promise((resolve, reject) => {
    const req = httpGet(url, { agent: false, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => (res.statusCode === 200 ? resolve(parseProm(body)) : reject(new Error(`GET ${url}: HTTP ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseProm(text: string): Scrape {
  const out: Scrape = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum of a metric over the samples whose labels match `where`. */
export function sum(s: Scrape, name: string, where: Record<string, string> = {}): number {
  let total = 0;
  for (const x of s) {
    if (x.name !== name) continue;
    if (Object.entries(where).every(([k, v]) => x.labels[k] === v)) total += x.value;
  }
  return total;
}

/** Values of one label of a metric, with their sums. */
export function byLabel(s: Scrape, name: string, label: string, where: Record<string, string> = {}): Map<string, number> {
  const out = new Map<string, number>();
  for (const x of s) {
    if (x.name !== name) continue;
    if (!Object.entries(where).every(([k, v]) => x.labels[k] === v)) continue;
    const key = x.labels[label] ?? '';
    out.set(key, (out.get(key) ?? 0) + x.value);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Round trips, from the proxy's counters and the upstream etcds' gRPC counters

/** Where to scrape: the proxy's metrics URL and each upstream etcd's. */
export interface ScrapeTargets {
  proxy?: string;
  etcds: { label: string; url: string }[];
}

export interface ScrapeSet {
  proxy: Scrape | undefined;
  etcds: Map<string, Scrape>;
}

export async function scrapeAll(t: ScrapeTargets): Promise<ScrapeSet> {
  const [proxy, ...etcds] = await Promise.all([t.proxy ? scrape(t.proxy) : Promise.resolve(undefined), ...t.etcds.map((e) => scrape(e.url))]);
  return { proxy, etcds: new Map(t.etcds.map((e, i) => [e.label, etcds[i]!])) };
}

/** Counts of what happened between two scrapes. */
export interface RoundTrips {
  /** metaetcd_clock_round_trips_total by kind (allocate, conflict, read, ceiling). */
  clock: Map<string, number>;
  /** metaetcd_member_write_attempts_total by outcome (ok, order, stale). */
  writeAttempts: Map<string, number>;
  /** Member write transactions the write batcher sent, and the client writes they carried (metaetcd_member_write_batch_size). */
  batches: { transactions: number; writes: number };
  /** Unary gRPC calls each upstream etcd served, by method (Range, Txn, Put, ...). */
  upstream: Map<string, Map<string, number>>;
}

export function roundTrips(before: ScrapeSet, after: ScrapeSet): RoundTrips {
  const diff = (a: Map<string, number>, b: Map<string, number>) => {
    const out = new Map<string, number>();
    for (const [k, v] of b) out.set(k, v - (a.get(k) ?? 0));
    return out;
  };
  const proxyDiff = (name: string, label: string) =>
    before.proxy && after.proxy ? diff(byLabel(before.proxy, name, label), byLabel(after.proxy, name, label)) : new Map<string, number>();
  const proxySum = (name: string) => (before.proxy && after.proxy ? sum(after.proxy, name) - sum(before.proxy, name) : 0);
  const upstream = new Map<string, Map<string, number>>();
  for (const [label, a] of after.etcds) {
    const b = before.etcds.get(label) ?? [];
    const started = (s: Scrape) => byLabel(s, 'grpc_server_started_total', 'grpc_method', { grpc_type: 'unary' });
    upstream.set(label, diff(started(b), started(a)));
  }
  return {
    clock: proxyDiff('metaetcd_clock_round_trips_total', 'kind'),
    writeAttempts: proxyDiff('metaetcd_member_write_attempts_total', 'outcome'),
    batches: {
      transactions: proxySum('metaetcd_member_write_batch_size_count'),
      writes: proxySum('metaetcd_member_write_batch_size_sum'),
    },
    upstream,
  };
}

export function total(m: Map<string, number>): number {
  let t = 0;
  for (const v of m.values()) t += v;
  return t;
}

/** Upstream unary calls summed over every etcd whose label passes `pick`. */
export function upstreamCalls(rt: RoundTrips, pick: (label: string) => boolean): number {
  let t = 0;
  for (const [label, m] of rt.upstream) if (pick(label)) t += total(m);
  return t;
}
