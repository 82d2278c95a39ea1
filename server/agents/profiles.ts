import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { errors } from '../common/errors';
import { enableLinearFallback } from '../config/regexSafety';
import { AgentProfileInput } from '../config/schema';

/** Which built-in knowledge a profile carries (hooks, resume, turn detection). */
export type AgentKind = 'claude' | 'codex' | 'generic';

export interface AgentProfile {
  readonly name: string;
  readonly kind: AgentKind;
  /** Program name (looked up on PATH) or absolute path. */
  readonly command: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /** Used on revival, with `{agentSessionId}` substituted. */
  readonly resumeArgs?: readonly string[];
  readonly recapPrompt: string;
  /** Output quiet time that ends a turn for agents without hooks. */
  readonly idleMs: number;
  readonly promptPattern?: RegExp;
  /** A stored session's profile that is no longer configured: it lists, but cannot start. */
  readonly removed?: boolean;
}

/** Quiet time after which a turn of a hook-less agent is over: long enough for a REPL's echo and answer. */
const DEFAULT_IDLE_MS = 1_500;
const GENERIC_RECAP = 'In two or three sentences, recap what we have done so far in this session.';

const BUILT_INS: Record<string, AgentProfile> = {
  shell: {
    name: 'shell',
    kind: 'generic',
    command: process.env.SHELL && isAbsolute(process.env.SHELL) ? process.env.SHELL : 'bash',
    args: [],
    env: {},
    recapPrompt: 'history 20',
    idleMs: 500,
  },
  claude: {
    name: 'claude',
    kind: 'claude',
    command: 'claude',
    args: [],
    env: { DISABLE_AUTOUPDATER: '1' },
    recapPrompt: 'Briefly recap this session so far in two or three sentences: what was asked, what was done, what is pending. Do not use any tools.',
    idleMs: 2_000,
  },
  codex: {
    name: 'codex',
    kind: 'codex',
    command: 'codex',
    // The shared app-server daemon loses first prompts and copies 400 MB into $HOME (research note §5).
    args: ['--no-daemon'],
    env: {},
    recapPrompt: 'Briefly recap this session so far in two or three sentences: what was asked, what was done, what is pending. Do not run any commands.',
    idleMs: 2_000,
  },
};

function compilePattern(name: string, pattern: string | undefined): RegExp | undefined {
  if (pattern === undefined) return undefined;
  enableLinearFallback();
  try {
    return new RegExp(pattern, 'm');
  } catch (err) {
    throw new Error(`agents.${name}.promptPattern: ${(err as Error).message}`);
  }
}

/** Built-in profiles with the configured ones merged in (a configured built-in name overrides only its fields). */
export class AgentRegistry {
  private readonly profiles = new Map<string, AgentProfile>();

  constructor(configured: Readonly<Record<string, AgentProfileInput>> = {}) {
    for (const p of Object.values(BUILT_INS)) this.profiles.set(p.name, p);
    for (const [name, input] of Object.entries(configured)) {
      const base = BUILT_INS[name];
      // Validated with the rest of the configuration (config/schema.ts profileProblems); this guards direct use.
      if (!base && !input.command) throw new Error(`agents.${name}: "command" is required for a new profile`);
      this.profiles.set(name, {
        name,
        kind: base?.kind ?? 'generic',
        command: input.command ?? base!.command,
        args: input.args ?? base?.args ?? [],
        env: { ...(base?.env ?? {}), ...(input.env ?? {}) },
        resumeArgs: input.resumeArgs ?? base?.resumeArgs,
        recapPrompt: input.recapPrompt ?? base?.recapPrompt ?? GENERIC_RECAP,
        idleMs: input.idleMs ?? base?.idleMs ?? DEFAULT_IDLE_MS,
        promptPattern: compilePattern(name, input.promptPattern) ?? base?.promptPattern,
      });
    }
  }

  names(): string[] {
    return [...this.profiles.keys()];
  }

  /** The profile, or 400 invalid_request for an unknown name. */
  get(name: unknown): AgentProfile {
    if (name === undefined || name === null || name === '') throw errors.invalid(`agent is required; known agents: ${this.names().join(', ')}`);
    const profile = typeof name === 'string' ? this.profiles.get(name) : undefined;
    if (!profile) {
      throw errors.invalid(`unknown agent ${JSON.stringify(name)}; known agents: ${this.names().join(', ')}`);
    }
    return profile;
  }
}

/**
 * Finds the program of a profile: an absolute path must be executable; a bare
 * name is looked up on PATH. A missing program is 400 agent_unavailable with
 * human words, never a failed spawn.
 */
export function resolveCommand(profile: AgentProfile, envPath: string | undefined = process.env.PATH): string {
  const { command } = profile;
  if (profile.removed) throw errors.agentUnavailable(`${profile.name}: this profile is no longer in the configuration; add it back to start the session again`);
  if (command.includes('/')) {
    if (!isAbsolute(command)) {
      throw errors.agentUnavailable(`${profile.name}: command ${command} must be an absolute path or a bare program name`);
    }
    checkExecutable(profile.name, command);
    return command;
  }
  const dirs = (envPath ?? '').split(delimiter).filter(Boolean);
  for (const dir of dirs) {
    const candidate = join(dir, command);
    if (isExecutableFile(candidate)) return candidate;
  }
  throw errors.agentUnavailable(`${command} is not installed or not on PATH (looked in ${dirs.join(', ') || 'an empty PATH'})`);
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function checkExecutable(name: string, path: string): void {
  let isFile: boolean;
  try {
    isFile = statSync(path).isFile();
  } catch {
    throw errors.agentUnavailable(`${name}: ${path} is not installed (no such file)`);
  }
  if (!isFile || !isExecutableFile(path)) throw errors.agentUnavailable(`${name}: ${path} is not executable`);
}

/** Variables a child must not inherit: our secret, and terminal leftovers that would confuse it. */
const DROPPED_ENV = ['API_TOKEN', 'TMUX', 'TMUX_PANE', 'STY', 'COLUMNS', 'LINES', 'TERMCAP'];

/** The child's environment: the daemon's minus secrets and terminal leftovers, plus TERM and the profile's env. */
export function childEnv(base: NodeJS.ProcessEnv, profile: AgentProfile, extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) {
    if (v !== undefined && !DROPPED_ENV.includes(k) && !k.startsWith('AGENTD_')) env[k] = v;
  }
  env.TERM = 'xterm-256color';
  env.COLORTERM = env.COLORTERM ?? 'truecolor';
  Object.assign(env, profile.env, extra);
  return env;
}
