// What a worker process runs: the `metaetcd` command with the primary's flags
// (it sees node:cluster's worker flag and serves as a worker).
import { main } from '../cli.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
