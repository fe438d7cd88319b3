// Runs the test files under test/ with node's test runner (through tsx), one
// process per file: first the unit layer (test/unit, no etcd, one process), then the files
// that start their own etcd processes two at a time, then the timing-sensitive
// files (listed in ALONE) one at a time with nothing else running. Each file's
// spec output is printed in one piece when it finishes, and one summary for the
// whole run comes last ("ℹ tests N", "ℹ pass N", "ℹ fail N", ...).
//
//   npm test                     everything
//   npm test -- <substring>...   only the files whose path contains one of them
//   npm run test:unit            only test/unit
//   TEST_CONCURRENCY=1 npm test  everything one file at a time
//
// Sharing the machine is safe: etcd ports come from the kernel and etcd is
// restarted on other ports when one was taken meanwhile, proxies and metrics
// listen on port 0, and every etcd gets its own mkdtemp data directory.
//
// Each test process gets its own scratch root (METAETCD_SCRATCH_ROOT, on tmpfs
// when there is one), removed when the process ends: a file whose after-hook
// failed or that was killed leaves no etcd data behind to fill the tmpfs (and
// so the memory) of the files that run after it.
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const filter = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const concurrency = Math.max(1, Number(process.env.TEST_CONCURRENCY ?? 2));

/**
 * Files that run alone: they kill or SIGSTOP processes and assert that the rest
 * recovers within bounded times, measure memory, or load the machine on their
 * own (fuzz, thousands of streams, 100 MiB lists under a deadline); a
 * neighbour competing for the 2 cores could make their bounds flaky.
 */
const ALONE = new Set([
  'test/e2e/cli.test.ts',
  'test/e2e/etcd-process.test.ts',
  'test/e2e/lifecycle.test.ts',
  'test/e2e/status.test.ts',
  'test/e2e/tls-reload.test.ts',
  'test/e2e/workers.test.ts',
  'test/faults/bad-input.test.ts',
  'test/faults/coordinator.test.ts',
  'test/faults/cross-member-crash.test.ts',
  'test/faults/fuzz.test.ts',
  'test/faults/member-cluster.test.ts',
  'test/faults/member-outage.test.ts',
  'test/faults/member-return.test.ts',
  'test/faults/multi-proxy.test.ts',
  'test/faults/proxy-crash.test.ts',
  'test/kube/cacher.test.ts',
  'test/kube/transport.test.ts',
  'test/lease/lease-faults.test.ts',
  'test/lease/lease-kube-pattern.test.ts',
  'test/watch/clients.test.ts',
  'test/watch/slow-consumer.test.ts',
]);

function find(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return find(p);
    return name.endsWith('.test.ts') ? [p] : [];
  });
}

const files = find(join(root, 'test'))
  .map((f) => relative(root, f))
  .filter((f) => filter.length === 0 || filter.some((s) => f.includes(s)))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filter.join(' ')}`);
  process.exit(1);
}

/** Where etcd data goes: tmpfs when it is writable (as src/sandbox/local-resources.ts decides). */
function scratchBase() {
  try {
    accessSync('/dev/shm', fsConstants.W_OK | fsConstants.X_OK);
    if (statSync('/dev/shm').isDirectory()) return '/dev/shm';
  } catch {
    // no tmpfs
  }
  return tmpdir();
}

const SUMMARY = /^ℹ (tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) (\d+(?:\.\d+)?)$/;
const totals = { tests: 0, suites: 0, pass: 0, fail: 0, cancelled: 0, skipped: 0, todo: 0 };
const failedFiles = [];

/** Runs test files in one process; prints their output (without its summary) and adds its counts to the totals. */
function runFiles(batch) {
  const name = batch.length === 1 ? batch[0] : `${batch.length} files (${batch.join(', ')})`;
  const started = performance.now();
  const scratch = mkdtempSync(join(scratchBase(), 'metaetcd-run-'));
  return new Promise((done) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', `--test-concurrency=${concurrency}`, ...batch], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, METAETCD_SCRATCH_ROOT: scratch, ...(process.stdout.isTTY ? { FORCE_COLOR: '1' } : {}) },
    });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    child.on('close', (code, signal) => {
      const left = readdirSync(scratch, { recursive: true }).map(String).slice(0, 12);
      rmSync(scratch, { recursive: true, force: true });
      if (left.length > 0) out += `\n# scratch left behind by the test process (removed): ${left.join(', ')}\n`;
      const counted = {};
      const lines = out.split('\n').filter((line) => {
        const m = SUMMARY.exec(line.replace(/\x1b\[[0-9;]*m/g, ''));
        if (m) counted[m[1]] = Number(m[2]);
        return !m;
      });
      for (const k of Object.keys(totals)) totals[k] += counted[k] ?? 0;
      const failed = code !== 0 || (counted.fail ?? 0) > 0 || counted.tests === undefined;
      if (failed) failedFiles.push(`${name} (exit ${signal ?? code})`);
      if (counted.tests === undefined) totals.fail += 1; // crashed before reporting: count it as a failure
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      process.stdout.write(`\n▶ ${name} (${secs} s)${failed ? ' FAILED' : ''}\n${lines.join('\n').trimEnd()}\n`);
      done();
    });
  });
}

/** Runs `list` with at most `n` files at a time. */
async function runPool(list, n) {
  const queue = [...list];
  const worker = async () => {
    while (queue.length > 0) await runFiles([queue.shift()]);
  };
  await Promise.all(Array.from({ length: Math.min(n, list.length) }, worker));
}

const started = performance.now();
const unit = files.filter((f) => f.startsWith('test/unit/'));
const alone = files.filter((f) => ALONE.has(f));
const shared = files.filter((f) => !unit.includes(f) && !ALONE.has(f));
// The unit layer is quick: one process for all of it saves a tsx start per file.
if (unit.length > 0) await runFiles(unit);
await runPool(shared, concurrency);
await runPool(alone, 1);

if (failedFiles.length > 0) console.log(`\n✖ failed files:\n${failedFiles.map((f) => `  ${f}`).join('\n')}`);
console.log('');
for (const [k, v] of Object.entries(totals)) console.log(`ℹ ${k} ${v}`);
console.log(`ℹ duration_ms ${(performance.now() - started).toFixed(3)}`);
process.exit(failedFiles.length > 0 ? 1 : 0);
