// Keeps the files under deploy/ (and the Dockerfile) from rotting: every metric a
// dashboard panel or an alert queries is one the proxy exports (with the labels
// and gRPC codes it uses), every alert has a duration, a severity, a summary and
// a link to a section of docs/operations.md that exists, the dashboard is a
// well-formed Grafana dashboard, and the Kubernetes manifests and the systemd unit
// pass only flags the proxy accepts (parsed by the proxy's own flag parser).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { status as Status } from '@grpc/grpc-js';
import { AggregatorRegistry } from 'prom-client';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { parseProxyArgs, PROXY_FLAGS, type ProxyConfig } from '../../src/config.js';
import { Metrics } from '../../src/metrics.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string): string => readFileSync(join(root, path), 'utf8');

// ---------------------------------------------------------------------------
// What the proxy exports.

interface Exported {
  /** Metric name → Prometheus type, from the `# TYPE` lines. */
  types: Map<string, string>;
  /** Metric name → its label names (ours only; prom-client's default metrics are not checked for labels). */
  labels: Map<string, Set<string>>;
}

async function exported(): Promise<Exported> {
  const metrics = new Metrics({ processMetrics: true });
  const text = await metrics.registry.metrics();
  const types = new Map<string, string>();
  const helped = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^# (TYPE|HELP) ([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)/.exec(line);
    if (!m) continue;
    if (m[1] === 'TYPE') types.set(m[2]!, m[3]!);
    else helped.add(m[2]!);
  }
  for (const name of types.keys()) assert.ok(helped.has(name), `${name} has a TYPE line but no HELP line`);
  const labels = new Map<string, Set<string>>();
  for (const metric of metrics.registry.getMetricsAsArray()) {
    const { name, labelNames } = metric as unknown as { name: string; labelNames?: readonly string[] };
    if (name.startsWith('metaetcd_')) labels.set(name, new Set(labelNames ?? []));
  }
  return { types, labels };
}

/** Series Prometheus makes up itself rather than scraping them. */
const SYNTHETIC = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped']);
/** Labels Prometheus attaches to every scraped series. */
const TARGET_LABELS = new Set(['job', 'instance']);
/** The `method` label values: every name passed to unary() in src/server. */
const METHODS = new Set(
  readdirSync(join(root, 'src/server')).flatMap((f) =>
    f.endsWith('.ts') ? [...read(`src/server/${f}`).matchAll(/\bunary\('(\w+)'/g)].map((m) => m[1]!) : [],
  ),
);
/** The `code` label values: gRPC status names as unary() writes them (Status[code]). */
const CODES = new Set(Object.keys(Status).filter((k) => !/^\d+$/.test(k)));

// ---------------------------------------------------------------------------
// A small PromQL scanner: enough to find every series selector of an expression.

interface Selector {
  name: string;
  matchers: { label: string; op: string; value: string }[];
}

const AGGREGATIONS = new Set(['sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile', 'limitk', 'limit_ratio']);
const LABEL_LIST_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
const OPERATOR_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'atan2']);

