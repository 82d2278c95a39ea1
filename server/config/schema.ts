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
  });

export type Config = Readonly<z.infer<typeof configSchema>>;
