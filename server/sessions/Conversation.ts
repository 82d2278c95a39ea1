import { Disposable } from '../common/disposable';
import { errors } from '../common/errors';
import { Emitter } from '../common/events';
import { AgentProfile } from '../agents/profiles';
import { SessionState, SessionStore, TurnRecord } from '../store/SessionStore';
import { AgentDriver } from './drivers';
import { TurnTracker } from './TurnTracker';

/** The pause between a chat line's text and its Enter: each real CLI drops one form otherwise (research note §5). */
export const ENTER_PAUSE_MS = 150;

export interface OpenPrompt {
  turnId: string | null;
  prompt: string;
  options: Array<{ id: string; label: string }>;
}

/** What a conversation needs of the session it runs in. */
export interface ConversationHost {
  readonly id: string;
  isLive(): boolean;
  /** Why the session takes no turn (e.g. "exited (agent exited with code 0)"). */
  describeEnd(): string;
  setState(state: SessionState): void;
  /** A JSON frame to every attached terminal client. */
  sendJson(frame: Record<string, unknown>): void;
  /** Writes keys to the agent; false when none runs. */
  writeKeys(keys: string): boolean;
  /** A user's action: activity, and a keep-alive (contract). */
  noteUserActivity(): void;
}

/**
 * The chat layer of a session: its turn queue and the permission question the
 * agent has open, and the session states they imply (busy, needs_input,
 * idle). The terminal underneath is the session's; this only writes lines and
 * answer keys to it.
 */
export class Conversation extends Disposable {
  private turns: TurnTracker | null = null;
  private question: OpenPrompt | null = null;
  private readonly turnEmitter = this.register(new Emitter<TurnRecord>());
  private readonly promptEmitter = this.register(new Emitter<OpenPrompt | null>());
  /** Turns that ended. */
  readonly onTurnEnd = this.turnEmitter.event;
  /** A permission question opened (or closed: null). */
  readonly onPrompt = this.promptEmitter.event;

  constructor(
    private readonly host: ConversationHost,
    private readonly deps: { profile: AgentProfile; driver: AgentDriver; store: SessionStore; now: () => number },
  ) {
    super();
  }

  /** A fresh turn queue for the agent just started (the last one's, if any, is gone with its agent). */
  restart(): void {
    const { profile, driver, now } = this.deps;
    this.turns?.dispose();
    this.turns = this.register(
      new TurnTracker(this.host.id, {
        idleMs: profile.idleMs,
        promptPattern: profile.promptPattern,
        authoritative: driver.authoritative,
        now,
        submit: (text) => this.submitLine(text),
        isReady: () => this.host.isLive() && driver.isReady() && !this.question,
      }),
    );
    this.register(this.turns.onTurnStart((turn) => this.turnStarted(turn)));
    this.register(this.turns.onTurnEnd(({ turn }) => this.turnEnded(turn)));
  }

  get current(): TurnRecord | null {
    return this.turns?.current ?? null;
  }

  get busy(): boolean {
    return this.turns?.busy ?? false;
  }

  get prompt(): OpenPrompt | null {
    return this.question;
  }

  /** Queues a chat (or recap) turn; the returned record is updated in place when it ends. */
  send(kind: TurnRecord['kind'], prompt: string, deviceId: string | null): TurnRecord {
    if (!this.turns || !this.host.isLive()) throw errors.conflict(`session ${this.host.id} is ${this.host.describeEnd()}`);
    this.host.noteUserActivity();
    const turn = this.turns.enqueue(kind, prompt, deviceId);
    this.deps.store.putTurn(turn);
    return turn;
  }

  /** The agent can take a prompt: the next queued turn starts. */
  agentReady(): void {
    this.turns?.pump();
  }

  /** Raw output, in order (on the output path). */
  onOutput(chunk: Buffer): void {
    this.turns?.onOutput(chunk);
  }

  /** The agent said the running turn ended (with its answer, or interrupted). */
  endTurn(status: 'completed' | 'interrupted', text: string | null): void {
    this.question = null;
    this.turns?.end(status, text);
  }

  /** The agent asks a permission question (from its hooks or its screen). */
  openPermission(prompt: string, options: OpenPrompt['options']): void {
    this.question = { turnId: this.turns?.current?.id ?? null, prompt, options };
    this.turns?.touch();
    this.host.sendJson({ type: 'permission', ...this.question });
    this.host.setState('needs_input');
    this.promptEmitter.fire(this.question);
  }

