// The client's responses from the member responses of a landed write.
//
// Revisions: inside the member transaction that landed at member revision m,
// the member shows m for what this transaction wrote and a lower revision for
// what came before it. In meta terms the write is at R, so a member revision of
// m or above becomes R, one below becomes R - 1 (what etcd's atomic transaction
// shows for a read before its first write), and 0 stays 0. Pure: no I/O.

import { asDeleteRange, asPut, asRange, asTxn, headerRevision } from '../../proto/build.js';
import type { RangeRequest, RangeResponse, ResponseHeader, ResponseOp } from '../../proto/gen/rpc.js';
import { shapeRange } from '../range-shape.js';
import { toClientKv } from '../translate.js';
import type { WriteInput } from './member-ops.js';
import { walkTaken, type LeafRequest, type TakenVisitor } from './walk.js';
import { READ_AFTER, type PastRevisions } from './taken-ranges.js';

/** Maps a member revision `h` seen inside our member transaction at member revision m to meta terms. */
export function metaRevision(h: number, R: number, m: number): number {
  if (h === 0) return 0;
  return h >= m ? R : R - 1;
}

/** The header of a response inside a transaction's response. */
export function innerHeader(revision: number): ResponseHeader {
  return { clusterId: 0n, memberId: 0n, revision: BigInt(revision), raftTerm: 0n };
}

/** A range of a writing transaction that other members serve after the write, at `revision`, into `response`. */
export interface DeferredRead {
  request: RangeRequest;
  revision: number;
  response: RangeResponse;
}

export interface Translated {
  responses: ResponseOp[];
  /** Responses left empty, to be filled by reading other members (see readDeferred). */
  deferred: DeferredRead[];
}

/**
 * Translates `member` — the responses to the client ops in the slot the write
 * landed at, meta revision R, member revision m — into the client's responses.
 */
export function translateResponses(input: WriteInput, member: ResponseOp[], R: number, m: number): Translated {
  const t = new ResponseTranslator(input.plan.deferredReads, input.past, member, R, m);
  walkTaken(input.req, input.path, t);
  return { responses: t.out, deferred: t.deferred };
}

interface Level {
  member: ResponseOp[];
  out: ResponseOp[];
}

class ResponseTranslator implements TakenVisitor {
  readonly deferred: DeferredRead[] = [];
  readonly out: ResponseOp[] = [];
  /** The transaction being translated and the nested ones entered. */
  private readonly levels: Level[];

  constructor(
    private readonly deferredReads: Set<RangeRequest>,
    private readonly past: PastRevisions,
    member: ResponseOp[],
    private readonly R: number,
    private readonly m: number,
  ) {
    this.levels = [{ member, out: this.out }];
  }

  op(r: LeafRequest, index: number): void {
    const level = this.levels[this.levels.length - 1]!;
    const got = level.member[index];
    level.out.push(this.translate(r, got));
  }

  enter(_nested: unknown, _succeeded: boolean, index: number): void {
    const level = this.levels[this.levels.length - 1]!;
    this.levels.push({ member: asTxn(level.member[index]).responses, out: [] });
  }

  leave(_nested: unknown, succeeded: boolean): void {
    const inner = this.levels.pop()!;
    this.levels[this.levels.length - 1]!.out.push({ response: { $case: 'responseTxn', value: { header: innerHeader(0), succeeded, responses: inner.out } } });
  }

  private translate(r: LeafRequest, got: ResponseOp | undefined): ResponseOp {
    switch (r.$case) {
      case 'requestRange': {
        const range = asRange(got);
        const revision = this.meta(range);
        const header = innerHeader(revision);
        if (this.deferredReads.has(r.value)) {
          // etcd's range sees the writes before it in the transaction: at R after one, at R - 1 before any.
          const response: RangeResponse = { header, kvs: [], more: false, count: 0n };
          this.deferred.push({ request: r.value, revision, response });
          return { response: { $case: 'responseRange', value: response } };
        }
        if (r.value.revision > 0n && this.past.get(Number(r.value.revision)) === READ_AFTER) {
          // A past revision inside a write batch: read afterwards at that revision.
          const response: RangeResponse = { header, kvs: [], more: false, count: 0n };
          this.deferred.push({ request: r.value, revision: Number(r.value.revision), response });
          return { response: { $case: 'responseRange', value: response } };
        }
        const shaped = r.value.countOnly ? { kvs: [], more: false } : shapeRange(r.value, range.kvs.map(toClientKv));
        return { response: { $case: 'responseRange', value: { header, kvs: shaped.kvs, more: shaped.more, count: range.count } } };
      }
      case 'requestPut': {
        const put = asPut(got);
        return { response: { $case: 'responsePut', value: { header: innerHeader(this.meta(put)), prevKv: put.prevKv ? toClientKv(put.prevKv) : undefined } } };
      }
      case 'requestDeleteRange': {
        const del = asDeleteRange(got);
        return {
          response: {
            $case: 'responseDeleteRange',
            value: { header: innerHeader(this.meta(del)), deleted: del.deleted, prevKvs: del.prevKvs.map(toClientKv) },
          },
        };
      }
    }
  }

  private meta(resp: { header?: { revision: bigint } | undefined }): number {
    return metaRevision(headerRevision(resp), this.R, this.m);
  }
}
