import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { nestedQuantifier } from './regexSafety';

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
/**
 * Time settings have a ceiling: past it a date cannot be written (SESSION_TIMEOUT_HOURS=1e12 made every
 * session listing fail) or a timer overflows (Node runs a setInterval of more than 2^31 ms every 1 ms).
 */
const YEAR_HOURS = 8_760;
const DAY_SECONDS = 86_400;
const hours = (atLeast: z.ZodNumber) => atLeast.max(YEAR_HOURS, `must be at most ${YEAR_HOURS} (a year)`);
const seconds = (atLeast: z.ZodNumber) => atLeast.max(DAY_SECONDS, `must be at most ${DAY_SECONDS} (a day)`);
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

/** The warning must come before the end of a session's lifetime; null when it does (or either is not a number yet). */
export function lifetimeProblem(timeoutHours: number, warningHours: number): string | null {
  if (!Number.isFinite(timeoutHours) || !Number.isFinite(warningHours) || warningHours < timeoutHours) return null;
  return `must be less than SESSION_TIMEOUT_HOURS (${timeoutHours})`;
}

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
    maxConnections: int(1, 100_000).default(1000),
    sessionTimeoutHours: hours(positive).default(24),
    sessionWarningHours: hours(positive).default(20),
    idleTimeoutHours: hours(nonNegative).default(0),
    maxMemoryPerSessionMB: positive.default(500),
    maxTotalMemoryGB: positive.default(2),
    cpuUsageLimitPercent: positive.default(80),
    cpuSustainSeconds: seconds(nonNegative).default(60),
    healthCheckIntervalSeconds: seconds(positive).default(30),
    maxSessionHistoryMB: positive.default(50),
    chatWaitSeconds: seconds(nonNegative).default(120),
    retentionDays: nonNegative.max(36_500, 'must be at most 36500 (a century)').default(30),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    agents: z.record(agentProfileSchema).default({}),
  })
  .superRefine((c, ctx) => {
    const lifetime = lifetimeProblem(c.sessionTimeoutHours, c.sessionWarningHours);
    if (lifetime) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['sessionWarningHours'], message: lifetime });
    for (const problem of profileProblems(c.agents)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['agents', ...problem.path], message: problem.message });
    }
  });

export type Config = Readonly<z.infer<typeof configSchema>>;
