import type { ResponseOp } from '../../proto/gen/rpc.js';

/** A transaction's outcome; `revision` is the meta revision for the response header. */
export interface TxnOutcome {
  revision: number;
  succeeded: boolean;
  responses: ResponseOp[];
}