function selectors(expr: string): Selector[] {
  const out: Selector[] = [];
  let i = 0;
  const skipSpace = () => {
    while (i < expr.length && /\s/.test(expr[i]!)) i++;
  };
  const readString = (): string => {
    const quote = expr[i]!;
    let s = '';
    i++;
    while (i < expr.length && expr[i] !== quote) {
      if (expr[i] === '\\') i++;
      s += expr[i];
      i++;
    }
    i++;
    return s;
  };
  while (i < expr.length) {
    const c = expr[i]!;
    if (c === '"' || c === "'" || c === '`') {
      readString();
    } else if (c === '[') {
      i = expr.indexOf(']', i) + 1; // a range or subquery duration
      assert.ok(i > 0, `unclosed [ in ${expr}`);
    } else if (c === '$') {
      i++;
      while (i < expr.length && /[\w{}]/.test(expr[i]!)) i++; // a Grafana variable
    } else if (/[0-9.]/.test(c)) {
      while (i < expr.length && /[0-9.a-zA-Z_]/.test(expr[i]!)) i++; // a number or duration
    } else if (/[a-zA-Z_:]/.test(c)) {
      const start = i;
      while (i < expr.length && /[a-zA-Z0-9_:]/.test(expr[i]!)) i++;
      const word = expr.slice(start, i);
      skipSpace();
      if (LABEL_LIST_KEYWORDS.has(word)) {
        if (expr[i] === '(') i = expr.indexOf(')', i) + 1; // label names, not metrics
      } else if (AGGREGATIONS.has(word) || OPERATOR_KEYWORDS.has(word) || expr[i] === '(') {
        // an aggregation, operator or function
      } else {
        const sel: Selector = { name: word, matchers: [] };
        if (expr[i] === '{') {
          i++;
          for (;;) {
            skipSpace();
            if (expr[i] === '}') break;
            const m = /^([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*/.exec(expr.slice(i));
            assert.ok(m, `cannot read the matchers of ${word} in ${expr}`);
            i += m[0].length;
            sel.matchers.push({ label: m[1]!, op: m[2]!, value: readString() });
            skipSpace();
            if (expr[i] === ',') i++;
          }
          i++;
        }
        out.push(sel);
      }
    } else {
      i++;
    }
  }
  return out;
}

/** Problems with the series an expression selects: unknown metrics, labels and values. */
function problems(expr: string, ex: Exported): string[] {
  const found: string[] = [];
  const sels = selectors(expr);
  if (sels.length === 0) found.push(`selects no series: ${expr}`);
  for (const sel of sels) {
    if (SYNTHETIC.has(sel.name)) continue;
    let name = sel.name;
    let kind = ex.types.get(name);
    if (kind === undefined) {
      // Histogram series: <base>_bucket, <base>_sum, <base>_count — only where <base> is a histogram.
      const m = /^(.*)_(bucket|sum|count)$/.exec(name);
      if (m && ex.types.get(m[1]!) === 'histogram') {
        name = m[1]!;
        kind = 'histogram';
        if (m[2] !== 'bucket' && sel.matchers.some((x) => x.label === 'le')) found.push(`${sel.name} has no le label`);
      }
    }
    if (kind === undefined) {
      found.push(`${sel.name} is not exported by the proxy`);
      continue;
    }
    const labels = ex.labels.get(name);
    for (const mt of sel.matchers) {
      if (labels && !labels.has(mt.label) && !TARGET_LABELS.has(mt.label) && !(mt.label === 'le' && sel.name.endsWith('_bucket'))) {
        found.push(`${sel.name} has no label ${mt.label}`);
      }
      const allowed = mt.label === 'code' ? CODES : mt.label === 'method' ? METHODS : undefined;
      if (allowed && (name === 'metaetcd_request_duration_seconds' || name === 'metaetcd_request_count')) {
        for (const v of mt.value.split('|')) {
          if (!allowed.has(v)) found.push(`${sel.name}{${mt.label}${mt.op}"${mt.value}"}: the proxy never writes ${JSON.stringify(v)}`);
        }
      }
    }
  }
  return found;
}

test('the PromQL check finds typos, wrong suffixes, labels and codes', async () => {
  const ex = await exported();
  const ok = (expr: string) => assert.deepEqual(problems(expr, ex), [], expr);
  const bad = (expr: string, re: RegExp) => {
    const p = problems(expr, ex);
    assert.ok(p.some((x) => re.test(x)), `${expr}: ${JSON.stringify(p)}`);
  };
  ok('histogram_quantile(0.99, sum by (le, method) (rate(metaetcd_request_duration_seconds_bucket{job=~"$job", code!="OK"}[$__rate_interval])))');
  ok('sum by (instance) (increase(metaetcd_time_buffer_timeouts_count[10m])) > 0'); // a counter named *_count
  ok('max by (instance) (metaetcd_member_meta_revision) - on (instance) group_right metaetcd_member_meta_revision');
  ok('up{job="metaetcd"} == 0 and on (instance) rate(process_cpu_seconds_total[5m]) > 0.5');
  bad('rate(metaetcd_request_cuont[5m])', /metaetcd_request_cuont is not exported/);
  bad('rate(metaetcd_fences_total_bucket[5m])', /not exported/); // a counter has no buckets
  bad('rate(metaetcd_time_buffer_timeouts[5m])', /not exported/); // the counter's name ends in _count
  bad('rate(nodejs_eventloop_lag_p99[5m])', /not exported/);
  bad('metaetcd_fences_total{outcome="ok"}', /has no label outcome/);
  bad('metaetcd_request_duration_seconds_count{code="Unavailable"}', /never writes "Unavailable"/);
  bad('metaetcd_request_count{method=~"Put|Range|Get"}', /never writes "Get"/);
  bad('vector(1)', /selects no series/);
});

test('with --workers, revision gauges are the highest worker\'s and counters the sum (the lag panels and alerts rely on it)', async () => {
  const a = new Metrics();
  const b = new Metrics();
  a.memberRevision.set({ member: '0' }, 100);
  b.memberRevision.set({ member: '0' }, 120);
  a.watchesRunning.set(3);
  b.watchesRunning.set(3);
  a.fences.inc({ member: '1' });
  b.fences.inc({ member: '1' }, 2);
  const merged = AggregatorRegistry.aggregate([await a.registry.getMetricsAsJSON(), await b.registry.getMetricsAsJSON()]);
  const text = await merged.metrics();
  assert.match(text, /^metaetcd_member_meta_revision\{member="0"\} 120$/m);
  assert.match(text, /^metaetcd_watches_running 6$/m);
  assert.match(text, /^metaetcd_fences_total\{member="1"\} 3$/m);
});

// ---------------------------------------------------------------------------
// The Grafana dashboard.

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos?: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: { expr: string; refId: string; datasource?: { uid: string } }[];
  panels?: Panel[];
}

test('the Grafana dashboard queries only exported metrics and is well formed', async () => {
  const ex = await exported();
  const d = JSON.parse(read('deploy/grafana/metaetcd-dashboard.json')) as {
    schemaVersion: number;
    uid: string;
    title: string;
    panels: Panel[];
    templating: { list: { name: string; type: string; query: unknown; definition?: string }[] };
  };
  assert.ok(d.schemaVersion >= 36 && d.schemaVersion <= 41, `schemaVersion ${d.schemaVersion}`);
  assert.ok(d.uid && d.title);

  const vars = new Map(d.templating.list.map((v) => [v.name, v]));
  assert.equal(vars.get('datasource')?.type, 'datasource');
  assert.equal(vars.get('datasource')?.query, 'prometheus');
  assert.equal(vars.get('instance')?.type, 'query');
  const failures: string[] = [];
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query as { query: string }).query;
    const m = /^label_values\((.+),\s*(\w+)\)$/.exec(q);
    assert.ok(m, `variable ${v.name}: ${q}`);
    failures.push(...problems(m[1]!, ex).map((p) => `variable ${v.name}: ${p}`));
  }

  const panels = d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
  const ids = panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, `panel ids repeat: ${ids.join(',')}`);
  assert.ok(ids.every((id) => Number.isInteger(id) && id > 0));
  let queries = 0;
  for (const p of panels) {
    assert.ok(['row', 'timeseries', 'stat'].includes(p.type), `${p.title}: type ${p.type}`);
    const g = p.gridPos;
    assert.ok(g && [g.h, g.w, g.x, g.y].every(Number.isInteger) && g.w > 0 && g.h > 0 && g.x >= 0 && g.x + g.w <= 24, `${p.title}: gridPos ${JSON.stringify(g)}`);
    if (p.type === 'row') continue;
    assert.equal(p.datasource?.uid, '${datasource}', `${p.title}: datasource`);
    assert.ok(p.targets && p.targets.length > 0, `${p.title}: no queries`);
    assert.equal(new Set(p.targets.map((t) => t.refId)).size, p.targets.length, `${p.title}: refIds repeat`);
    for (const t of p.targets) {
      queries++;
      assert.ok(t.expr.includes('instance=~"$instance"'), `${p.title}: ${t.expr} ignores $instance`);
      failures.push(...problems(t.expr, ex).map((x) => `${p.title}: ${x}`));
    }
  }
  assert.deepEqual(failures, []);
  // No two panels overlap.
  for (const [i, a] of panels.entries()) {
    for (const b of panels.slice(i + 1)) {
      const A = a.gridPos!;
      const B = b.gridPos!;
      const overlap = A.x < B.x + B.w && B.x < A.x + A.w && A.y < B.y + B.h && B.y < A.y + A.h;
      assert.ok(!overlap, `panels ${a.title} and ${b.title} overlap`);
    }
  }
  // Every metaetcd metric is on the dashboard somewhere.
  const shown = new Set(panels.flatMap((p) => (p.targets ?? []).flatMap((t) => selectors(t.expr).map((s) => s.name.replace(/_(bucket|sum|count)$/, (m, _s, off: number, whole: string) => (ex.types.get(whole.slice(0, off)) === 'histogram' ? '' : m))))));
  const missing = [...ex.types.keys()].filter((n) => n.startsWith('metaetcd_') && !shown.has(n));
  assert.deepEqual(missing, [], 'metrics not on the dashboard');
  assert.ok(queries > 30);
});

