import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { dialogOptions, digitKeys, ScreenDialog } from './signals';

/**
 * What the daemon knows about Codex 0.169.0 in a PTY: its command line, its
 * OSC 7501 state reports, its notify program, where it keeps a thread, and
 * its approval dialog. Measured against the real binary; see
 * /work/shared/research/real-clis.md.
 */

// ---------------------------------------------------------------------------
// Command line

/**
 * A TOML basic string. JSON's escapes (\" \\ \n \uXXXX …) are all TOML
 * escapes too; TOML also wants DEL escaped and has no lone surrogates.
 */
export function tomlString(value: string): string {
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(value)) {
    throw new RangeError('a TOML string cannot hold a lone surrogate');
  }
  return JSON.stringify(value).replace(/\x7f/g, '\\u007f');
}

export function tomlStringArray(values: string[]): string {
  return `[${values.map(tomlString).join(', ')}]`;
}

export interface CodexArgsOptions {
  /** The thread to resume; codex reports it only after the first turn (notify, rollout file name). */
  threadId?: string | null;
  /** True when restarting a session's agent. Without a thread id it starts fresh. */
  revive: boolean;
  /** argv codex runs after each turn, with the notify JSON appended as the last argument. */
  notifyCommand: string[];
}

/**
 * `--no-daemon` (the default shared daemon loses the first prompt in a fresh
 * CODEX_HOME and outlives the session), `-c notify=[…]`, and for a revival
 * `resume <thread id>` after the options.
 */
export function codexArgs(opts: CodexArgsOptions): string[] {
  if (opts.notifyCommand.length === 0) throw new RangeError('notifyCommand is empty');
  const args = ['--no-daemon', '-c', `notify=${tomlStringArray(opts.notifyCommand)}`];
  if (opts.revive && opts.threadId) args.push('resume', opts.threadId);
  return args;
}

// ---------------------------------------------------------------------------
// OSC 7501: ESC ] 7501 ; state=<s>:app=codex[:kind=<k>] ESC \

export type CodexState = 'working' | 'idle' | 'done' | 'blocked';

export interface Osc7501Report {
  state: CodexState;
  /** For `blocked`: what codex waits for (`permission` for an approval dialog). */
  kind?: string;
}

const OSC_PREFIX = Buffer.from('\x1b]7501;');
const ESC = 0x1b;
const BEL = 0x07;
/** A report is ~45 bytes; anything longer without a terminator is not one, so stop buffering it. */
const MAX_REPORT_BYTES = 256;
const STATES = new Set<string>(['working', 'idle', 'done', 'blocked']);
const NONE: readonly Osc7501Report[] = Object.freeze([]);

/**
 * Finds codex's OSC 7501 state reports in raw PTY output. Feed it every
 * chunk in order; it returns the reports completed by that chunk. A report
 * split across chunks is held until its terminator (ESC \, or BEL) arrives.
 * On the hot path — a chunk with no report and no partial one — it costs one
 * `indexOf` and a look at the last few bytes, and allocates nothing.
 */
export class Osc7501Parser {
  private pending: Buffer | null = null;

