// A simulated Kubernetes control plane, run against a plain etcd and against the
// proxy (each in turn, as `npm run bench` does): the traffic of kube-apiserver's
// storage layer (test/kube/storage-client.ts) — one client and one watch-cache
// replica (list + watch with prev_kv and progress_notify, consistent reads via
// RequestProgress) per resource, update churn with stale-cache conflicts, creates
// and deletes, events with leases (TTL 3600, reused), paged lists, counts, Gets,
// GetCurrentResourceVersion probes.
//
// Measured and printed, never asserted: throughput, p50/p99 latency per request
// shape, watch-cache lag (write acknowledged → event applied in the cache) and
// consistent-read latency. Anomalies seen by the caches are printed.
//
// Run from bench/main.ts with BENCH_KUBE=1, or alone: `node --import tsx bench/kube.ts`.
// Settings (environment; defaults in parentheses):
//   BENCH_KUBE_RESOURCES (50)   BENCH_KUBE_OBJECTS (20000 in total)   BENCH_KUBE_VALUE_BYTES (1500)
//   BENCH_KUBE_SECONDS (15)     BENCH_KUBE_WRITERS (24)               BENCH_KUBE_TARGETS (direct,proxy)

import { fileURLToPath } from 'node:url';
import { buildProxy, scratchDir, startDirect, startProxyCluster, stopEverything, type Target } from './cluster.js';
import { fmt, nowMs, ratio, Samples, sleep, table } from './stats.js';
import { KubeConnection, KubeError, KubeLeaseManager, KubeStore, kubeValue, type StoredObject } from '../test/kube/storage-client.js';
import { rng } from '../test/harness/watch-checker.js';
import { ResourceCache } from '../test/kube/watch-cache.js';

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${raw}: expected a non-negative number`);
  return n;
}

export interface KubeBenchSettings {
  resources: number;
  objects: number;
  valueBytes: number;
  seconds: number;
  writers: number;
  targets: ('direct' | 'proxy')[];
}

export function kubeBenchSettings(): KubeBenchSettings {
  const targets = (process.env.BENCH_KUBE_TARGETS ?? process.env.BENCH_TARGETS ?? 'direct,proxy').split(',').map((s) => s.trim());
  for (const t of targets) if (t !== 'direct' && t !== 'proxy') throw new Error(`BENCH_KUBE_TARGETS: unknown target ${t}`);
  return {
    resources: Math.max(1, Math.floor(envNumber('BENCH_KUBE_RESOURCES', 50))),
    objects: Math.max(1, Math.floor(envNumber('BENCH_KUBE_OBJECTS', 20_000))),
    valueBytes: Math.max(16, Math.floor(envNumber('BENCH_KUBE_VALUE_BYTES', 1500))),
    seconds: envNumber('BENCH_KUBE_SECONDS', 15),
    writers: Math.max(1, Math.floor(envNumber('BENCH_KUBE_WRITERS', 24))),
    targets: targets as ('direct' | 'proxy')[],
  };
}

const SHAPES = [
  'create',
  'update (cached RV)',
  'update (Get first)',
  'delete',
  'event create (lease)',
  'get',
  'list page (500)',
  'count',
  'current RV probe',
  'consistent read (cache)',
  'lease grant',
] as const;
type Shape = (typeof SHAPES)[number];

interface ShapeStats {
  samples: Samples;
  errors: number;
}

export interface KubeBenchResult {
  kind: 'direct' | 'proxy';
  preloadS: number;
  preloadOps: number;
  elapsedS: number;
  shapes: Map<Shape, ShapeStats>;
  conflicts: number;
  lag: Samples;
  cacheEvents: number;
  relists: number;
  fallbacks: number;
  anomalies: string[];
  errors: string[];
}

/** Resource i: "events" is resource 0 (leases); the rest look like built-ins and CRDs. */
function resourceName(i: number): string {
  if (i === 0) return 'events';
  return i % 5 === 0 ? `bench${i}.example.com/things` : `res${String(i).padStart(2, '0')}`;
}

function keyFor(st: KubeStore, i: number): string {
  return st.key(`obj-${String(i).padStart(5, '0')}`, `ns-${i % 10}`);
}

async function benchKube(target: Target, s: KubeBenchSettings, label: string): Promise<KubeBenchResult> {
  const url = `http://${target.address}`;
  const closers: (() => void)[] = [];
  const mk = (name: string) => {
    const c = new KubeConnection([url], { name, callTimeoutMs: 30_000 });
    c.tracing = false;
    closers.push(() => c.close());
    return c;
  };
  const shapes = new Map<Shape, ShapeStats>(SHAPES.map((x) => [x, { samples: new Samples(), errors: 0 }]));
  const errors: string[] = [];
  const timed = async <T>(shape: Shape, fn: () => Promise<T>): Promise<T | undefined> => {
    const t = nowMs();
    try {
      const r = await fn();
      shapes.get(shape)!.samples.add(nowMs() - t);
      return r;
    } catch (e) {
      if (e instanceof KubeError && (e.kind === 'NotFound' || e.kind === 'KeyExists')) {
        shapes.get(shape)!.samples.add(nowMs() - t);
        return undefined;
      }
      shapes.get(shape)!.errors++;
      if (errors.length < 10) errors.push(`${shape}: ${e instanceof Error ? e.message : String(e)}`);
      return undefined;
    }
  };
  try {
    const perResource = Math.max(1, Math.floor(s.objects / s.resources));
    const resources = Array.from({ length: s.resources }, (_, i) => resourceName(i));

    // Preload.
    const loaders = Array.from({ length: 8 }, (_, i) => mk(`${label} loader ${i}`));
    const loadLeases = loaders.map((c) => new KubeLeaseManager(c));
    let next = 0;
    const total = perResource * s.resources;
    const t0 = nowMs();
    await Promise.all(
      Array.from({ length: 64 }, async (_, w) => {
        for (;;) {
          const n = next++;
          if (n >= total) return;
          const r = n % s.resources;
          const i = Math.floor(n / s.resources);
          const st = new KubeStore(loaders[w % 8]!, resources[r]!, 'modern', loadLeases[w % 8]);
          try {
            await st.create(keyFor(st, i), kubeValue('proto', `${r}/${i}`, s.valueBytes), r === 0 ? { ttl: 3600 } : {});
          } catch (e) {
            if (errors.length < 10) errors.push(`preload: ${e instanceof Error ? e.message : String(e)}`);
          }
        }
      }),
    );
    const preloadS = (nowMs() - t0) / 1000;
    console.log(`[${label}] preloaded ${total} objects (${s.resources} resources × ${perResource}, ${s.valueBytes} B) in ${preloadS.toFixed(1)} s (${fmt(total / preloadS, 0)}/s)`);

    // One connection and one watch-cache replica per resource.
    const caches = resources.map((r) => {
      const cache = new ResourceCache(new KubeStore(mk(`${label} cache ${r}`), r), { pageLimit: 10_000, label: r });
      closers.push(() => cache.stop());
      return cache;
    });
    const tl = nowMs();
    await Promise.all(caches.map((c) => c.start()));
    console.log(`[${label}] ${caches.length} watch caches listed and watching in ${((nowMs() - tl) / 1000).toFixed(1)} s`);

    // Churn.
    let stop = false;
    let conflicts = 0;
    const writerConns = Array.from({ length: Math.min(8, s.writers) }, (_, i) => mk(`${label} writer ${i}`));
    const writers = Array.from({ length: s.writers }, async (_, w) => {
      const rnd = rng(7 + w);
      const c = writerConns[w % writerConns.length]!;
      const leases = new KubeLeaseManager(c);
      while (!stop) {
        const r = Math.floor(rnd() * s.resources);
        const st = new KubeStore(c, resources[r]!, w % 2 ? 'legacy' : 'modern', leases);
        const cache = caches[r]!;
        const key = keyFor(st, Math.floor(rnd() * perResource * 1.1));
        const value = kubeValue(rnd() < 0.7 ? 'proto' : 'enc', `${w}/${rnd()}`, s.valueBytes);
        const x = rnd();
        if (r === 0 && x < 0.5) {
          const res = await timed('event create (lease)', () => st.create(st.key(`ev-${w}-${Math.floor(rnd() * 1e9)}`, 'default'), value, { ttl: 3600 }));
          if (res) cache.noteWrite(res.obj.rv);
        } else if (x < 0.55) {
          const cached: StoredObject | null = cache.state.get(key) ?? null;
          const u = await timed('update (cached RV)', () => st.guaranteedUpdate(key, () => value, { cached, ignoreNotFound: true }));
          if (u) {
            conflicts += u.attempts - 1;
            if (!u.noop) cache.noteWrite(u.obj.rv);
          }
        } else if (x < 0.65) {
          const u = await timed('update (Get first)', () => st.guaranteedUpdate(key, () => value, { ignoreNotFound: true }));
          if (u && !u.noop) cache.noteWrite(u.obj.rv);
        } else if (x < 0.72) {
          const res = await timed('create', () => st.create(key, value));
          if (res) cache.noteWrite(res.obj.rv);
        } else if (x < 0.78) {
          const cached = cache.state.get(key) ?? null;
          const d = await timed('delete', () => st.delete(key, { cached }));
          if (d) {
            conflicts += d.attempts - 1;
            cache.noteWrite(d.rv);
          }
        } else if (x < 0.9) {
          await timed('get', () => st.get(key, { ignoreNotFound: true }));
        } else if (x < 0.94) {
          await timed('list page (500)', () => st.getList({ limit: 500 }));
        } else if (x < 0.96) {
          await timed('count', () => st.count());
        } else if (x < 0.98) {
          await timed('current RV probe', () => st.getCurrentResourceVersion());
        } else if (x < 0.99) {
          await timed('consistent read (cache)', async () => {
            const res = await cache.consistentRead();
            if (!res.ok) throw new Error(`consistent read not served within 3 s (target ${res.target})`);
          });
        } else {
          await timed('lease grant', () => c.leaseGrant(3660n));
        }
      }
    });
    const tc = nowMs();
    await sleep(s.seconds * 1000);
    stop = true;
    await Promise.all(writers);
    const elapsedS = (nowMs() - tc) / 1000;
    await sleep(200);
    const lag = new Samples();
    for (const c of caches) for (const x of c.stats.lagMs) lag.add(x);
    return {
      kind: target.kind,
      preloadS,
      preloadOps: total,
      elapsedS,
      shapes,
      conflicts,
      lag,
      cacheEvents: caches.reduce((n, c) => n + c.stats.events, 0),
      relists: caches.reduce((n, c) => n + c.stats.relists, 0),
      fallbacks: caches.reduce((n, c) => n + c.stats.fallbacks, 0),
      anomalies: caches.flatMap((c) => c.anomalies).slice(0, 10),
      errors,
    };
  } finally {
    for (const c of closers.reverse()) c();
  }
}

