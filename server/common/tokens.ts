import { createHash, timingSafeEqual } from 'node:crypto';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Compares secrets in constant time over fixed-length digests, whatever the lengths. */
export function tokenMatches(expected: string, given: unknown): boolean {
  if (typeof given !== 'string' || given.length === 0 || given.length > 4096) return false;
  return timingSafeEqual(digest(expected), digest(given));
}
