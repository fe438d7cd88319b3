// `metaetcd placement add PREFIX --to N [--dry-run]` and `metaetcd placement
// remove PREFIX [--dry-run]`: pin a key prefix to a member, or unpin it
// (repartition/placement.ts). Same cluster, TLS and logging flags as the
// partition mover (parsed by its parser); `members list` shows the rules.

import { loadClientTls } from '../app/members.js';
import { PROXY_FLAGS } from '../config.js';
import { usage } from '../lifecycle.js';
import { createLogger } from '../log.js';
import { parseMoverArgs } from './cli.js';
import { connectMetaCluster } from './connect.js';
import { changePlacement } from './placement.js';

const SYNOPSIS =
  'metaetcd placement add PREFIX --to N [--dry-run]  --coordinator URL --members URL,...\n' +
  '       metaetcd placement remove PREFIX [--dry-run] [flags]\n' +
  '  (with every proxy stopped; PREFIX is taken as UTF-8 bytes)';

const HELP = {
  ...Object.fromEntries(['coordinator', 'members', 'ca-cert', 'client-cert', 'client-cert-key'].map((n) => [n, PROXY_FLAGS[n]!])),
  to: { help: 'placement add: the member slot to pin the prefix to' },
  'request-timeout': { help: 'bound on each request to the etcd clusters (default 30s)' },
  v: { help: 'log level: debug, info, warn, error (default warn)' },
  'dry-run': { help: 'print the plan and change nothing' },
};

export async function runPlacement(argv: string[]): Promise<number> {
  const verb = argv[0];
  try {
    if (verb === undefined || verb === 'help' || verb === '--help' || verb === '-h') {
      process.stdout.write(usage(SYNOPSIS, HELP));
      return 0;
    }
    const p = parseMoverArgs(argv.slice(1));
    if (p.help) {
      process.stdout.write(usage(SYNOPSIS, HELP));
      return 0;
    }
    if (verb !== 'add' && verb !== 'remove') throw new Error(`unknown command ${JSON.stringify(`placement ${verb}`)} (want placement add or placement remove)`);
    if (p.switches.has('rollback')) throw new Error('--rollback is not a placement flag (an interrupted change is finished by running a placement command again)');
    const [prefix, extra] = p.positional;
    if (prefix === undefined || prefix === '') throw new Error(`placement ${verb} needs a non-empty PREFIX`);
    if (extra !== undefined) throw new Error(`unexpected argument ${JSON.stringify(extra)}`);
    let member: number | undefined;
    if (verb === 'add') {
      if (p.flags.to === '') throw new Error('placement add needs --to N');
      member = Number(p.flags.to);
      if (!Number.isInteger(member) || member < 0) throw new Error(`invalid member ${JSON.stringify(p.flags.to)}: want a member slot number`);
    } else if (p.flags.to !== '') {
      throw new Error('placement remove takes no --to (the keys go back to their partitions\' owners)');
    }
    const log = createLogger(p.flags.logLevel);
    const c = await connectMetaCluster({ ...p.flags, tls: loadClientTls(p.flags) });
    try {
      await changePlacement(c, { prefix: Buffer.from(prefix, 'utf8'), member, dryRun: p.switches.has('dry-run'), log, print: (line) => process.stdout.write(line) });
    } finally {
      c.close();
    }
    return 0;
  } catch (err) {
    process.stderr.write(`metaetcd placement ${verb ?? ''}: ${err instanceof Error ? err.message : String(err)}\n`.replace(' :', ':'));
    return 1;
  }
}
