// The sandbox's text log lines (src/log-text.ts) from pino's JSON lines.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { formatLogLine, textDestination } from '../../src/log-text.js';

const at = new Date(2026, 11, 7, 14, 23, 5, 123).getTime(); // local time

test('time of day, level, component, message, then key=value fields', () => {
  const line = JSON.stringify({ level: 40, time: at, pid: 1, hostname: 'h', app: 'metaetcd', component: 'server-tls', files: { cert: '/a b.pem' }, err: 'key values mismatch', n: 3, ok: true, msg: 'TLS files changed' });
  assert.equal(formatLogLine(line), '14:23:05.123 WARN  [server-tls] TLS files changed files={"cert":"/a b.pem"} err="key values mismatch" n=3 ok=true');
});

test('strings are bare only when unambiguous; no component, no message', () => {
  assert.equal(formatLogLine(JSON.stringify({ level: 30, time: at, a: 'plain', b: '', c: 'x=y', d: 'say "hi"', e: 'tab\there' })), '14:23:05.123 INFO  a=plain b="" c="x=y" d="say \\"hi\\"" e="tab\\there"');
});

test('errors show their message; at error level their stack follows, indented', () => {
  const err = { type: 'Error', message: 'boom', stack: 'Error: boom\n    at f (x.ts:1:1)' };
  assert.equal(formatLogLine(JSON.stringify({ level: 40, time: at, err, msg: 'm' })), '14:23:05.123 WARN  m err=boom');
  assert.equal(formatLogLine(JSON.stringify({ level: 50, time: at, err, msg: 'm' })), '14:23:05.123 ERROR m err=boom\n    Error: boom\n        at f (x.ts:1:1)');
});

test('colors only when asked; a line that is not JSON passes through', () => {
  const colored = formatLogLine(JSON.stringify({ level: 50, time: at, msg: 'm' }), { color: true });
  assert.match(colored, /\x1b\[31mERROR\x1b\[0m/);
  assert.equal(formatLogLine('not json\n'), 'not json');
});

test('as a pino destination: one text line per record', () => {
  const out: string[] = [];
  const log = pino({ level: 'info', base: { app: 'metaetcd' } }, textDestination({ out: { write: (s: string) => out.push(s) } }));
  log.child({ component: 'sandbox' }).info({ port: 2379 }, 'ready');
  log.debug('not shown');
  assert.equal(out.length, 1);
  assert.match(out[0]!, /^\d\d:\d\d:\d\d\.\d{3} INFO  \[sandbox\] ready port=2379\n$/);
});
