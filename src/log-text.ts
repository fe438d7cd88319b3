// Human-readable log lines for a terminal (the sandbox's stderr when it is a
// TTY): pino's JSON lines turned into
//
//   14:23:05.123 WARN  [server-tls] TLS files changed but cannot be used err="key values mismatch"
//
// time of day (local), level, component, message, then the other fields as
// key=value (strings quoted when they need it, objects as JSON; an error's
// message only, its stack on the following lines at error level and above).

import { pino } from 'pino';

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const LEVEL_COLORS: Record<number, string> = { 10: '90', 20: '36', 30: '32', 40: '33', 50: '31', 60: '35' };
/** Fields shown elsewhere on the line, or the same on every line. */
const OMIT = new Set(['level', 'time', 'msg', 'component', 'pid', 'hostname', 'app']);

export interface TextFormatOptions {
  color?: boolean;
}

/** One pino JSON line as text (without the newline); a line that is not JSON is returned as it is. */
export function formatLogLine(line: string, o: TextFormatOptions = {}): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.replace(/\n$/, '');
  }
  if (typeof rec !== 'object' || rec === null) return line.replace(/\n$/, '');
  const level = typeof rec.level === 'number' ? rec.level : 30;
  const levelName = (LEVEL_NAMES[level] ?? String(rec.level)).padEnd(5);
  const paint = (code: string | undefined, s: string) => (o.color && code ? `\x1b[${code}m${s}\x1b[0m` : s);
  const parts = [paint('90', timeOfDay(rec.time)), paint(LEVEL_COLORS[level], levelName)];
  if (rec.component !== undefined) parts.push(paint('1', `[${String(rec.component)}]`));
  if (rec.msg !== undefined) parts.push(String(rec.msg));
  let stack: string | undefined;
  for (const [k, v] of Object.entries(rec)) {
    if (OMIT.has(k) || v === undefined) continue;
    if (isSerializedError(v)) {
      parts.push(`${k}=${quote(v.message)}`);
      if (level >= 50 && typeof v.stack === 'string') stack = v.stack;
      continue;
    }
    parts.push(`${k}=${value(v)}`);
  }
  const out = parts.join(' ');
  return stack ? `${out}\n${stack.split('\n').map((l) => `    ${l}`).join('\n')}` : out;
}

/** A pino destination that writes text lines to `out` (default: stderr). */
export function textDestination(o: TextFormatOptions & { out?: pino.DestinationStream } = {}): pino.DestinationStream {
  const out = o.out ?? pino.destination({ fd: 2, sync: true });
  return {
    write(chunk: string): void {
      for (const line of chunk.split('\n')) if (line !== '') out.write(`${formatLogLine(line, o)}\n`);
    },
  };
}

function timeOfDay(t: unknown): string {
  const d = typeof t === 'number' || typeof t === 'string' ? new Date(t) : new Date();
  if (Number.isNaN(d.getTime())) return String(t);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function isSerializedError(v: unknown): v is { message: string; stack?: unknown } {
  return typeof v === 'object' && v !== null && typeof (v as { message?: unknown }).message === 'string' && ('stack' in v || 'type' in v);
}

function value(v: unknown): string {
  if (typeof v === 'string') return quote(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return JSON.stringify(v);
}

/** Bare when unambiguous, JSON-quoted otherwise (empty, spaces, quotes, '=', control characters). */
function quote(s: string): string {
  return s !== '' && /^[^\s"'=\\\x00-\x1f\x7f]+$/.test(s) ? s : JSON.stringify(s);
}
