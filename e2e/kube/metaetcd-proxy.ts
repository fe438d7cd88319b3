// The metaetcd CLI from src/ (through tsx), as its own process: the Kubernetes
// end to end runs the proxy beside kube-apiserver the way an operator would,
// not inside the driver's event loop.
import { main } from '../../src/cli.js';

main(process.argv.slice(2)).then(
  (code) => {
    if (typeof code === 'number') process.exitCode = code;
  },
  (err) => {
    console.error(err instanceof Error ? err.stack : err);
    process.exitCode = 1;
  },
);