function totalOps(r: KubeBenchResult): number {
  let n = 0;
  for (const v of r.shapes.values()) n += v.samples.count;
  return n;
}

export function printKubeResult(r: KubeBenchResult): void {
  const n = totalOps(r);
  console.log(`\n### kube control plane — ${r.kind === 'direct' ? 'direct etcd' : 'proxy'}: ${fmt(n / r.elapsedS, 0)} requests/s over ${r.elapsedS.toFixed(1)} s; ${r.conflicts} conflicts retried`);
  const rows = SHAPES.map((x) => {
    const st = r.shapes.get(x)!;
    return [x, String(st.samples.count), fmt(st.samples.count / r.elapsedS, 1), fmt(st.samples.quantile(0.5)), fmt(st.samples.quantile(0.99)), String(st.errors)];
  });
  console.log(table(['request shape', 'count', 'ops/s', 'p50 ms', 'p99 ms', 'errors'], rows));
  console.log(
    `watch caches: ${r.cacheEvents} events applied, lag (write ack → event in the cache; 0 when it got there first) p50 ${fmt(r.lag.quantile(0.5))} ms, p99 ${fmt(r.lag.quantile(0.99))} ms, max ${fmt(r.lag.quantile(1))} ms; ` +
      `${r.relists} relists, ${r.fallbacks} consistent-read fallbacks`,
  );
  if (r.anomalies.length) console.log(`watch-cache anomalies:\n${r.anomalies.map((a) => `- ${a}`).join('\n')}`);
  if (r.errors.length) console.log(`errors:\n${r.errors.map((a) => `- ${a}`).join('\n')}`);
}

