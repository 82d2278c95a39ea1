import { closeSync, openSync, readSync, realpathSync, renameSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import { AgentSignal, dialogOptions, digitKeys, PermissionOption, ScreenDialog } from './signals';

/**
 * What the daemon knows about Claude Code 2.1.197 in a PTY: its command line,
 * its hooks, where it keeps a conversation, and how its screens read.
 * Measured against the real binary; see /work/shared/research/real-clis.md.
 */

// ---------------------------------------------------------------------------
// Command line

export interface ClaudeArgsOptions {
  /** The conversation's uuid, chosen by the daemon before the first start. */
  agentSessionId: string;
  /** True when the session's agent is being restarted (revival). */
  revive: boolean;
  /** True when the transcript holds a conversation to resume (see `claudeTranscriptExists`). */
  transcriptExists: boolean;
  /** `JSON.stringify(claudeHookSettings(...))`. */
  hookSettingsJson: string;
}

/**
 * First start: `--session-id <uuid>`. Revival: `--resume <uuid>` when the
 * transcript holds a conversation, else `--session-id <uuid>` again (claude
 * writes the transcript only on the first prompt, and `--resume` of an id
 * without one exits with "No conversation found").
 */
export function claudeArgs(opts: ClaudeArgsOptions): string[] {
  const resume = opts.revive && opts.transcriptExists;
  return [resume ? '--resume' : '--session-id', opts.agentSessionId, '--settings', opts.hookSettingsJson];
}

// ---------------------------------------------------------------------------
// Hooks

/** The hook events the daemon listens to. StopFailure ends a turn that died on an API error (no Stop fires then). */
// UserPromptSubmit is left out on purpose: claude waits for a hook before it sends the prompt, which cost
// ~70 ms a turn (bench/chat.ts), and the daemon learns a turn started when it writes the prompt.
export const CLAUDE_HOOK_EVENTS = ['SessionStart', 'Stop', 'StopFailure', 'PermissionRequest', 'Notification', 'SessionEnd'] as const;
export type ClaudeHookEvent = (typeof CLAUDE_HOOK_EVENTS)[number];

/** Claude kills a hook after this many seconds; the relay gives up after ~2 s by itself, this is the backstop. */
const HOOK_TIMEOUT_SECONDS = 10;

/** Quotes one word for a POSIX shell: claude runs a hook's `command` through the shell. */
export function shellQuote(word: string): string {
  if (word.includes('\0')) throw new RangeError('a shell word cannot contain NUL');
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * The `--settings` object that registers `hookCommand` (argv, e.g.
 * `[process.execPath, '/abs/hook-relay.js']`) for every event the daemon
 * needs, with the event name appended as the last word. Claude passes the
 * hook's JSON on stdin.
 */
export function claudeHookSettings(hookCommand: string[]): { hooks: Record<ClaudeHookEvent, unknown[]> } {
  if (hookCommand.length === 0) throw new RangeError('hookCommand is empty');
  const hooks = {} as Record<ClaudeHookEvent, unknown[]>;
  for (const event of CLAUDE_HOOK_EVENTS) {
    const command = [...hookCommand, event].map(shellQuote).join(' ');
    hooks[event] = [{ hooks: [{ type: 'command', command, timeout: HOOK_TIMEOUT_SECONDS }] }];
  }
  return { hooks };
}

/** Payload fields the daemon reads; claude sends more (see real-clis.md §3 "Hooks"). */
interface ClaudeHookPayload {
  hook_event_name?: string;
  session_id?: string;
  source?: string;
  prompt?: string;
  last_assistant_message?: string;
  error?: unknown;
  error_details?: string;
  tool_name?: string;
  tool_input?: Record<string, unknown>;
  permission_suggestions?: Array<{ type?: string; directories?: string[]; rules?: Array<{ toolName?: string; ruleContent?: string }> }>;
  notification_type?: string;
  reason?: string;
}

/**
 * Maps one hook payload (the JSON claude gave the hook on stdin) to a signal,
 * or null for events the daemon does not act on (Notification other than
 * idle_prompt: the permission_prompt one comes ~6 s after PermissionRequest).
 * `event` is the name the relay was started with, used when the payload lacks one.
 */
export function parseClaudeHook(payload: unknown, event?: string): AgentSignal | null {
  if (!payload || typeof payload !== 'object') return null;
  const p = payload as ClaudeHookPayload;
  switch (p.hook_event_name ?? event) {
    case 'SessionStart':
      return { kind: 'ready', agentSessionId: p.session_id, source: p.source };
    case 'UserPromptSubmit':
      return { kind: 'turn-started', prompt: str(p.prompt) };
    case 'Stop':
      return { kind: 'turn-ended', text: str(p.last_assistant_message) };
    case 'StopFailure':
      return { kind: 'turn-ended', text: str(p.last_assistant_message), error: errorText(p) };
    case 'PermissionRequest':
      return { kind: 'permission', prompt: permissionPrompt(p), options: permissionOptions(p) };
    case 'Notification':
      return p.notification_type === 'idle_prompt' ? { kind: 'waiting' } : null;
    case 'SessionEnd':
      return { kind: 'ended', reason: p.reason };
    default:
      return null;
  }
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function errorText(p: ClaudeHookPayload): string {
  const e = typeof p.error === 'string' ? p.error : p.error ? JSON.stringify(p.error) : 'error';
  return p.error_details ? `${e}: ${p.error_details}` : e;
}

/** The question as the dialog words it: "Bash command\n  touch x\n  <description>\nDo you want to proceed?". */
function permissionPrompt(p: ClaudeHookPayload): string {
  const tool = str(p.tool_name) || 'Tool';
  const input = p.tool_input ?? {};
  const lines: string[] = [];
  if (tool === 'Bash') {
    lines.push('Bash command', `  ${str(input.command)}`);
    if (input.description) lines.push(`  ${str(input.description)}`);
  } else if (typeof input.file_path === 'string') {
    lines.push(`${tool} ${input.file_path}`);
  } else if (typeof input.url === 'string') {
    lines.push(`${tool} ${input.url}`);
  } else {
    lines.push(tool, `  ${JSON.stringify(input)}`);
  }
  lines.push('Do you want to proceed?');
  return lines.join('\n');
}

/**
 * The dialog's options. Claude shows three (Yes / Yes, and don't ask again… /
 * No) when it can offer a rule to remember, and only two (Yes / No) when it
 * cannot — then `permission_suggestions` is absent (seen for `echo $(whoami)
 * > f`, "Contains command_substitution"). "2" means No there, so the ids must
 * follow the dialog. Option 2's exact wording depends on the suggestion;
 * `parseClaudePermissionDialog` reads it from the screen.
 */
function permissionOptions(p: ClaudeHookPayload): PermissionOption[] {
  const suggestions = Array.isArray(p.permission_suggestions) ? p.permission_suggestions : [];
  if (suggestions.length === 0) {
    return [
      { id: '1', label: 'Yes' },
      { id: '2', label: 'No' },
    ];
  }
  return [
    { id: '1', label: 'Yes' },
    { id: '2', label: alwaysLabel(suggestions) },
    { id: '3', label: 'No' },
  ];
}

function alwaysLabel(suggestions: NonNullable<ClaudeHookPayload['permission_suggestions']>): string {
  const dirs = suggestions.find((s) => s.type === 'addDirectories' && s.directories?.length);
  if (dirs) return `Yes, and always allow access to ${dirs.directories!.map((d) => `${basename(d)}/`).join(', ')} from this project`;
  const rules = suggestions.find((s) => s.type === 'addRules' && s.rules?.length);
  if (rules) return `Yes, and don't ask again for: ${rules.rules!.map((r) => r.ruleContent ?? r.toolName).join(' and ')}`;
  return "Yes, and don't ask again";
}

/** The keys that answer claude's permission dialog: the option's digit alone, no Enter. */
export function claudePermissionKeys(optionId: string): string {
  return digitKeys(optionId);
}

// ---------------------------------------------------------------------------
// Screen

const DIALOG_FOOTER = /Esc to cancel/;
const DIALOG_QUESTION = /^\s*Do you want to /;
const RULE = /^\s*─{10,}\s*$/;
/** What claude prints under the tool call when a permission is denied (option "No") or Esc interrupts the turn. */
export const CLAUDE_INTERRUPTED_TEXT = 'Interrupted · What should Claude do instead?';

/**
 * The permission dialog as drawn: from the rule above it to "Esc to cancel",
 * or null when none is on screen. `screenText` is the visible screen, one
 * line per row (e.g. from @xterm/headless `translateToString(true)`).
 */
export function parseClaudePermissionDialog(screenText: string): ScreenDialog | null {
  const lines = screenText.split('\n');
  const found = dialogOptions(lines, DIALOG_FOOTER);
  if (!found) return null;
  const { options, firstLine } = found;
  let top = firstLine - 1;
  while (top > 0 && !RULE.test(lines[top - 1]) && firstLine - top < 20) top--;
  const promptLines = lines.slice(top, firstLine).map((l) => l.trimEnd()).filter((l) => l.trim() !== '');
  if (!promptLines.some((l) => DIALOG_QUESTION.test(l))) return null;
  return { prompt: promptLines.map((l) => l.replace(/^ /, '')).join('\n'), options };
}

/**
 * True when the current turn ended with "Interrupted · What should Claude do
 * instead?": after "No" in a permission dialog (no Stop hook fires then) or
 * after Esc. Only the part of the screen after the last echoed prompt
 * (`❯ text` above the input box) counts, so an earlier turn's interruption
 * still on screen does not.
 */
export function claudeTurnInterrupted(screenText: string): boolean {
  const lines = screenText.split('\n');
  const box = inputBoxTop(lines);
  const end = box < 0 ? lines.length : box;
  let start = 0;
  for (let i = end - 1; i >= 0; i--) {
    if (/^❯ \S/.test(lines[i])) {
      start = i + 1;
      break;
    }
  }
  for (let i = start; i < end; i++) if (lines[i].includes(CLAUDE_INTERRUPTED_TEXT)) return true;
  return false;
}

/** Index of the rule above claude's input box (rule, `❯ …`, rule), or -1. */
function inputBoxTop(lines: string[]): number {
  for (let i = lines.length - 1; i >= 2; i--) {
    if (RULE.test(lines[i]) && lines[i - 1].startsWith('❯') && RULE.test(lines[i - 2])) return i - 2;
  }
  return -1;
}

// ---------------------------------------------------------------------------
// Where the conversation lives

/** `CLAUDE_CONFIG_DIR` when set, else `$HOME/.claude` (transcripts are under `<dir>/projects/`). */
export function claudeConfigDir(env: Record<string, string | undefined>): string {
  if (env.CLAUDE_CONFIG_DIR) return env.CLAUDE_CONFIG_DIR;
  return join(env.HOME || homedir(), '.claude');
}

/** Claude's limit on a project folder name, past which it truncates and appends a hash. */
const SLUG_MAX = 200;

/**
 * The folder name claude gives a project: every character other than
 * [A-Za-z0-9] becomes '-' (so '/', '.', '_', ' ' and each UTF-16 unit of
 * 'ü' too); past 200 characters it keeps the first 200 and appends '-' and
 * the base-36 absolute value of a 32-bit string hash of the path. Checked
 * against 2.1.197 for `/tmp/x/my.proj_dir`, `/tmp/x/we ird/ü_x.y` and a
 * 270-character path.
 */
export function claudeProjectSlug(cwd: string): string {
  const slug = cwd.replace(/[^a-zA-Z0-9]/g, '-');
  if (slug.length <= SLUG_MAX) return slug;
  return `${slug.slice(0, SLUG_MAX)}-${Math.abs(javaStringHash(cwd)).toString(36)}`;
}

function javaStringHash(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = ((h << 5) - h + s.charCodeAt(i)) | 0;
  return h;
}

/**
 * Where claude keeps the conversation `uuid` run in `cwd`. Claude uses the
 * real path of its cwd (symlinks resolved); pass that, or use
 * `claudeTranscriptExists`, which resolves it.
 */
export function claudeTranscriptPath(configDir: string, cwd: string, uuid: string): string {
  return join(configDir, 'projects', claudeProjectSlug(cwd), `${uuid}.jsonl`);
}

/**
 * `missing`: no file. `empty`: a file without a conversation — claude
 * writes `mode`/`permission-mode`/`ai-title` records at once but the first
 * `user`/`assistant` records ~0.1 s after the first Stop hook, so a SIGKILL
 * in that window leaves a stub that makes both `--resume` ("No conversation
 * found") and `--session-id` ("already in use") fail. `conversation`:
 * resumable.
 */
export type ClaudeTranscriptState = 'missing' | 'empty' | 'conversation';

const USER_RECORD = Buffer.from('"type":"user"');
const READ_CHUNK = 64 * 1024;

export function claudeTranscriptState(path: string): ClaudeTranscriptState {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return 'missing';
  }
  try {
    // Stream it: transcripts grow to many MB, and a user record is usually near the start.
    const buf = Buffer.alloc(READ_CHUNK + USER_RECORD.length);
    let carry = 0;
    for (;;) {
      const n = readSync(fd, buf, carry, READ_CHUNK, null);
      if (n <= 0) return 'empty';
      const end = carry + n;
      if (buf.subarray(0, end).includes(USER_RECORD)) return 'conversation';
      carry = Math.min(USER_RECORD.length - 1, end);
      buf.copy(buf, 0, end - carry, end);
    }
  } finally {
    closeSync(fd);
  }
}

function realCwd(cwd: string): string {
  try {
    return realpathSync(cwd);
  } catch {
    // The folder is gone; claude would not start there anyway. Use the path as given.
    return cwd;
  }
}

/** True when the conversation `uuid` run in `cwd` has a transcript with a conversation in it, i.e. `--resume` will work. */
export function claudeTranscriptExists(configDir: string, cwd: string, uuid: string): boolean {
  return claudeTranscriptState(claudeTranscriptPath(configDir, realCwd(cwd), uuid)) === 'conversation';
}

/**
 * Before reviving: decides `--resume` or `--session-id`, and moves a stub
 * transcript (see `ClaudeTranscriptState`) aside to `<file>.stub-<time>` so
 * that `--session-id` can start over. Returns what `claudeArgs` needs.
 */
export function prepareClaudeRevival(configDir: string, cwd: string, uuid: string, now = Date.now()): { transcriptExists: boolean; setAside?: string } {
  const path = claudeTranscriptPath(configDir, realCwd(cwd), uuid);
  const state = claudeTranscriptState(path);
  if (state !== 'empty') return { transcriptExists: state === 'conversation' };
  const setAside = `${path}.stub-${now}`;
  renameSync(path, setAside);
  return { transcriptExists: false, setAside };
}
