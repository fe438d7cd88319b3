// Regenerates src/proto/gen from proto/etcd/*.proto with protoc + ts-proto.
// Run with `npm run gen` after editing a .proto file; the output is committed so
// that `npm ci` needs no protoc. `--check` regenerates into a temporary folder
// and fails when the committed output differs.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const check = process.argv.includes('--check');
const committed = join(root, 'src/proto/gen');
const out = check ? mkdtempSync(join(tmpdir(), 'metaetcd-gen-')) : committed;
const plugin = join(root, 'node_modules/.bin/protoc-gen-ts_proto');
const options = [
  'outputServices=grpc-js',
  'forceLong=bigint',
  'esModuleInterop=true',
  'oneof=unions-value',
  'outputJsonMethods=false',
  'outputPartialMethods=true',
  'useExactTypes=false',
  'importSuffix=.js',
  'env=node',
  'fileSuffix=',
].join(',');

execFileSync(
  'protoc',
  [
    `--plugin=protoc-gen-ts_proto=${plugin}`,
    `--ts_proto_out=${out}`,
    `--ts_proto_opt=${options}`,
    '-I',
    join(root, 'proto/etcd'),
    'kv.proto',
    'rpc.proto',
  ],
  { stdio: 'inherit' },
);

// Two adjustments to ts-proto's decoders, so that malformed requests are refused
// the way etcd's Go decoders refuse them:
// - a known field with the wrong wire type is an error (ts-proto skips it,
//   which would turn a malformed value into an empty one);
// - messages may nest 1000 deep (ts-proto stops at 100, i.e. 50 nested
//   transactions; etcd itself refuses more than 127 with "too many operations").
const wrongWireType = 'throw new globalThis.Error(`wrong wire type ${tag & 7} for field ${tag >>> 3}`);';
for (const f of readdirSync(out).filter((f) => f.endsWith('.ts'))) {
  const path = join(out, f);
  const src = readFileSync(path, 'utf8')
    .replace(/(if \(tag !== \d+\) \{\n\s+)break;/g, `$1${wrongWireType}`)
    .replace(/(if \(tag === \d+\) \{[\s\S]*?continue;\n\s+\}\n\n\s+)break;/g, `$1${wrongWireType}`)
    .replace(/previousRecursionDepth >= 100\b/g, 'previousRecursionDepth >= 1000');
  writeFileSync(path, withoutCopies(src));
}

/**
 * Three more, so that bytes are not copied on the hot path (values are only
 * forwarded, and copying them was a tenth of the proxy's CPU):
 * - a decoded bytes field is a view of the received message, not a copy
 *   (`Buffer.from(Uint8Array)` copies); the message buffer then lives as long as
 *   any of its fields, which the proxy keeps no longer than the message itself
 *   (the key cache keeps strings, the watch buffer whole events);
 * - an unset bytes field is one shared empty buffer, not a new one per message;
 * - a serialized message is a view of the writer's output, not a copy of it.
 */
function withoutCopies(src) {
  const helpers =
    '\n/** A Buffer over the same memory (no copy). */\n' +
    'function view(b: Uint8Array): Buffer {\n  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);\n}\n' +
    '\n/** The value of every unset bytes field (never written to: it has no bytes). */\nconst NO_BYTES: Buffer = Buffer.alloc(0);\n';
  const out = src
    .replace(/Buffer\.from\(reader\.bytes\(\)\)/g, 'view(reader.bytes())')
    .replace(/Buffer\.alloc\(0\)/g, 'NO_BYTES')
    .replace(/Buffer\.from\((\w+)\.encode\(value\)\.finish\(\)\)/g, 'view($1.encode(value).finish())')
    .replace(/(export const protobufFileName = .*\n)/, `$1${helpers}`)
    .replace('const NO_BYTES: Buffer = NO_BYTES;', 'const NO_BYTES: Buffer = Buffer.alloc(0);');
  return out;
}

if (check) {
  const differing = readdirSync(out).filter(
    (f) => readFileSync(join(out, f), 'utf8') !== readFileSync(join(committed, f), 'utf8'),
  );
  rmSync(out, { recursive: true, force: true });
  if (differing.length > 0) {
    console.error(`generated code is stale: ${differing.join(', ')}; run npm run gen`);
    process.exit(1);
  }
  console.log('generated code is up to date');
}