export function printKubeComparison(results: KubeBenchResult[]): void {
  const d = results.find((r) => r.kind === 'direct');
  const p = results.find((r) => r.kind === 'proxy');
  if (!d || !p) return;
  console.log('\n## kube control plane: proxy vs direct etcd (ratio proxy/direct)\n');
  const rows: string[][] = [
    ['preload (objects/s)', fmt(d.preloadOps / d.preloadS, 0), fmt(p.preloadOps / p.preloadS, 0), ratio(p.preloadOps / p.preloadS, d.preloadOps / d.preloadS)],
    ['churn (requests/s)', fmt(totalOps(d) / d.elapsedS, 0), fmt(totalOps(p) / p.elapsedS, 0), ratio(totalOps(p) / p.elapsedS, totalOps(d) / d.elapsedS)],
  ];
  for (const x of SHAPES) {
    const a = d.shapes.get(x)!.samples;
    const b = p.shapes.get(x)!.samples;
    rows.push([`${x} p99 ms`, fmt(a.quantile(0.99)), fmt(b.quantile(0.99)), ratio(b.quantile(0.99), a.quantile(0.99))]);
  }
  rows.push(['watch-cache lag p99 ms', fmt(d.lag.quantile(0.99)), fmt(p.lag.quantile(0.99)), ratio(p.lag.quantile(0.99), d.lag.quantile(0.99))]);
  console.log(table(['', 'direct etcd', 'proxy', 'ratio'], rows));
}

