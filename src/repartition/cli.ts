// The mover's commands: `partitions move P... --to N [--dry-run] [--rollback]`,
// `members add URL[;URL...]... [--dry-run]`, `members drain N [--dry-run]`,
// `members remove N [--dry-run]`, `rebalance [--dry-run]`, `members list [-w table|json]`.
// They take the proxy's cluster and TLS flags and talk to the clusters directly
// (no proxy needed). A move interrupted earlier is finished before anything new
// is planned; plans of several sources run as one move per source, in turn.

import { loadClientTls } from '../app/members.js';
import { applyFlags, parseFlags, PROXY_FLAGS, type Kind } from '../config.js';
import { usage } from '../lifecycle.js';
import { createLogger, type Logger } from '../log.js';
import { Progress } from '../ops/snapshot/progress.js';
import { parseCluster, parseClusters, type Endpoint } from '../members/endpoints.js';
import { EtcdClient } from '../members/etcd-client.js';
import { assertNoProxyServing, connectMetaCluster, newestLayout, refreshStates, type MetaCluster } from './connect.js';
import { addMembers, assertNotListed } from './members-add.js';
import { formatMembersList, listMembers } from './members-list.js';
import { movePartitions, rollbackMove, type MoveProgress, type MoveResult } from './move.js';
import { findMoveState } from './move-state.js';
import { removeMember } from './remove.js';
import { describeMove, describePlan, parsePartitionList, planDrain, planMove, planRebalance, type PlannedMove } from './plan.js';

interface Flags {
  coordinator: string;
  members: string;
  caCert: string | undefined;
  clientCert: string | undefined;
  clientCertKey: string | undefined;
  requestTimeoutMs: number;
  logLevel: string;
  writeOut: string;
  to: string;
}

const SHARED = ['coordinator', 'members', 'ca-cert', 'client-cert', 'client-cert-key'] as const;
const FLAGS: Record<string, { key: string; kind: Kind; help: string }> = {
  ...Object.fromEntries(SHARED.map((name) => [name, PROXY_FLAGS[name]!])),
  to: { key: 'to', kind: 'string', help: 'partitions move: the target member slot' },
  'request-timeout': { key: 'requestTimeoutMs', kind: 'duration', help: 'bound on each request to the etcd clusters (default 30s)' },
  'write-out': { key: 'writeOut', kind: 'string', help: 'members list: table or json (default table)' },
  w: { key: 'writeOut', kind: 'string', help: 'short for --write-out' },
  v: { key: 'logLevel', kind: 'string', help: 'log level: debug, info, warn, error (default warn)' },
};
/** Flags without a value (parseFlags takes a value for every flag). */
const SWITCHES = ['dry-run', 'rollback'] as const;
const SWITCH_HELP = { 'dry-run': { help: 'print the plan (members add: what would be done) and change nothing' }, rollback: { help: 'partitions move: undo the running move (if not flipped yet)' } };

const SYNOPSIS =
  'metaetcd partitions move P[,P|P-P...]... --to N [--dry-run] | --rollback  --coordinator URL --members URL,...\n' +
  '       metaetcd members add URL[;URL...]... [--dry-run] [flags]\n' +
  '       metaetcd members drain N [--dry-run] [flags]\n' +
  '       metaetcd members remove N [--dry-run] [flags]   (N: the last slot, drained)\n' +
  '       metaetcd members list [-w table|json] [flags]\n' +
  '       metaetcd rebalance [--dry-run] [flags]';

interface Parsed {
  flags: Flags;
  positional: string[];
  switches: Set<string>;
  help: boolean;
}

