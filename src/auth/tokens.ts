// Passwords and tokens.
//
// Passwords: salted scrypt (node:crypto), never stored plain.
//
// Tokens: signed, not stored. A token is "<payload>.<signature>" (base64url),
// the payload naming the user, the user's password generation and an expiry, the
// signature an HMAC-SHA256 with the secret kept in the auth record. Every proxy
// over the same members reads the same secret, so a token issued by one proxy is
// valid at all of them. Deleting the user or changing its password makes its
// tokens invalid at once (the generation no longer matches); permissions are
// looked up on every call, never carried in the token.

import { createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import type { PasswordHash } from './state.js';

/** etcd's default TTL of a simple token; ours is fixed from the time of issue. */
export const TOKEN_TTL_MS = 5 * 60 * 1000;

const KEY_LEN = 32;

function scryptAsync(password: string, salt: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => scrypt(password, salt, KEY_LEN, (err, key) => (err ? reject(err) : resolve(key))));
}

export async function hashPassword(password: string): Promise<PasswordHash> {
  const salt = randomBytes(16);
  return { salt: salt.toString('hex'), hash: (await scryptAsync(password, salt)).toString('hex') };
}

export async function checkPassword(password: string, stored: PasswordHash): Promise<boolean> {
  const want = Buffer.from(stored.hash, 'hex');
  const got = await scryptAsync(password, Buffer.from(stored.salt, 'hex'));
  return got.length === want.length && timingSafeEqual(got, want);
}

export interface TokenClaims {
  user: string;
  generation: string;
  /** Expiry, ms since the epoch. */
  expires: number;
}

function sign(secret: string, payload: string): string {
  return createHmac('sha256', Buffer.from(secret, 'hex')).update(payload).digest('base64url');
}

export function issueToken(secret: string, user: string, generation: string, now = Date.now()): string {
  // A random nonce, so that two tokens are never equal (etcd's simple tokens are random too).
  const payload = Buffer.from(JSON.stringify({ u: user, g: generation, e: now + TOKEN_TTL_MS, n: randomBytes(6).toString('base64url') })).toString(
    'base64url',
  );
  return `${payload}.${sign(secret, payload)}`;
}

/** The claims of a token signed with `secret` and not expired, or undefined. */
export function verifyToken(secret: string, token: string, now = Date.now()): TokenClaims | undefined {
  const dot = token.indexOf('.');
  if (dot <= 0) return undefined;
  const payload = token.slice(0, dot);
  const sig = Buffer.from(token.slice(dot + 1), 'base64url');
  const want = Buffer.from(sign(secret, payload), 'base64url');
  if (sig.length !== want.length || !timingSafeEqual(sig, want)) return undefined;
  try {
    const c = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { u?: unknown; g?: unknown; e?: unknown };
    if (typeof c.u !== 'string' || typeof c.g !== 'string' || typeof c.e !== 'number' || c.e <= now) return undefined;
    return { user: c.u, generation: c.g, expires: c.e };
  } catch {
    return undefined;
  }
}
