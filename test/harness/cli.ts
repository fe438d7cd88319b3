// Test harness: the built `metaetcd` command (bin/metaetcd.js) run to completion
// as an operator runs it, bounded in time.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const BIN = join(ROOT, 'bin', 'metaetcd.js');

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `metaetcd <args>`; fails (after killing it, by pid) if it does not exit within `timeoutMs`. */
export function metaetcd(args: string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    p.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      rej(new Error(`metaetcd ${args.join(' ')} did not exit within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

/** Asserts that the command exited 0, showing its output otherwise. */
export function ok(r: Run, what: string): Run {
  assert.equal(r.code, 0, `${what}: exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}