export function parseMoverArgs(argv: string[]): Parsed {
  const switches = new Set<string>();
  const rest = argv.filter((a) => {
    const name = a.replace(/^--?/, '');
    if (a.startsWith('-') && (SWITCHES as readonly string[]).includes(name)) return !switches.add(name);
    return true;
  });
  const parsed = parseFlags(rest, new Set(Object.keys(FLAGS)));
  const flags = applyFlags<Flags>(
    { coordinator: '', members: '', caCert: undefined, clientCert: undefined, clientCertKey: undefined, requestTimeoutMs: 30_000, logLevel: 'warn', writeOut: 'table', to: '' },
    parsed.values,
    FLAGS,
  );
  if (!parsed.help) {
    if (!flags.coordinator) throw new Error('--coordinator is required');
    if (!flags.members) throw new Error('--members is required');
    if (!!flags.clientCert !== !!flags.clientCertKey) throw new Error('--client-cert and --client-cert-key go together');
    if (!['table', 'json'].includes(flags.writeOut)) throw new Error('-w/--write-out must be table or json');
  }
  return { flags, positional: parsed.positional, switches, help: parsed.help };
}

/** `metaetcd partitions ...`, `metaetcd members ...`, `metaetcd rebalance ...`. */
export async function runMover(command: 'partitions' | 'members' | 'rebalance', argv: string[]): Promise<number> {
  const name = command === 'rebalance' ? 'rebalance' : `${command} ${argv[0] ?? ''}`.trim();
  try {
    const verb = command === 'rebalance' ? 'rebalance' : argv[0];
    const p = parseMoverArgs(command === 'rebalance' ? argv : argv.slice(1));
    if (p.help || verb === undefined || verb === 'help') {
      process.stdout.write(usage(SYNOPSIS, { ...FLAGS, ...SWITCH_HELP }));
      return 0;
    }
    const log = createLogger(p.flags.logLevel);
    const tls = loadClientTls(p.flags);
    const adding = command === 'members' && verb === 'add' ? joiningClusters(p) : [];
    const removing = command === 'members' && verb === 'remove' ? member(p.positional[0], 'members remove needs a member N') : undefined;
    const c = await connectMetaCluster({ ...p.flags, tls, ...(adding.length > 0 ? { joining: adding.length } : {}), ...(removing !== undefined ? { removing } : {}) });
    try {
      if (adding.length > 0) return await membersAdd(c, adding.map((endpoints, i) => new EtcdClient({ name: `new member ${i}`, endpoints, tls, requestTimeoutMs: p.flags.requestTimeoutMs })), p, log);
      if (command === 'members' && verb === 'list') return await membersList(c, p);
      if (command === 'partitions' && verb === 'move') return await partitionsMove(c, p, log);
      if (command === 'members' && verb === 'drain') return await plannedCommand(c, p, log, (a, m) => planDrain(a, m, member(p.positional[0], 'members drain needs a member N')), 1);
      if (removing !== undefined) return await membersRemove(c, p, log, removing);
      if (command === 'rebalance') return await plannedCommand(c, p, log, planRebalance, 0);
      throw new Error(`unknown command ${JSON.stringify(`${command} ${verb}`)} (want partitions move, members add, members drain, members remove, members list or rebalance)`);
    } finally {
      c.close();
    }
  } catch (err) {
    process.stderr.write(`metaetcd ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

async function membersList(c: MetaCluster, p: Parsed): Promise<number> {
  if (p.positional.length > 0) throw new Error(`unexpected argument ${JSON.stringify(p.positional[0])}`);
  process.stdout.write(formatMembersList(await listMembers(c), p.flags.writeOut as 'table' | 'json'));
  return 0;
}

/** `members add`'s clusters, checked before connecting (a new cluster in --members would fail there, less clearly). */
function joiningClusters(p: Parsed): Endpoint[][] {
  if (p.positional.length === 0) throw new Error('members add needs the URLs of the clusters to add (URL[;URL...] per cluster)');
  const joining = p.positional.map(parseCluster);
  assertNotListed(parseClusters(p.flags.members), joining);
  return joining;
}

async function membersAdd(c: MetaCluster, joining: EtcdClient[], p: Parsed, log: Logger): Promise<number> {
  const dryRun = p.switches.has('dry-run');
  try {
    if (!dryRun) await assertNoProxyServing(c.coordinator);
    const running = await findMoveState(c.members);
    if (running) {
      throw new Error(
        `a partition move is in progress (${describeMove(running)}, phase ${running.phase}): finish it first ` +
          '(run `metaetcd rebalance` or the same `partitions move` again) or roll it back (`partitions move --rollback`)',
      );
    }
    const lines = await addMembers(c, { joining, dryRun, log });
    process.stdout.write(lines.map((l) => `${l}\n`).join(''));
    return 0;
  } finally {
    joining.forEach((j) => j.close());
  }
}

async function membersRemove(c: MetaCluster, p: Parsed, log: Logger, n: number): Promise<number> {
  if (p.positional.length > 1) throw new Error(`unexpected argument ${JSON.stringify(p.positional[1])}`);
  await removeMember(c, { member: n, dryRun: p.switches.has('dry-run'), log, print: (line) => process.stdout.write(line) });
  return 0;
}

async function partitionsMove(c: MetaCluster, p: Parsed, log: Logger): Promise<number> {
  if (p.switches.has('rollback')) {
    const s = await rollbackMove({ coordinator: c.coordinator, members: c.members, log });
    process.stdout.write(s ? `rolled back move ${s.id} (${describeMove(s)})\n` : 'no move is running\n');
    return 0;
  }
  const partitions = parsePartitionList(p.positional);
  if (partitions.length === 0) throw new Error('partitions move needs partitions (e.g. 3 7 10-15)');
  const to = member(p.flags.to, 'partitions move needs --to N');
  return plannedCommand(c, p, log, (a, m) => planMove(a, m, partitions, to), Infinity);
}

/** Finishes an interrupted move, plans, and runs (or with --dry-run prints) the plan. */
async function plannedCommand(c: MetaCluster, p: Parsed, log: Logger, plan: (assignment: number[], members: number) => PlannedMove[], positional: number): Promise<number> {
  if (p.positional.length > positional) throw new Error(`unexpected argument ${JSON.stringify(p.positional[positional])}`);
  const dryRun = p.switches.has('dry-run');
  const running = await findMoveState(c.members);
  if (running) {
    if (dryRun) process.stdout.write(`an interrupted move would be finished first: ${describeMove(running)} (phase ${running.phase})\n`);
    else await runOne(c, running, log);
  }
  const layout = newestLayout(await refreshStates(c));
  const moves = plan(layout.assignment, layout.members);
  if (dryRun) {
    process.stdout.write(describePlan(moves));
    return 0;
  }
  for (const m of moves) await runOne(c, m, log);
  if (moves.length === 0 && !running) process.stdout.write('nothing to move\n');
  return 0;
}

async function runOne(c: MetaCluster, m: PlannedMove, log: Logger): Promise<MoveResult> {
  process.stderr.write(`${describeMove(m)}\n`);
  const shown = progressPrinter(`copy to member ${m.to}`);
  const r = await movePartitions({ coordinator: c.coordinator, members: c.members, partitions: m.partitions, to: m.to, log, onProgress: shown.update });
  shown.done();
  process.stdout.write(
    `moved ${r.partitions.length} partitions from member ${r.from} to member ${r.to}${r.resumed ? ' (resumed)' : ''}: ` +
      `${r.keysCopied} keys copied, ${r.catchUpRounds} catch-up rounds, frozen ${r.freezeMs} ms\n`,
  );
  return r;
}

/** Copy progress on stderr like snapshot's (keys copied / total). */
function progressPrinter(what: string): { update: (p: MoveProgress) => void; done: () => void } {
  let bar: Progress | undefined;
  let shown = 0;
  return {
    update: (p) => {
      if (p.phase !== 'copy') return;
      if (p.done === 0) (bar = new Progress(what, p.total)), (shown = 0);
      bar?.add(p.done - shown);
      shown = p.done;
    },
    done: () => bar?.finish(`${what}: ${shown} keys copied`),
  };
}

function member(raw: string | undefined, missing: string): number {
  if (raw === undefined || raw === '') throw new Error(missing);
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`invalid member ${JSON.stringify(raw)}: want a member slot number`);
  return n;
}