/** The whole scenario on each target in turn. Starts and stops its own processes. `built`: dist/ is already current. */
export async function runKubeBench(opts: { built?: boolean; members?: number } = {}): Promise<KubeBenchResult[]> {
  const s = kubeBenchSettings();
  console.log(`\n## kube control plane: ${s.resources} resources, ${s.objects} objects of ${s.valueBytes} B, ${s.writers} writers for ${s.seconds} s per target`);
  if (s.targets.includes('proxy') && !opts.built) buildProxy();
  const root = scratchDir();
  const results: KubeBenchResult[] = [];
  for (const kind of s.targets) {
    const target = kind === 'direct' ? await startDirect(root) : await startProxyCluster(root, { memberCount: opts.members ?? 3, nodeArgs: [], workers: 1 });
    const label = kind === 'direct' ? 'kube/direct etcd' : 'kube/proxy';
    try {
      const r = await benchKube(target, s, label);
      printKubeResult(r);
      results.push(r);
    } finally {
      await target.stop();
    }
  }
  printKubeComparison(results);
  return results;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const started = nowMs();
  runKubeBench()
    .then(
      () => 0,
      (err: unknown) => {
        console.error(`kube bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        return 1;
      },
    )
    .then(async (code) => {
      await stopEverything();
      console.log(`\n(kube bench took ${((nowMs() - started) / 1000).toFixed(0)} s)`);
      process.exit(code);
    });
}
