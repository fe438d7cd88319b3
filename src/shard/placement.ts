// Placement rules: key prefixes pinned to chosen members (`metaetcd placement
// add PREFIX --to N`). They are part of the layout (`rules`), so every proxy
// routes them alike. A key under a rule's prefix lives on the rule's member
// whatever partition it hashes to; with nested rules the longest matching
// prefix wins. Every routing decision of the proxy and the mover goes through
// `route` (Router.memberOf and PartitionFilter both call it).

import { isFromKey, prefixEnd } from '../util/bytes.js';
import { partitionOf } from './hash.js';

/** One rule as stored in the layout: the prefix's bytes in base64 and the member slot. */
export interface PlacementRule {
  prefix: string;
  member: number;
}

/**
 * One applied rule change, kept in the layout's history like a partition move:
 * revisions before `doneAt` read as compacted (movedFloor), since a pinned key's
 * history before the change lies on another member. Pruned once compaction passes
 * `doneAt`.
 */
export interface PlacementChange {
  /** The layout generation that made the change. */
  generation: number;
  /** The rule's prefix (base64). */
  prefix: string;
  /** The member the rule pins the prefix to from this generation on; absent when the rule was removed. */
  member?: number;
  /** Clock revision once the copies left behind were removed (0 while they are not). */
  doneAt: number;
}

export const encodePrefix = (prefix: Buffer): string => prefix.toString('base64');
export const decodePrefix = (prefix: string): Buffer => Buffer.from(prefix, 'base64');

/** Whether `v` is a well-formed rule list for a layout of `members` members (no empty or repeated prefix). */
export function validRules(v: unknown, members: number): boolean {
  if (v === undefined) return true;
  if (!Array.isArray(v)) return false;
  const seen = new Set<string>();
  for (const r of v as Partial<PlacementRule>[]) {
    if (typeof r?.prefix !== 'string' || !Number.isInteger(r.member) || r.member! < 0 || r.member! >= members) return false;
    const bytes = decodePrefix(r.prefix);
    if (bytes.length === 0 || encodePrefix(bytes) !== r.prefix || seen.has(r.prefix)) return false;
    seen.add(r.prefix);
  }
  return true;
}

export function validPlacementChanges(v: unknown): boolean {
  if (v === undefined) return true;
  return (
    Array.isArray(v) &&
    (v as Partial<PlacementChange>[]).every(
      (e) => Number.isInteger(e?.generation) && typeof e.prefix === 'string' && (e.member === undefined || Number.isInteger(e.member)) && Number.isSafeInteger(e.doneAt),
    )
  );
}

interface CompiledRule {
  prefix: Buffer;
  /** First key past the prefix; undefined when no key is (a prefix of 0xff bytes). */
  end: Buffer | undefined;
  member: number;
  rule: PlacementRule;
}

/** Where a key lives: on a rule's member, or on its partition's owner. */
export type Route = { member: number; rule: PlacementRule; partition?: undefined } | { member: number; rule?: undefined; partition: number };

/** The rules of one layout, longest prefix first, ready for routing. */
export class PlacementRules {
  private readonly compiled: CompiledRule[];

  constructor(rules: readonly PlacementRule[] = []) {
    this.compiled = rules
      .map((r) => {
        const prefix = decodePrefix(r.prefix);
        if (prefix.length === 0) throw new Error('a placement rule needs a non-empty prefix');
        const end = prefixEnd(prefix);
        return { prefix, end: isFromKey(end) ? undefined : end, member: r.member, rule: r };
      })
      .sort((a, b) => b.prefix.length - a.prefix.length);
  }

  get size(): number {
    return this.compiled.length;
  }

  /** The rule whose prefix is the longest one `key` starts with. */
  match(key: Uint8Array): PlacementRule | undefined {
    for (const r of this.compiled) if (startsWith(key, r.prefix)) return r.rule;
    return undefined;
  }

  /**
   * The one member holding every key of the client range [key, rangeEnd), when a
   * rule's prefix covers the whole range and no nested rule inside it names
   * another member; undefined otherwise (the range may reach any member).
   */
  rangeMember(key: Buffer, rangeEnd: Buffer): number | undefined {
    if (this.compiled.length === 0) return undefined;
    const fromKey = isFromKey(rangeEnd);
    const covering = this.compiled.find((r) => startsWith(key, r.prefix) && (r.end === undefined || (!fromKey && Buffer.compare(rangeEnd, r.end) <= 0)));
    if (!covering) return undefined;
    for (const r of this.compiled) {
      // Only longer (nested) rules can win over the covering one inside the range.
      if (r.prefix.length <= covering.prefix.length || r.member === covering.member) continue;
      const startsBeforeEnd = fromKey || Buffer.compare(r.prefix, rangeEnd) < 0;
      const endsAfterStart = r.end === undefined || Buffer.compare(key, r.end) < 0;
      if (startsBeforeEnd && endsAfterStart) return undefined;
    }
    return covering.member;
  }
}

/** The one routing function: a rule's member (longest prefix) or else the owner of the key's partition. */
export function route(rules: PlacementRules, assignment: readonly number[], key: Uint8Array): Route {
  if (rules.size > 0) {
    const rule = rules.match(key);
    if (rule) return { member: rule.member, rule };
  }
  const partition = partitionOf(key, assignment.length);
  return { member: assignment[partition]!, partition };
}

function startsWith(key: Uint8Array, prefix: Buffer): boolean {
  if (key.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

/** The prefix as an operator typed it (UTF-8), or its base64 form when it is not valid UTF-8. */
export function showPrefix(prefix: string): string {
  const bytes = decodePrefix(prefix);
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes) ? text : `base64:${prefix}`;
}
