// Test harness: run the real `etcdctl` (API v3) against an endpoint, with
// optional stdin (for `txn -i`) and a hard timeout that kills it by pid.

import { spawn } from 'node:child_process';

export interface EtcdctlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface EtcdctlOptions {
  /** Written to stdin, then stdin is closed (stdin is always closed). */
  input?: string;
  /** Default 15000 ms; on expiry the child is SIGKILLed and the promise rejects. */
  timeoutMs?: number;
  /** Extra environment (applied after ETCDCTL_API=3). */
  env?: Record<string, string>;
  /** For commands that run until stopped (make-mirror): on abort the child gets SIGTERM and the promise resolves with its output. */
  stop?: AbortSignal;
  /** Called with everything printed to stdout so far, whenever more arrives. */
  onStdout?: (stdout: string) => void;
}

const DEFAULT_TIMEOUT_MS = 15_000;

export function etcdctl(endpoint: string, args: string[], opts: EtcdctlOptions = {}): Promise<EtcdctlResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const argv = ['--endpoints', endpoint, ...args];
  const what = `etcdctl ${argv.join(' ')}`;
  return new Promise((resolve, reject) => {
    const child = spawn('etcdctl', argv, { env: etcdctlEnv(opts.env), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };
    const timer = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      settle(() => reject(new Error(`${what}: timed out after ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`)));
    }, timeoutMs);

    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      opts.onStdout?.(stdout);
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.stdout.on('error', () => undefined);
    child.stderr.on('error', () => undefined);
    child.stdin.on('error', () => undefined); // EPIPE when etcdctl exits without reading
    child.on('error', (err) => settle(() => reject(new Error(`${what}: ${err.message}`))));
    // 'close' (not 'exit') so all output has been read.
    child.on('close', (code) => settle(() => resolve({ code, stdout, stderr })));
    opts.stop?.addEventListener('abort', () => {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGTERM');
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** Inherited ETCDCTL_* variables would conflict with --endpoints (etcdctl 3.4 refuses that). */
function etcdctlEnv(extra: Record<string, string> | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('ETCDCTL_')) env[key] = value;
  return { ...env, ETCDCTL_API: '3', ...extra };
}
