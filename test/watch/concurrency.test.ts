// Watches under concurrency (invariant 3), checked against a model built from
// the write responses: several writers (puts, deletes, single-member
// transactions) through TWO proxies over the same members; watchers on several
// prefixes started at random past revisions through both proxies, some of them
// broken and resumed from their last received revision + 1. Every watcher's
// events must be strictly ordered, complete, without duplicates and with the
// right prev_kv; twin watchers on the two proxies must see identical streams;
// the final state must match a Range. Seeded: WATCH_SEED=<n> reproduces a run.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import {
  b,
  checkHeaders,
  checkWatch,
  eventDesc,
  identityRev,
  kvDesc,
  ModelHistory,
  ModelWriter,
  prefixEnd,
  rng,
  sleep,
  WatchRecorder,
  type ModelBatch,
  type WatchSpec,
} from '../harness/watch-checker.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { WatchResponse } from '../../src/proto/gen/rpc.js';

let set: EtcdSet;
let proxies: TestProxy[] = [];
let clients: EtcdClient[] = [];
const recorders: WatchRecorder[] = [];

before(async () => {
  set = await startEtcdSet({ name: 'watch-conc' });
  // Proxy B keeps a small window so that some watchers catch up from the members' history.
  proxies = [await startTestProxy(set), await startTestProxy(set, { watchBufferLen: 40 })];
  clients = proxies.map((p, i) => clientFor(p.url, `proxy ${'AB'[i]}`));
});
after(async () => {
  for (const r of recorders) r.close();
  for (const c of clients) c.close();
  for (const p of proxies) await p.stop();
  await set?.stop();
});

const count = (bs: ModelBatch[]) => bs.reduce((n, bt) => n + bt.events.length, 0);

/** A watch that survives broken streams: it resumes from the last received revision + 1, on a random proxy. */
class ResumableWatcher {
  readonly responses: WatchResponse[] = [];
  /** Every stream's responses for the watch, to check created-first and no cancel. */
  readonly streams: WatchRecorder[] = [];
  next: number;
  breaks = 0;
  private current: WatchRecorder | undefined;

  constructor(
    readonly label: string,
    readonly spec: WatchSpec,
    private readonly pickClient: () => number,
  ) {
    this.next = spec.startRevision;
    this.open();
  }

  private open(): void {
    const i = this.pickClient();
    const r = new WatchRecorder(clients[i]!, `${this.label} via ${'AB'[i]} from ${this.next}`);
    recorders.push(r);
    this.streams.push(r);
    r.create({ key: this.spec.key, rangeEnd: this.spec.rangeEnd, startRevision: BigInt(this.next), prevKv: this.spec.prevKv ?? false });
    this.current = r;
  }

  private harvest(): void {
    const r = this.current!;
    r.close();
    const got = r.forId(0n).filter((x) => x.events.length > 0);
    this.responses.push(...got);
    const last = got.at(-1)?.events.at(-1)?.kv?.modRevision;
    if (last !== undefined) this.next = Number(last) + 1;
  }

  /** Breaks the stream from the client side and resumes. */
  breakAndResume(): void {
    this.harvest();
    this.breaks++;
    this.open();
  }

  delivered(): number {
    return this.responses.reduce((n, x) => n + x.events.length, 0) + this.current!.events(0n).length;
  }

  async waitFor(n: number, timeoutMs: number): Promise<void> {
    const r = this.current!;
    const before = this.delivered() - r.events(0n).length;
    await r.until(() => before + r.events(0n).length >= n, timeoutMs, `${this.label}: ${n} events in all`);
  }

  finish(): WatchResponse[] {
    this.harvest();
    return this.responses;
  }
}

