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

/**
 * Runs `metaetcd <args>` with a test-only hold hook (`env`=`step`), waits until it
 * says "holding after <step>", and kills it (-9, by pid): a command killed at
 * exactly that point.
 */
export async function killedWhileHolding(args: string[], env: string, step: string, timeoutMs = 60_000): Promise<void> {
  const p = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, [env]: step } });
  let stderr = '';
  const exited = new Promise((r) => p.once('exit', r));
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`no "holding after ${step}" within ${timeoutMs} ms:\n${stderr}`)), timeoutMs);
    p.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
      if (stderr.includes(`holding after ${step}`)) {
        clearTimeout(timer);
        res();
      }
    });
    p.once('exit', (code) => rej(new Error(`metaetcd ${args[0] ?? ''} exited (${code}) before holding after ${step}:\n${stderr}`)));
  });
  process.kill(p.pid!, 'SIGKILL');
  await exited;
}
