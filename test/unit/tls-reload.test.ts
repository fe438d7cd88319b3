// ReloadingTlsFiles: new file contents are taken when the files change and the
// new pair is usable; unusable replacements (a key of another certificate, a cut
// CA bundle) keep the previous material, are reported once, and are tried again
// when the files change again.

import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { certificateProvider } from '../../src/tls/grpc-credentials.js';
import { ReloadingTlsFiles, validateTls, type TlsMaterial } from '../../src/tls/reloading-files.js';
import { CertFactory, replaceFile, type CertPair } from '../harness/certs.js';

let dir: string;
let ca1: CertPair;
let ca2: CertPair;
let a: CertPair;
let b: CertPair;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'metaetcd-tls-unit-'));
  const f = new CertFactory(dir);
  ca1 = f.ca('ca1');
  ca2 = f.ca('ca2');
  a = f.sign(ca1, 'a');
  b = f.sign(ca2, 'b');
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** Live files (copies of A and CA1) and a reader over them with a controllable clock. */
function setup(name: string) {
  const paths = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`), ca: join(dir, `${name}-ca.pem`) };
  copyFileSync(a.cert, paths.cert);
  copyFileSync(a.key, paths.key);
  copyFileSync(ca1.cert, paths.ca);
  let now = 0;
  const rejected: string[] = [];
  let reloaded = 0;
  const files = new ReloadingTlsFiles(paths, {
    checkIntervalMs: 1000,
    now: () => now,
    onRejected: (e) => rejected.push(e.message),
    onReloaded: () => reloaded++,
  });
  return {
    paths,
    files,
    rejected,
    reloaded: () => reloaded,
    advance: (ms: number) => (now += ms),
  };
}

const bytes = (p: string) => readFileSync(p);

test('reads the files at start; a change is seen on the first look after the check interval', () => {
  const t = setup('s1');
  assert.deepEqual(t.files.current().cert, bytes(a.cert));
  assert.deepEqual(t.files.current().ca, bytes(ca1.cert));
  replaceFile(t.paths.cert, bytes(b.cert));
  replaceFile(t.paths.key, bytes(b.key));
  replaceFile(t.paths.ca, bytes(ca2.cert));
  t.advance(500);
  assert.deepEqual(t.files.current().cert, bytes(a.cert), 'not looked at again within the interval');
  t.advance(500);
  const m = t.files.current();
  assert.deepEqual(m.cert, bytes(b.cert));
  assert.deepEqual(m.key, bytes(b.key));
  assert.deepEqual(m.ca, bytes(ca2.cert));
  assert.equal(t.reloaded(), 1);
  assert.deepEqual(t.rejected, []);
});

test('a touch or a rewrite with the same bytes is no change', () => {
  const t = setup('s2');
  const seen: TlsMaterial[] = [];
  const unsubscribe = t.files.subscribe((m) => seen.push(m));
  utimesSync(t.paths.cert, new Date(), new Date(Date.now() + 5000));
  replaceFile(t.paths.key, bytes(a.key));
  assert.equal(t.files.check(), false);
  assert.equal(t.reloaded(), 0);
  assert.equal(seen.length, 0);
  unsubscribe();
});

test('a key that does not match the certificate keeps the old pair, is reported once, and the fixed pair is taken later', () => {
  const t = setup('s3');
  const seen: TlsMaterial[] = [];
  t.files.subscribe((m) => seen.push(m));
  replaceFile(t.paths.cert, bytes(b.cert)); // the cert lands first; its key still A's
  assert.equal(t.files.check(), false);
  assert.equal(t.files.check(), false);
  t.advance(5000);
  assert.deepEqual(t.files.current().cert, bytes(a.cert), 'still the old certificate');
  assert.equal(t.rejected.length, 1, `one report for one state of the files: ${t.rejected.join('; ')}`);
  assert.match(t.rejected[0]!, /s3\.pem and .*s3\.key/);
  replaceFile(t.paths.key, bytes(b.key)); // the key lands
  assert.equal(t.files.check(), true);
  assert.deepEqual(t.files.current().cert, bytes(b.cert));
  assert.deepEqual(t.files.current().key, bytes(b.key));
  assert.equal(seen.length, 1, 'subscribers get the new pair once');
  assert.deepEqual(seen[0]!.cert, bytes(b.cert));
  t.files.stop();
});

test('a half-written or empty CA bundle, a missing file, a garbage certificate: the old material stays', () => {
  const t = setup('s4');
  const ca = bytes(ca2.cert).toString();
  replaceFile(t.paths.ca, ca.slice(0, Math.floor(ca.length / 2)));
  assert.equal(t.files.check(), false);
  replaceFile(t.paths.ca, '');
  assert.equal(t.files.check(), false);
  replaceFile(t.paths.ca, bytes(ca1.cert).toString() + ca.slice(0, 40));
  assert.equal(t.files.check(), false, 'a whole certificate followed by a cut one');
  rmSync(t.paths.ca);
  assert.equal(t.files.check(), false);
  replaceFile(t.paths.ca, bytes(ca1.cert).toString() + ca);
  replaceFile(t.paths.cert, '-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n');
  assert.equal(t.files.check(), false);
  assert.equal(t.rejected.length, 5, t.rejected.join('\n'));
  assert.deepEqual(t.files.current().ca, bytes(ca1.cert));
  assert.deepEqual(t.files.current().cert, bytes(a.cert));
  replaceFile(t.paths.cert, bytes(a.cert));
  assert.equal(t.files.check(), true, 'a bundle of two CAs with the old pair');
  assert.equal(t.files.current().ca!.toString(), bytes(ca1.cert).toString() + ca);
});

test('unusable files at start are an error naming them', () => {
  assert.throws(() => new ReloadingTlsFiles({ cert: a.cert, key: b.key }), /a\.pem and .*b\.key/);
  assert.throws(() => new ReloadingTlsFiles({ ca: join(dir, 'nope.pem') }), /cannot read .*nope\.pem/);
  assert.throws(() => validateTls({ cert: bytes(a.cert) }), /needs its key/);
  validateTls({ ca: bytes(ca1.cert), cert: bytes(a.cert), key: bytes(a.key) });
});

test('while subscribed, a timer looks at the files; without subscribers it stops', async () => {
  const paths = { cert: join(dir, 't.pem'), key: join(dir, 't.key') };
  copyFileSync(a.cert, paths.cert);
  copyFileSync(a.key, paths.key);
  const files = new ReloadingTlsFiles(paths, { checkIntervalMs: 20 });
  const got = new Promise<TlsMaterial>((resolve) => {
    const unsubscribe = files.subscribe((m) => {
      unsubscribe();
      resolve(m);
    });
  });
  replaceFile(paths.key, bytes(b.key));
  replaceFile(paths.cert, bytes(b.cert));
  // The reload timer is unref'd (it must not keep a proxy alive): a ref'd deadline keeps this
  // process running while it waits, and bounds the wait.
  let deadline: NodeJS.Timeout | undefined;
  const m = await Promise.race([
    got,
    new Promise<never>((_, reject) => {
      deadline = setTimeout(() => reject(new Error('the timer never reported the change')), 5000);
    }),
  ]).finally(() => clearTimeout(deadline));
  assert.deepEqual(m.cert, bytes(b.cert));
  assert.equal((files as unknown as { timer: unknown }).timer, undefined, 'the timer stops with the last subscriber');
});

test('the grpc-js certificate provider reports the current material after registration and each change', async () => {
  const t = setup('s5');
  const provider = certificateProvider(t.files);
  const ids: Array<{ certificate: Buffer } | null> = [];
  const cas: Array<{ caCertificate: Buffer } | null> = [];
  const onId = (u: { certificate: Buffer; privateKey: Buffer } | null) => ids.push(u);
  const onCa = (u: { caCertificate: Buffer } | null) => cas.push(u);
  provider.addIdentityCertificateListener(onId);
  provider.addCaCertificateListener(onCa);
  assert.equal(ids.length, 0, 'not during the registration');
  await new Promise((r) => process.nextTick(r));
  assert.deepEqual(ids[0]!.certificate, bytes(a.cert));
  assert.deepEqual(cas[0]!.caCertificate, bytes(ca1.cert));
  replaceFile(t.paths.cert, bytes(b.cert));
  replaceFile(t.paths.key, bytes(b.key));
  assert.equal(t.files.check(), true);
  assert.deepEqual(ids[1]!.certificate, bytes(b.cert));
  assert.equal(cas.length, 2);
  provider.removeIdentityCertificateListener(onId);
  provider.removeCaCertificateListener(onCa);
  assert.equal((t.files as unknown as { timer: unknown }).timer, undefined, 'no listeners, no timer');
});
