import { isAbsolute } from 'node:path';
import { z } from 'zod';

/** An agent profile as it may appear in CONFIG_FILE (all optional for overrides of built-ins). */
export const agentProfileSchema = z
  .object({
    command: z.string().min(1).optional(),
    args: z.array(z.string()).optional(),
    env: z.record(z.string()).optional(),
    resumeArgs: z.array(z.string()).optional(),
    recapPrompt: z.string().min(1).optional(),
    idleMs: z.number().int().positive().max(600_000).optional(),
    promptPattern: z.string().optional(),
  })
  .strict();

export type AgentProfileInput = z.infer<typeof agentProfileSchema>;

/** Profiles every daemon has; a configured profile of the same name overrides only the fields it gives. */
export const BUILT_IN_AGENTS = ['claude', 'codex', 'shell'] as const;

function isValidRegExp(pattern: string): boolean {
  try {
    new RegExp(pattern, 'm');
    return true;
  } catch {
    return false;
  }
}

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

function promptPatternProblem(pattern: string): string | undefined {
  if (!isValidRegExp(pattern)) return 'is not a valid regular expression';
  const nested = nestedQuantifier(pattern);
  if (nested) return `${JSON.stringify(nested)} repeats a group that holds a quantifier itself: nested quantifiers can take exponential time on an agent's output`;
  return undefined;
}

/**
 * Names that clash with JavaScript objects' own machinery: zod copies a record
 * key "__proto__" into the prototype (the profile silently vanishes), a lookup
 * of "constructor" among the built-ins finds Object, and "prototype" is
 * refused with them rather than trusted to every future lookup.
 */
const RESERVED_PROFILE_NAMES = ['__proto__', 'constructor', 'prototype'];

/** What is wrong with a profile name, or undefined. */
export function profileNameProblem(name: string): string | undefined {
  if (RESERVED_PROFILE_NAMES.includes(name)) return `cannot name a profile (${RESERVED_PROFILE_NAMES.join(', ')} are reserved in JavaScript objects)`;
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) return 'a profile name may hold letters, digits, ".", "_" and "-" (at most 64)';
  return undefined;
}

/** Problems of the configured profiles that the field schema cannot see. */
export function profileProblems(agents: Record<string, AgentProfileInput>): Array<{ path: string[]; message: string }> {
  const out: Array<{ path: string[]; message: string }> = [];
  for (const [name, p] of Object.entries(agents)) {
    const nameProblem = profileNameProblem(name);
    if (nameProblem) out.push({ path: [name], message: nameProblem });
    if (!(BUILT_IN_AGENTS as readonly string[]).includes(name) && !p.command) out.push({ path: [name, 'command'], message: 'is required for a new profile' });
    // The same words as resolveCommand's at session create, which keeps its check for profiles built without this schema.
    if (p.command?.includes('/') && !isAbsolute(p.command)) out.push({ path: [name, 'command'], message: `${p.command} must be an absolute path or a bare program name` });
    const patternProblem = p.promptPattern === undefined ? undefined : promptPatternProblem(p.promptPattern);
    if (patternProblem) out.push({ path: [name, 'promptPattern'], message: patternProblem });
  }
  return out;
}

export const configFileSchema = z
  .object({
    agents: z.record(agentProfileSchema).optional(),
    allowedRoots: z.array(z.string().min(1)).optional(),
    allowedOrigins: z.array(z.string().min(1)).optional(),
    notifier: z.record(z.unknown()).optional(),
  })
  // A misspelt key (`allowedRoot`) would otherwise leave its default in force unnoticed (e.g. all of $HOME).
  .strict();

/** An exact browser Origin: http(s), host, optional port, no path, query or trailing slash. */
function isOrigin(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.origin === value;
  } catch {
    return false;
  }
}

const positive = z.coerce.number().positive();
const nonNegative = z.coerce.number().min(0);
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const configSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: int(0, 65535).default(3000),
    dataDir: z.string().min(1),
    apiToken: z.string().min(16, 'must be at least 16 characters').optional(),
    configFile: z.string().optional(),
    allowedRoots: z.array(z.string().min(1)).min(1),
    allowedOrigins: z.array(z.string().refine(isOrigin, (o) => ({ message: `${o} is not an origin: scheme://host[:port], nothing after it (it could never match a browser's Origin header)` }))),
    maxConcurrentSessions: int(1, 10_000).default(10),
    sessionTimeoutHours: positive.default(24),
    sessionWarningHours: positive.default(20),
    idleTimeoutHours: nonNegative.default(0),
    maxMemoryPerSessionMB: positive.default(500),
    maxTotalMemoryGB: positive.default(2),
    cpuUsageLimitPercent: positive.default(80),
    cpuSustainSeconds: nonNegative.default(60),
    healthCheckIntervalSeconds: positive.default(30),
    maxSessionHistoryMB: positive.default(50),
    chatWaitSeconds: nonNegative.default(120),
    retentionDays: nonNegative.default(30),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    agents: z.record(agentProfileSchema).default({}),
  })
  .superRefine((c, ctx) => {
    if (c.sessionWarningHours >= c.sessionTimeoutHours) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['sessionWarningHours'],
        message: `must be less than SESSION_TIMEOUT_HOURS (${c.sessionTimeoutHours})`,
      });
    }
    for (const problem of profileProblems(c.agents)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['agents', ...problem.path], message: problem.message });
    }
  });

export type Config = Readonly<z.infer<typeof configSchema>>;