  feed(chunk: Buffer): readonly Osc7501Report[] {
    let data = chunk;
    if (this.pending) {
      data = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    let at = data.indexOf(OSC_PREFIX);
    if (at < 0) {
      this.holdPartialPrefix(data);
      return NONE;
    }
    const out: Osc7501Report[] = [];
    while (at >= 0) {
      const body = at + OSC_PREFIX.length;
      const end = terminator(data, body);
      if (end < 0) {
        if (data.length - at <= MAX_REPORT_BYTES) this.pending = Buffer.from(data.subarray(at));
        return out;
      }
      const report = parseReport(data.toString('latin1', body, end));
      if (report) out.push(report);
      at = data.indexOf(OSC_PREFIX, end);
    }
    this.holdPartialPrefix(data);
    return out;
  }

  /** Keeps a chunk's tail when it is the start of the prefix (e.g. ends in `ESC ] 75`). */
  private holdPartialPrefix(data: Buffer): void {
    // The prefix holds one ESC, at its start: only the last ESC of the tail can begin a partial one.
    for (let i = data.length - 1; i >= Math.max(0, data.length - (OSC_PREFIX.length - 1)); i--) {
      if (data[i] !== ESC) continue;
      const tail = data.subarray(i);
      if (OSC_PREFIX.subarray(0, tail.length).equals(tail)) this.pending = Buffer.from(tail);
      return;
    }
  }
}

/**
 * Index of the byte that ends the report body, or -1 while incomplete. The
 * ESC of the ESC \ terminator is enough: the body is whole by then, and the
 * `\` that follows in the next chunk is plain output.
 */
function terminator(data: Buffer, from: number): number {
  for (let i = from; i < data.length; i++) {
    const b = data[i];
    if (b === ESC || b === BEL) return i;
  }
  return -1;
}

/** `state=blocked:app=codex:kind=permission` → {state, kind}; null for other apps or unknown states. */
export function parseReport(body: string): Osc7501Report | null {
  const fields = new Map<string, string>();
  for (const part of body.split(':')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const state = fields.get('state');
  const app = fields.get('app');
  if (!state || !STATES.has(state) || (app !== undefined && app !== 'codex')) return null;
  const kind = fields.get('kind');
  return kind ? { state: state as CodexState, kind } : { state: state as CodexState };
}

/**
 * How a turn ends, from two consecutive reports: `done` after working is a
 * completed turn (codex reports `idle` ~0.5 s later); `idle` straight after
 * `working` or `blocked` is an interrupted one (approval declined — the
 * screen says "Conversation interrupted" — or Esc). Null otherwise.
 */
export function codexTurnEnd(previous: CodexState | null, next: CodexState): 'completed' | 'interrupted' | null {
  if (next === 'done') return 'completed';
  if (next === 'idle' && (previous === 'working' || previous === 'blocked')) return 'interrupted';
  return null;
}

/** What codex prints, as a "■ …" line under the prompt, when a turn fails or is interrupted. */
const ERROR_LINE = /^■ (.*)$/;
const WORKING_LINE = /esc to interrupt/;

/**
 * The error that ended the current turn, read from the screen, or null.
 * Needed because after an API error (e.g. an HTTP 400) codex 0.169 prints
 * "■ {"error":…}" and shows its composer again but reports no OSC 7501
 * `idle`/`done`: the state stays `working` until the next keystroke. A daemon
 * whose codex turn is still `working` can end it as failed when this returns
 * text. Only the part after the last echoed prompt counts (the last `› ` line
 * is the composer, the one before it the prompt), and never while codex shows
 * "esc to interrupt". Also true for "■ Conversation interrupted …" (then OSC
 * 7501 does report `idle`).
 */
export function codexTurnError(screenText: string): string | null {
  const lines = screenText.split('\n');
  if (lines.some((l) => WORKING_LINE.test(l))) return null;
  const prompts: number[] = [];
  for (let i = 0; i < lines.length; i++) if (lines[i].startsWith('› ')) prompts.push(i);
  if (prompts.length < 2) return null;
  const [from, to] = [prompts[prompts.length - 2], prompts[prompts.length - 1]];
  for (let i = to - 1; i > from; i--) {
    const m = ERROR_LINE.exec(lines[i].trimEnd());
    if (m) return m[1];
  }
  return null;
}

// ---------------------------------------------------------------------------
// notify

/** The TUI's title side-thread starts its only prompt with this. */
export const CODEX_TITLE_PROMPT_PREFIX = 'Generate a concise, single-line task title';

export interface CodexNotify {
  threadId: string;
  turnId?: string;
  /** `last-assistant-message`: the turn's answer. */
  text: string;
  /** `input-messages`: every user prompt of the thread so far. */
  inputMessages: string[];
  /** Always false in a returned value; title side-thread reports are filtered out (see `parseCodexNotify`). */
  isTitleThread?: boolean;
}

/**
 * Reads one notify argument (`{"type":"agent-turn-complete","thread-id",
 * "turn-id","cwd","client","input-messages":[…],"last-assistant-message"}`)
 * and keeps it only when it belongs to the session's own thread.
 *
 * Codex also notifies for the TUI's title side-thread (one per prompt, before
 * or after the main one). They differ in three ways; this uses the first two:
 * the title thread's only input message starts with "Generate a concise,
 * single-line task title"; its thread id differs from the main thread's
 * (once `knownThreadId` is set, the id alone decides); and it writes no
 * rollout file. Before the thread id is known (the first turn), the first
 * notify that is not title-shaped names it.
 */
export function parseCodexNotify(json: string, knownThreadId: string | null | undefined): CodexNotify | null {
  let msg: any;
  try {
    msg = JSON.parse(json);
  } catch {
    return null;
  }
  if (!msg || msg.type !== 'agent-turn-complete' || typeof msg['thread-id'] !== 'string') return null;
  const inputMessages: string[] = Array.isArray(msg['input-messages']) ? msg['input-messages'].filter((m: unknown) => typeof m === 'string') : [];
  const threadId: string = msg['thread-id'];
  // Once the thread is known its id decides alone (a user may well type the title wording).
  if (knownThreadId ? threadId !== knownThreadId : isTitleThread(inputMessages)) return null;
  return {
    threadId,
    turnId: typeof msg['turn-id'] === 'string' ? msg['turn-id'] : undefined,
    text: typeof msg['last-assistant-message'] === 'string' ? msg['last-assistant-message'] : '',
    inputMessages,
    isTitleThread: false,
  };
}

function isTitleThread(inputMessages: string[]): boolean {
  return inputMessages.length === 1 && inputMessages[0].startsWith(CODEX_TITLE_PROMPT_PREFIX);
}

// ---------------------------------------------------------------------------
// Where the thread lives

const THREAD_ID = /^[0-9A-Za-z-]{8,64}$/;

/**
 * The rollout file of `threadId`: `<codexHome>/sessions/YYYY/MM/DD/
 * rollout-<local time>-<thread id>.jsonl`, or null. The title side-thread
 * has none, so this also tells a main thread from a title one.
 */
export function codexRolloutPath(codexHome: string, threadId: string): string | null {
  if (!THREAD_ID.test(threadId)) return null;
  const suffix = `-${threadId}.jsonl`;
  const root = join(codexHome, 'sessions');
  // Newest first: a thread being revived is usually recent.
  for (const year of listDesc(root)) {
    for (const month of listDesc(join(root, year))) {
      for (const day of listDesc(join(root, year, month))) {
        const dir = join(root, year, month, day);
        const file = listDesc(dir).find((f) => f.startsWith('rollout-') && f.endsWith(suffix));
        if (file) return join(dir, file);
      }
    }
  }
  return null;
}

export function codexRolloutExists(codexHome: string, threadId: string): boolean {
  return codexRolloutPath(codexHome, threadId) !== null;
}

function listDesc(dir: string): string[] {
  try {
    return readdirSync(dir).sort().reverse();
  } catch {
    // No such folder yet (no thread ever saved): nothing to find there.
    return [];
  }
}

// ---------------------------------------------------------------------------
// Approval dialog

const APPROVAL_FOOTER = /Press enter to confirm or esc to cancel/;
const APPROVAL_QUESTION = /^\s*(Would you like to|Do you want to|Allow )/;
/** The shortcut codex prints after each option: "(y)", "(p)", "(esc)". */
const SHORTCUT = /\s*\((?:[a-z]|esc)\)$/;

/**
 * The approval dialog as drawn ("Would you like to run the following
 * command? / Environment: local / Reason: … / $ cmd / › 1. Yes, proceed (y)
 * / 2. Yes, and don't ask again for commands that start with `…` (p) / 3. No,
 * and tell Codex what to do differently (esc) / Press enter to confirm or esc
 * to cancel"), with the shortcut hints taken off the labels; null when none
 * is on screen. Codex draws it ~0.95 s after reporting `blocked`, and a key
 * written before that is lost: answer only once this returns a dialog.
 */
export function parseCodexApproval(screenText: string): ScreenDialog | null {
  const lines = screenText.split('\n');
  const found = dialogOptions(lines, APPROVAL_FOOTER);
  if (!found) return null;
  const { options, firstLine } = found;
  let top = firstLine - 1;
  while (top >= 0 && !APPROVAL_QUESTION.test(lines[top]) && firstLine - top < 20) top--;
  if (top < 0 || !APPROVAL_QUESTION.test(lines[top])) return null;
  const prompt = lines
    .slice(top, firstLine)
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .join('\n');
  return { prompt, options: options.map((o) => ({ id: o.id, label: o.label.replace(SHORTCUT, '') })) };
}

/** The keys that answer codex's approval dialog: the option's digit alone, no Enter. */
export function codexPermissionKeys(optionId: string): string {
  return digitKeys(optionId);
}
