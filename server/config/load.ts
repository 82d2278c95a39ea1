import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { AgentProfileInput, agentProfileSchema, Config, configFileSchema, configSchema, lifetimeProblem, profileNameProblem, profileProblems } from './schema';

/** Environment variable → config key. Every one is documented in .env.example. */
export const ENV_KEYS = {
  HOST: 'host',
  PORT: 'port',
  DATA_DIR: 'dataDir',
  API_TOKEN: 'apiToken',
  CONFIG_FILE: 'configFile',
  ALLOWED_ROOTS: 'allowedRoots',
  ALLOWED_ORIGINS: 'allowedOrigins',
  MAX_CONCURRENT_SESSIONS: 'maxConcurrentSessions',
  MAX_CONNECTIONS: 'maxConnections',
  SESSION_TIMEOUT_HOURS: 'sessionTimeoutHours',
  SESSION_WARNING_HOURS: 'sessionWarningHours',
  IDLE_TIMEOUT_HOURS: 'idleTimeoutHours',
  MAX_MEMORY_PER_SESSION_MB: 'maxMemoryPerSessionMB',
  MAX_TOTAL_MEMORY_GB: 'maxTotalMemoryGB',
  CPU_USAGE_LIMIT_PERCENT: 'cpuUsageLimitPercent',
  CPU_SUSTAIN_SECONDS: 'cpuSustainSeconds',
  HEALTH_CHECK_INTERVAL_SECONDS: 'healthCheckIntervalSeconds',
  MAX_SESSION_HISTORY_MB: 'maxSessionHistoryMB',
  CHAT_WAIT_SECONDS: 'chatWaitSeconds',
  RETENTION_DAYS: 'retentionDays',
  LOG_LEVEL: 'logLevel',
} as const;

const KEY_TO_ENV = Object.fromEntries(Object.entries(ENV_KEYS).map(([env, key]) => [key, env]));

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

function describeIssues(error: z.ZodError, source: (key: string) => string): string[] {
  return error.issues.map((issue) => {
    if (issue.code === z.ZodIssueCode.unrecognized_keys && issue.path.length === 0) {
      return `${source('').trimEnd()}: unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')} (known: ${Object.keys(configFileSchema.shape).join(', ')})`;
    }
    const key = issue.path.length ? String(issue.path[0]) : '(root)';
    const rest = issue.path.slice(1).join('.');
    return `${source(key)}${rest ? '.' + rest : ''}: ${issue.message}`;
  });
}

/** The file's `agents` object as written, or null when it has none (or not an object). */
function fileAgentsOf(json: unknown): Record<string, unknown> | null {
  const agents = json !== null && typeof json === 'object' ? (json as { agents?: unknown }).agents : undefined;
  return agents !== null && typeof agents === 'object' && !Array.isArray(agents) ? (agents as Record<string, unknown>) : null;
}

/** The whole-profile problems (e.g. a missing command) of the file's `agents`, whatever else is wrong in the file. */
function profileProblemsOf(json: unknown): string[] {
  const agents = fileAgentsOf(json);
  if (!agents) return [];
  // Every profile that is an object, also one with a bad field (that field is named by the schema's own message):
  // its command and prompt pattern are checked when they are strings.
  const views = Object.entries(agents).flatMap(([name, p]) => {
    if (!p || typeof p !== 'object' || Array.isArray(p)) return [];
    if (agentProfileSchema.safeParse(p).success) return [[name, p]];
    const { command, promptPattern } = p as Record<string, unknown>;
    return [[name, { command: typeof command === 'string' ? command : command === undefined ? undefined : '-', promptPattern: typeof promptPattern === 'string' ? promptPattern : undefined }]];
  });
  return profileProblems(Object.fromEntries(views) as Record<string, AgentProfileInput>).map((p) => `CONFIG_FILE agents.${p.path.join('.')}: ${p.message}`);
}

/**
 * Profile names as the file wrote them. zod copies a record into a plain
 * object, where a key "__proto__" becomes the prototype and the profile is
 * gone before profileProblems could see it. (The names it does see come out
 * again there, in the same words; the list is de-duplicated.)
 */
function profileNameProblemsOf(json: unknown): string[] {
  const agents = fileAgentsOf(json);
  if (!agents) return [];
  return Object.keys(agents).flatMap((name) => {
    const problem = profileNameProblem(name);
    return problem ? [`CONFIG_FILE agents.${name}: ${problem}`] : [];
  });
}