async function round(roundNo: number, seed: number): Promise<string> {
  const random = rng(seed);
  const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)]!;
  const base = `c${roundNo}/`;
  const prefixes = [0, 1, 2, 3].map((i) => `${base}p${i}/`);
  const keys = prefixes.flatMap((p) => Array.from({ length: 6 }, (_, i) => b(`${p}k${i}`)));
  const model = new ModelHistory();
  const router = proxies[0]!.handle.router;
  const writers = [0, 1, 2, 3].map((i) => new ModelWriter(clients[i % 2]!, model, router, rng(seed * 31 + i), `r${roundNo}w${i}`));

  // Seed some history first so that watchers can start in the past.
  for (const k of keys) await writers[0]!.put(k);
  const first = Math.min(...writers[0]!.revisions);

  const writeUntil = Date.now() + 2000;
  const writing = Promise.all(
    writers.map(async (w) => {
      while (Date.now() < writeUntil) await w.randomOp(keys);
    }),
  );

  const watchers: ResumableWatcher[] = [];
  const twins: [ResumableWatcher, ResumableWatcher][] = [];
  const pastRevision = () => {
    const seen = [...model.revisions].filter((r) => r >= first);
    return pick(seen.length > 0 ? seen : [first]);
  };
  const randomRange = () => {
    const x = random();
    if (x < 0.6) {
      const p = pick(prefixes);
      return { key: b(p), rangeEnd: prefixEnd(p) };
    }
    if (x < 0.8) return { key: b(base), rangeEnd: prefixEnd(base) };
    return { key: pick(keys), rangeEnd: Buffer.alloc(0) };
  };
  // The whole round from its first revision, on each proxy (a cross-check of the model).
  for (const i of [0, 1]) {
    watchers.push(new ResumableWatcher(`full-${'AB'[i]}`, { key: b(base), rangeEnd: prefixEnd(base), startRevision: first, prevKv: true }, () => i));
  }
  // Watchers started at random times at random past revisions; some are twins on the two proxies.
  for (let n = 0; n < 10; n++) {
    await sleep(50 + random() * 100);
    const spec: WatchSpec = { ...randomRange(), startRevision: pastRevision(), prevKv: random() < 0.7 };
    if (n % 3 === 0) {
      const pair: [ResumableWatcher, ResumableWatcher] = [
        new ResumableWatcher(`twin${n}-A`, spec, () => 0),
        new ResumableWatcher(`twin${n}-B`, spec, () => 1),
      ];
      twins.push(pair);
      continue;
    }
    watchers.push(new ResumableWatcher(`w${n}`, spec, () => (random() < 0.5 ? 0 : 1)));
  }
  // Break some streams while the writers go on.
  while (Date.now() < writeUntil) {
    await sleep(40 + random() * 80);
    const w = pick(watchers.slice(2));
    if (w) w.breakAndResume();
  }
  await writing;

  const all = [...watchers, ...twins.flat()];
  await Promise.all(all.map((w) => w.waitFor(count(model.expected(w.spec)), 15_000)));
  await sleep(300); // anything extra (a duplicate) would arrive now
  const finals = new Map<ResumableWatcher, WatchResponse[]>();
  for (const w of all) finals.set(w, w.finish());

  for (const w of all) {
    const label = `seed ${seed} ${w.label} [${kvDesc({ key: w.spec.key, value: w.spec.rangeEnd, createRevision: 0n, modRevision: 0n, version: 0n, lease: 0n }, identityRev)} from ${w.spec.startRevision}, ${w.breaks} breaks]`;
    checkWatch(finals.get(w)!, model.expected(w.spec), { label, oneResponsePerRevision: false });
    for (const s of w.streams) {
      const mine = s.forId(0n);
      // (a stream broken right after its create may have received nothing at all)
      assert.ok(mine.length === 0 || mine[0]!.created, `${label}: the created response comes first on ${s.label}`);
      assert.ok(!mine.some((x) => x.canceled), `${label}: no watch may be canceled (${s.label}):\n${s.summary()}`);
      checkHeaders(s);
    }
  }
  for (const [a, bb] of twins) {
    const desc = (w: ResumableWatcher) => finals.get(w)!.flatMap((x) => x.events.map((e) => eventDesc(e, identityRev)));
    assert.deepEqual(desc(a), desc(bb), `seed ${seed}: twins ${a.label} and ${bb.label} must see identical streams`);
  }
  // The final state is what a Range returns, through either proxy.
  const want = model.state(b(base), prefixEnd(base)).map((kv) => kvDesc(kv, identityRev));
  for (const c of clients) {
    const got = await c.range({ key: b(base), rangeEnd: prefixEnd(base) });
    assert.deepEqual(got.kvs.map((kv) => kvDesc(kv, identityRev)), want, `seed ${seed}: final state via ${c.name}`);
  }
  const events = count(model.expected({ key: b(base), rangeEnd: prefixEnd(base), startRevision: first }));
  const breaks = all.reduce((n, w) => n + w.breaks, 0);
  return `round ${roundNo} seed ${seed}: ${model.revisions.size} writes, ${events} events, ${all.length} watchers, ${breaks} breaks`;
}

async function gauge(proxy: TestProxy, name: string): Promise<number> {
  const m = proxy.metrics.registry.getSingleMetric(name);
  assert.ok(m, `${name} is registered`);
  return (await m.get()).values.reduce((n, x) => n + x.value, 0);
}

test('watch checker under concurrency: writers and watchers through two proxies; every watcher ordered, complete, no duplicates, prev_kv consistent, twins identical, final state = Range (seeded)', async () => {
  const seed0 = Number(process.env.WATCH_SEED ?? Math.floor(Math.random() * 1e9));
  console.log(`watch concurrency: seed ${seed0} (rerun with WATCH_SEED=${seed0})`);
  for (let i = 0; i < 3; i++) console.log(await round(i, seed0 + i));
  // Every watch stream was closed by its client: the proxies must have let go of every watcher.
  for (const r of recorders) r.close();
  const deadline = Date.now() + 3000;
  for (const p of proxies) {
    while ((await gauge(p, 'metaetcd_active_watch_count')) !== 0) {
      assert.ok(Date.now() < deadline, `metaetcd_active_watch_count stays at ${await gauge(p, 'metaetcd_active_watch_count')} after every client stream was closed`);
      await sleep(50);
    }
  }
});