// ---------------------------------------------------------------------------
// The Prometheus alert rules.

/** GitHub's anchors of a Markdown file's headings. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  for (const m of markdown.matchAll(/^#{1,6} (.+)$/gm)) {
    out.add(
      m[1]!
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\s_-]/gu, '')
        .replace(/\s/g, '-'),
    );
  }
  return out;
}

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

test('every alert queries exported metrics, has for/severity/summary and links to docs/operations.md', async () => {
  const ex = await exported();
  const file = parseYaml(read('deploy/prometheus/metaetcd-alerts.yml')) as { groups: { name: string; rules: Rule[] }[] };
  const docs = anchors(read('docs/operations.md'));
  const failures: string[] = [];
  const names = new Set<string>();
  let alerts = 0;
  for (const g of file.groups) {
    assert.ok(g.name && g.rules.length > 0);
    for (const r of g.rules) {
      const name = r.alert ?? r.record ?? '?';
      assert.ok(r.alert, `${g.name}: a rule without alert`);
      assert.ok(!names.has(name), `alert ${name} twice`);
      names.add(name);
      alerts++;
      if (!r.for || !/^\d+[smhd]$/.test(r.for)) failures.push(`${name}: for is ${JSON.stringify(r.for)}`);
      if (!['critical', 'warning', 'info'].includes(r.labels?.severity ?? '')) failures.push(`${name}: severity ${r.labels?.severity}`);
      if (!r.annotations?.summary) failures.push(`${name}: no summary`);
      if (!r.annotations?.description) failures.push(`${name}: no description`);
      const links = [...Object.values(r.annotations ?? {}).join(' ').matchAll(/docs\/operations\.md#([\w-]+)/g)].map((m) => m[1]!);
      if (links.length === 0) failures.push(`${name}: no link to docs/operations.md`);
      for (const a of links) if (!docs.has(a)) failures.push(`${name}: docs/operations.md has no section #${a}`);
      failures.push(...problems(r.expr, ex).map((p) => `${name}: ${p}`));
    }
  }
  assert.deepEqual(failures, []);
  assert.ok(alerts >= 10);
  // The Monitoring section of docs/operations.md names every alert.
  const monitoring = read('docs/operations.md').split(/^## /m).find((s) => s.startsWith('Monitoring'));
  assert.ok(monitoring, 'docs/operations.md has a Monitoring section');
  const undocumented = [...names].filter((n) => !monitoring.includes(n));
  assert.deepEqual(undocumented, [], 'alerts not described in docs/operations.md#monitoring');
});

test('promtool accepts the alert rules and their unit tests pass', (t) => {
  if (spawnSync('promtool', ['--version']).error) {
    t.skip('promtool is not installed');
    return;
  }
  const cwd = join(root, 'deploy/prometheus');
  for (const args of [['check', 'rules', 'metaetcd-alerts.yml'], ['test', 'rules', 'metaetcd-alerts.test.yml']]) {
    const r = spawnSync('promtool', args, { cwd, encoding: 'utf8' });
    assert.equal(r.status, 0, `promtool ${args.join(' ')}:\n${r.stdout}${r.stderr}`);
  }
});

// ---------------------------------------------------------------------------
// Kubernetes manifests, the systemd unit and the Dockerfile.

/** Parses a flag list with the proxy's own parser: unknown flags and bad values throw. */
function proxyConfig(args: string[], where: string): ProxyConfig {
  for (const a of args) {
    if (!a.startsWith('-')) continue;
    const name = a.replace(/^--?/, '').split('=')[0]!;
    assert.ok(name in PROXY_FLAGS, `${where}: ${a} is not a flag of the proxy (src/config.ts PROXY_FLAGS)`);
  }
  try {
    return parseProxyArgs(args).config;
  } catch (err) {
    assert.fail(`${where}: the proxy refuses its flags: ${(err as Error).message}`);
  }
}