function splitList(value: string | undefined, sep: string): string[] | undefined {
  if (value === undefined) return undefined;
  return value
    .split(sep)
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * Builds the frozen configuration from the environment and the optional
 * CONFIG_FILE. The environment wins where both set a value. Every problem is
 * reported at once in a ConfigError; nothing here exits the process.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  let file: z.infer<typeof configFileSchema> = {};
  const configFile = env.CONFIG_FILE;
  if (configFile) {
    try {
      const json: unknown = JSON.parse(readFileSync(configFile, 'utf8'));
      problems.push(...profileNameProblemsOf(json));
      const parsed = configFileSchema.safeParse(json);
      if (parsed.success) file = parsed.data;
      else {
        problems.push(...describeIssues(parsed.error, (k) => `CONFIG_FILE ${k}`));
        // The profiles' own checks would be skipped with the file refused as a whole: run them too, so every problem is named at once.
        problems.push(...profileProblemsOf(json));
      }
    } catch (err) {
      problems.push(`CONFIG_FILE: cannot read ${configFile}: ${(err as Error).message}`);
    }
  }

  const home = env.HOME || homedir();
  const raw: Record<string, unknown> = {};
  for (const [envKey, key] of Object.entries(ENV_KEYS)) {
    const value = env[envKey];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  raw.dataDir = raw.dataDir ?? join(home, '.agentd');
  raw.allowedRoots = splitList(env.ALLOWED_ROOTS, ':') ?? file.allowedRoots ?? [home];
  raw.allowedOrigins = splitList(env.ALLOWED_ORIGINS, ',') ?? file.allowedOrigins ?? [];
  raw.agents = file.agents ?? {};

  const result = configSchema.safeParse(raw);
  if (!result.success) {
    problems.push(...describeIssues(result.error, (k) => KEY_TO_ENV[k] ?? (k === 'agents' ? 'CONFIG_FILE agents' : k)));
    // zod skips whole-object checks when a field failed: run them on what we have, so every problem is named at once.
    const agents = (raw.agents ?? {}) as Record<string, AgentProfileInput>;
    for (const p of profileProblems(agents)) problems.push(`CONFIG_FILE agents.${p.path.join('.')}: ${p.message}`);
    const lifetime = lifetimeProblem(Number(raw.sessionTimeoutHours ?? 24), Number(raw.sessionWarningHours ?? 20));
    if (lifetime) problems.push(`SESSION_WARNING_HOURS: ${lifetime}`);
  }
  if (typeof raw.dataDir === 'string' && unexpanded(raw.dataDir)) problems.push(`DATA_DIR: ${raw.dataDir} ${NOT_EXPANDED}`);
  const rootsFrom = env.ALLOWED_ROOTS ? 'ALLOWED_ROOTS' : file.allowedRoots ? 'CONFIG_FILE allowedRoots' : 'ALLOWED_ROOTS';
  const roots: string[] = [];
  for (const root of (raw.allowedRoots as string[]) ?? []) {
    if (!isAbsolute(root)) {
      problems.push(`${rootsFrom}: ${root} ${unexpanded(root) ? NOT_EXPANDED : 'is not an absolute path'}`);
      continue;
    }
    if (!existsSync(root)) {
      problems.push(`${rootsFrom}: ${root} does not exist (create it first)`);
      continue;
    }
    roots.push(realpathSync(root));
  }
  if (problems.length || !result.success) throw new ConfigError([...new Set(problems)]);
  const config = result.data;

  return deepFreeze({ ...config, dataDir: resolve(config.dataDir), allowedRoots: roots });
}

const NOT_EXPANDED = 'is not expanded: agentd takes paths as given (env files and service managers do not expand ~ or $VARIABLES); give an absolute path';

/** A path a shell would have expanded (`~/x`, `$HOME/x`) but nothing did. */
function unexpanded(path: string): boolean {
  return path.startsWith('~') || path.startsWith('$');
}

/** The names this daemon answers to, for the Host check. */
export function ownHostNames(config: Config): Set<string> {
  const host = config.host.toLowerCase();
  return new Set(['localhost', '127.0.0.1', '[::1]', host, host.includes(':') ? `[${host}]` : host, hostname().toLowerCase()]);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** For tests: a valid config with overrides, no environment read. */
export function testConfig(overrides: Partial<Record<keyof Config, unknown>> & { dataDir: string; allowedRoots: string[] }): Config {
  const parsed = configSchema.parse({ allowedOrigins: [], logLevel: 'silent', ...overrides });
  return deepFreeze({ ...parsed, allowedRoots: parsed.allowedRoots.map((r) => realpathSync(r)) });
}
