#!/usr/bin/env node
// Entry point for `npx metaetcd`: runs the compiled CLI (built by `npm ci` / `npm run build`).
import { main } from '../dist/cli.js';

main(process.argv.slice(2)).then(
  (code) => {
    if (typeof code === 'number') process.exitCode = code;
  },
  (err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  },
);