interface Probe {
  httpGet?: { port: number | string; path: string; host?: string };
}
interface Container {
  name: string;
  command?: string[];
  args?: string[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string }[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
}
interface PodSpec {
  hostNetwork?: boolean;
  containers: Container[];
}

const portOf = (addr: string) => Number(addr.slice(addr.lastIndexOf(':') + 1));

test('the Kubernetes manifests pass only flags the proxy accepts, and probe and mount what they configure', () => {
  const dir = 'deploy/kubernetes';
  const files = readdirSync(join(root, dir)).filter((f) => /\.ya?ml$/.test(f));
  assert.ok(files.includes('static-pod.yaml') && files.includes('deployment.yaml'));
  const kinds: string[] = [];
  for (const f of files) {
    for (const doc of parseAllDocuments(read(`${dir}/${f}`))) {
      assert.deepEqual(doc.errors, [], f);
      const o = doc.toJS() as { kind: string; spec?: { template?: { spec: PodSpec } } & Partial<PodSpec> };
      kinds.push(o.kind);
      const pod = o.kind === 'Pod' ? (o.spec as PodSpec) : o.spec?.template?.spec;
      if (!pod) continue;
      for (const c of pod.containers) {
        const where = `${f} ${o.kind}/${c.name}`;
        assert.equal(c.command, undefined, `${where}: the image's ENTRYPOINT runs the proxy; pass flags in args`);
        const config = proxyConfig(c.args ?? [], where);
        // Certificates and keys lie in mounted volumes.
        for (const path of [config.caCert, config.serverCert, config.serverCertKey, config.clientCert, config.clientCertKey]) {
          assert.ok(path, `${where}: TLS both ways needs every certificate flag`);
          assert.ok(c.volumeMounts?.some((m) => path.startsWith(`${m.mountPath}/`)), `${where}: ${path} is in no volume mount`);
        }
        const metricsPort = config.metricsPort;
        const named = new Map((c.ports ?? []).map((p) => [p.name, p.containerPort]));
        if (!pod.hostNetwork) {
          assert.ok((c.ports ?? []).some((p) => p.containerPort === portOf(config.listenAddr)), `${where}: no containerPort for --listen-addr`);
          assert.notEqual(config.metricsAddr, '127.0.0.1', `${where}: probes cannot reach a metrics server on the pod's loopback`);
        }
        const probes: [string, Probe | undefined, string][] = [
          ['liveness', c.livenessProbe, '/health'],
          ['readiness', c.readinessProbe, '/readyz'],
        ];
        for (const [kind, probe, path] of probes) {
          assert.ok(probe?.httpGet, `${where}: no ${kind} probe`);
          const port = typeof probe.httpGet.port === 'number' ? probe.httpGet.port : named.get(probe.httpGet.port);
          assert.equal(port, metricsPort, `${where}: ${kind} probe port is not --metrics-port`);
          assert.equal(probe.httpGet.path, path, `${where}: ${kind} probe path`);
          if (pod.hostNetwork) assert.equal(probe.httpGet.host, config.metricsAddr, `${where}: ${kind} probe host is not --metrics-addr`);
        }
        if (pod.hostNetwork) assert.equal(config.listenAddr, '127.0.0.1:2379', `${where}: kube-apiserver beside it expects 127.0.0.1:2379`);
      }
    }
  }
  for (const k of ['Pod', 'Deployment', 'Service', 'PodDisruptionBudget']) assert.ok(kinds.includes(k), `no ${k}`);
});

test('the proxy check of flags fails on a flag that does not exist', () => {
  assert.throws(() => proxyConfig(['--coordinator=http://c:2379', '--members=http://m:2379', '--metrics-listen=0.0.0.0'], 'x'), /not a flag of the proxy/);
  assert.throws(() => proxyConfig(['--coordinator=http://c:2379', '--members=http://m:2379', '--watch-timeout=10'], 'x'), /refuses its flags/);
});

test('the systemd unit passes only flags the proxy accepts and is hardened', () => {
  const unit = read('deploy/systemd/metaetcd.service');
  const directives = new Map<string, string[]>();
  for (const line of unit.replace(/\\\n/g, ' ').split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) directives.set(m[1]!, [...(directives.get(m[1]!) ?? []), m[2]!.trim()]);
  }
  const one = (k: string) => directives.get(k)?.at(-1);
  for (const [k, v] of [
    ['ProtectSystem', 'strict'],
    ['NoNewPrivileges', 'yes'],
    ['Restart', 'on-failure'],
  ]) {
    assert.equal(one(k!), v, `${k}=`);
  }
  assert.ok(one('DynamicUser') === 'yes' || one('User'), 'DynamicUser= or User=');
  assert.equal(one('EnvironmentFile'), '/etc/metaetcd/metaetcd.env');

  // The flags: ExecStart's, with $METAETCD_ARGS from the example environment file.
  const env = new Map(
    read('deploy/systemd/metaetcd.env')
      .split('\n')
      .filter((l) => /^\w+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  const exec = one('ExecStart')!.split(/\s+/);
  assert.deepEqual(exec.slice(0, 2), ['/usr/bin/node', '/opt/metaetcd/bin/metaetcd.js']);
  assert.ok(existsSync(join(root, 'bin/metaetcd.js')));
  const credentials = new Set((directives.get('LoadCredential') ?? []).map((c) => c.split(':')[0]));
  const args = exec.slice(2).flatMap((a) => {
    const v = /^\$\{?(\w+)\}?$/.exec(a);
    if (!v) return [a];
    const value = env.get(v[1]!);
    assert.ok(value !== undefined, `${a} is not set in metaetcd.env`);
    return value.split(/\s+/).filter((s) => s !== '');
  });
  for (const a of args) {
    const cred = /^%d\/(.+)$/.exec(a);
    if (cred) assert.ok(credentials.has(cred[1]), `${a} has no LoadCredential=`);
  }
  const config = proxyConfig(
    args.map((a) => a.replace(/^%d\//, '/run/credentials/metaetcd.service/')),
    'metaetcd.service',
  );
  assert.ok(config.serverCert && config.clientCert && config.caCert);
});

test('the Dockerfile copies what the package ships and runs bin/metaetcd.js', () => {
  const dockerfile = read('Dockerfile');
  const pkg = JSON.parse(read('package.json')) as { files: string[]; bin: Record<string, string> };
  const build = JSON.parse(read('tsconfig.build.json')) as { compilerOptions: { rootDir: string; outDir: string } };
  assert.equal(build.compilerOptions.outDir, 'dist');
  assert.ok(read('bin/metaetcd.js').includes("from '../dist/cli.js'"));
  assert.ok(existsSync(join(root, build.compilerOptions.rootDir, 'cli.ts')), 'dist/cli.js is built from src/cli.ts');
  assert.deepEqual(Object.values(pkg.bin), ['bin/metaetcd.js']);

  const stages = dockerfile.split(/^FROM /m).slice(1);
  assert.equal(stages.length, 2, 'a build stage and a runtime stage');
  assert.ok(stages.every((s) => s.startsWith('node:20-bookworm-slim')));
  const runtime = stages[1]!;
  const copied = [...runtime.matchAll(/^COPY (?:--from=\w+ )?(\S+) (\S+)$/gm)].map((m) => ({ from: m[1]!, to: m[2]! }));
  for (const f of pkg.files) assert.ok(copied.some((c) => c.to === `./${f}`), `the runtime stage lacks ${f}/ (package.json files)`);
  assert.match(runtime, /^RUN npm ci --omit=dev --ignore-scripts/m);
  assert.match(runtime, /^USER node$/m);
  assert.match(runtime, /^WORKDIR \/app$/m);
  assert.match(runtime, /^ENTRYPOINT \["node", "\/app\/bin\/metaetcd\.js"\]$/m);
  const exposed = /^EXPOSE (.+)$/m.exec(runtime)?.[1]?.split(/\s+/).map(Number);
  const defaults = parseProxyArgs(['--coordinator=http://c:2379', '--members=http://m:2379']).config;
  assert.deepEqual(exposed, [portOf(defaults.listenAddr), defaults.metricsPort]);

  // Everything copied from the build context exists and is not excluded by .dockerignore.
  const allowed = read('.dockerignore')
    .split('\n')
    .filter((l) => l.startsWith('!'))
    .map((l) => l.slice(1).replace(/\/\*\*$/, ''));
  for (const stage of stages) {
    for (const m of stage.matchAll(/^COPY (?!--from)(.+) (\S+)$/gm)) {
      for (const src of m[1]!.split(' ')) {
        assert.ok(existsSync(join(root, src)), `COPY ${src}: no such path`);
        assert.ok(allowed.includes(src), `COPY ${src}: excluded by .dockerignore`);
      }
    }
  }
});
