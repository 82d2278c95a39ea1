import { setFlagsFromString } from 'node:v8';

let linearFallback = false;

/**
 * From now on, a regular expression that backtracks too much (V8's default
 * threshold: 50 000 backtracks) is run again by V8's linear-time engine, where
 * the pattern allows it (no backreferences or lookbehinds). Polynomial
 * patterns the star-height check lets through, like `.*.*.*x$`, then take
 * ~20 ms on a 512-character line instead of ~13 s. Process-wide and
 * idempotent; called before a profile's pattern is compiled.
 */
export function enableLinearFallback(): void {
  if (linearFallback) return;
  setFlagsFromString('--enable-experimental-regexp-engine-on-excessive-backtracks');
  linearFallback = true;
}

/**
 * A conservative test for regular expressions that can backtrack
 * exponentially (star height >= 2, as safe-regex checks): used on configured
 * `promptPattern`s, which run on the daemon's event loop against an agent's
 * output.
 */

/** A quantifier at `i` of a pattern: where it ends (lazy `?` included) and whether it can repeat its atom. */
function quantifierAt(source: string, i: number): { end: number; repeats: boolean } | null {
  let end: number;
  let repeats: boolean;
  if (source[i] === '*' || source[i] === '+' || source[i] === '?') {
    end = i + 1;
    repeats = source[i] !== '?';
  } else {
    // Without the u flag a "{" that does not form {n}, {n,} or {n,m} is a literal brace.
    const m = /^\{(\d+)(,(\d*))?\}/.exec(source.slice(i, i + 32));
    if (!m) return null;
    end = i + m[0].length;
    const max = m[2] === undefined ? Number(m[1]) : m[3] === '' ? Infinity : Number(m[3]);
    repeats = max > 1;
  }
  return { end: source[end] === '?' ? end + 1 : end, repeats };
}

/** Index just past the class opening at `i` ("[", with "\]" inside not closing it). */
function endOfClass(source: string, i: number): number {
  let j = i + 1;
  while (j < source.length && source[j] !== ']') j += source[j] === '\\' ? 2 : 1;
  return j + 1;
}

/** Index of a group's first atom, past "(", "(?:", "(?=", "(?!", "(?<=", "(?<!", "(?<name>" or "(?i:". */
function groupBodyStart(source: string, i: number): number {
  if (source[i + 1] !== '?') return i + 1;
  if (source[i + 2] === '<' && source[i + 3] !== '=' && source[i + 3] !== '!') return source.indexOf('>', i) + 1;
  let j = i + 2;
  while (j < source.length && !':=!'.includes(source[j])) j++;
  return j + 1;
}

/**
 * The first repeated group that holds a quantifier itself ("(a+)+", star
 * height 2), as written in `source`, or null. Such a pattern can backtrack
 * exponentially on a line that almost matches. A valid pattern (flags "m")
 * is assumed; overlapping alternatives ("(a|a)+") are not looked for.
 */
export function nestedQuantifier(source: string): string | null {
  const groups: Array<{ start: number; quantified: boolean }> = [{ start: 0, quantified: false }];
  let closed: { start: number; quantified: boolean } | null = null;
  let i = 0;
  while (i < source.length) {
    const c = source[i];
    const q = quantifierAt(source, i);
    if (q) {
      if (closed?.quantified && q.repeats) return source.slice(closed.start, q.end);
      groups[groups.length - 1].quantified = true;
      i = q.end;
    } else if (c === '(') {
      groups.push({ start: i, quantified: false });
      i = groupBodyStart(source, i);
    } else if (c === ')' && groups.length > 1) {
      const group = groups.pop()!;
      groups[groups.length - 1].quantified ||= group.quantified;
      closed = group;
      i++;
      continue;
    } else {
      i = c === '\\' ? i + 2 : c === '[' ? endOfClass(source, i) : i + 1;
    }
    closed = null;
  }
  return null;
}
