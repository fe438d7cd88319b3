// Turns a failure of a call to a member or coordinator etcd into what the rest
// of the proxy handles: an EtcdError with a kind. etcd's own statuses keep their
// code and message (so clients see exactly what etcd said); their kind comes
// from etcd's message, which is how etcd itself tells its errors apart on the
// wire (clientv3's rpctypes does the same). Transport failures become
// Unavailable (or a timeout) naming the cluster. This is done once, where the
// answer arrives (EtcdClient), never again by callers.

import { EtcdError, isServiceError, KIND_OF_ETCD_MESSAGE, Status, unavailable } from '../errors/etcd-error.js';

/** `cluster` names who answered, e.g. "member 2" or "coordinator". */
export function upstreamError(err: unknown, cluster: string): EtcdError {
  if (err instanceof EtcdError) return err;
  if (isServiceError(err)) {
    if (err.details.startsWith('etcdserver:')) {
      const kind = KIND_OF_ETCD_MESSAGE.get(err.details) ?? (err.code === Status.UNAVAILABLE ? 'unavailable' : 'etcd');
      return new EtcdError(err.code, err.details, kind);
    }
    if (err.code === Status.DEADLINE_EXCEEDED || err.code === Status.UNAVAILABLE) {
      const e = unavailable(`${cluster} is unavailable: ${err.details}`);
      return err.code === Status.DEADLINE_EXCEEDED ? new EtcdError(e.code, e.message, 'timeout') : e;
    }
    return new EtcdError(err.code, `metaetcd: ${cluster}: ${err.details}`, 'etcd');
  }
  return new EtcdError(Status.INTERNAL, `metaetcd: ${cluster}: ${err instanceof Error ? err.message : String(err)}`, 'internal');
}
