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

/** Problems of the configured profiles that the field schema cannot see. */
export function profileProblems(agents: Record<string, AgentProfileInput>): Array<{ path: string[]; message: string }> {
  const out: Array<{ path: string[]; message: string }> = [];
  for (const [name, p] of Object.entries(agents)) {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) out.push({ path: [name], message: 'a profile name may hold letters, digits, ".", "_" and "-" (at most 64)' });
    if (!(BUILT_IN_AGENTS as readonly string[]).includes(name) && !p.command) out.push({ path: [name, 'command'], message: 'is required for a new profile' });
    if (p.promptPattern !== undefined && !isValidRegExp(p.promptPattern)) out.push({ path: [name, 'promptPattern'], message: 'is not a valid regular expression' });
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
  .passthrough();

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
    allowedOrigins: z.array(z.string().min(1)),
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