  /** Writes the keys that answer the open question with option `optionId`. */
  answer(optionId: unknown): void {
    const question = this.question;
    if (!question || !this.host.isLive()) throw errors.conflict('no permission question is open');
    const option = question.options.find((o) => o.id === String(optionId));
    if (!option) throw errors.invalid(`option must be one of ${question.options.map((o) => o.id).join(', ')}`);
    this.host.writeKeys(this.deps.driver.permissionKeys(option.id));
    this.host.noteUserActivity();
    this.deps.driver.onAnswer(option);
    this.closePermission();
  }

  /** The agent is gone: every queued and running turn ends interrupted, the question with it. */
  abortAll(): void {
    this.turns?.abortAll();
    this.question = null;
  }

  private closePermission(): void {
    if (!this.question) return;
    this.question = null;
    this.promptEmitter.fire(null);
    if (this.host.isLive()) this.host.setState(this.busy ? 'busy' : 'idle');
  }

  /** Writes a chat line the way both real CLIs accept it: text, a pause, then Enter alone. */
  private async submitLine(text: string): Promise<void> {
    const prompt = this.deps.driver.authoritative ? asPrompt(text) : text;
    const line = this.deps.driver.authoritative && goesAsPaste(prompt) ? bracketedPaste(prompt) : prompt;
    if (!this.host.writeKeys(line)) throw new Error('no agent running');
    await new Promise((r) => setTimeout(r, ENTER_PAUSE_MS));
    if (!this.host.isLive() || !this.host.writeKeys('\r')) throw new Error('agent ended before Enter');
  }

  private turnStarted(turn: TurnRecord): void {
    this.deps.store.putTurn(turn);
    if (this.host.isLive()) this.host.setState('busy');
  }

  private turnEnded(turn: TurnRecord): void {
    this.deps.store.putTurn(turn);
    this.host.sendJson({ type: 'turn', turnId: turn.id, status: turn.status, response: turn.response });
    this.turnEmitter.fire(turn);
    if (this.host.isLive() && !this.busy && !this.question) this.host.setState('idle');
  }
}

/**
 * Longer single lines than this go to claude and codex as a bracketed paste:
 * typed in one burst, codex takes them for a paste and shows "[Pasted Content
 * N chars]", and the Enter that follows does not submit it (300 characters
 * failed 2 in 6 times, 600 and more every time; 290 and less never).
 */
export const PASTE_OVER_CHARS = 200;

/**
 * Whether a message goes as a bracketed paste rather than as keystrokes: one
 * with a newline (it would submit early), another control character (a tab
 * is a key: claude dropped it; a lone CR or an ESC would submit or cancel),
 * or a long line (PASTE_OVER_CHARS).
 */
export function goesAsPaste(text: string): boolean {
  // eslint-disable-next-line no-control-regex
  return text.length > PASTE_OVER_CHARS || /[\x00-\x1f\x7f]/.test(text);
}

/**
 * `text` as one bracketed paste. Inside it only tabs and newlines (CR and
 * CRLF become LF) are kept of the control characters: without ESC the text
 * cannot end the paste early, and no other key can act.
 */
export function bracketedPaste(text: string): string {
  // eslint-disable-next-line no-control-regex
  const body = text.replace(/\r\n?/g, '\n').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
  return `\x1b[200~${body}\x1b[201~`;
}

/** Whether a chat message has something to send: a message of only spaces and control characters has not. */
export function hasVisibleText(text: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /[^\s\x00-\x1f\x7f]/.test(text);
}

/**
 * A chat message is a prompt for the model, never a command of the CLI: one
 * that starts with `/` (claude's and codex's slash commands: `/help` opens a
 * dialog that ends no turn and eats the next message) or `!` (claude's shell
 * mode: the command runs without a permission question) gets a zero-width
 * space in front, which the CLIs do not take for a command and the model
 * reads past. Commands go through a terminal client or POST /input.
 */
export function asPrompt(text: string): string {
  // Leading blanks and control characters too: a paste drops the controls, and the CLI would see the `/` first.
  // eslint-disable-next-line no-control-regex
  const start = text.replace(/^[\s\x00-\x1f\x7f]+/, '');
  return start.startsWith('/') || start.startsWith('!') ? `${ZERO_WIDTH_SPACE}${start}` : text;
}
const ZERO_WIDTH_SPACE = '\u200b';
