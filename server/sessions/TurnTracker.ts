import { Disposable, toDisposable } from '../common/disposable';
import { Emitter } from '../common/events';
import { newId } from '../common/ids';
import { TurnRecord } from '../store/SessionStore';
import { PROMPT_TEST_MAX_CHARS, toPlainLines, turnText } from './text';

/** What ended a turn, and how. */
export interface TurnEnd {
  turn: TurnRecord;
}

/** Longest output a turn keeps for its text: bigger answers are trimmed from the front. */
const MAX_TURN_OUTPUT_BYTES = 1024 * 1024;
/** A turn that hears nothing for this long (no hook, no output) is ended as interrupted. */
export const TURN_SILENCE_TIMEOUT_MS = 10 * 60_000;

interface Running {
  turn: TurnRecord;
  output: Buffer[];
  outputBytes: number;
  quiet: NodeJS.Timeout | null;
  silence: NodeJS.Timeout | null;
  submitted: boolean;
}

/**
 * Runs a session's turns one at a time: a prompt is written (text, pause,
 * Enter), then the tracker waits for the end — a hook or state signal where
 * the agent has them, otherwise output that has been quiet for `idleMs`
 * (optionally confirmed by `promptPattern`). Turns sent while one runs queue.
 */
export class TurnTracker extends Disposable {
  private readonly queue: Array<{ turn: TurnRecord }> = [];
  private running: Running | null = null;
  private readonly endEmitter = this.register(new Emitter<TurnEnd>());
  private readonly startEmitter = this.register(new Emitter<TurnRecord>());
  readonly onTurnEnd = this.endEmitter.event;
  readonly onTurnStart = this.startEmitter.event;

  constructor(
    private readonly sessionId: string,
    private readonly opts: {
      idleMs: number;
      promptPattern?: RegExp;
      authoritative: boolean;
      now: () => number;
      /** Writes the prompt the way both CLIs accept it; resolves once Enter is written. */
      submit: (prompt: string) => Promise<void>;
      /** Whether the agent can take a prompt now (claude: after SessionStart). */
      isReady: () => boolean;
    },
  ) {
    super();
    this.register(toDisposable(() => this.clearTimers()));
  }

  get current(): TurnRecord | null {
    return this.running?.turn ?? null;
  }

  get busy(): boolean {
    return this.running !== null || this.queue.length > 0;
  }

  /** Queues a turn; returns its record at once (status running). */
  enqueue(kind: TurnRecord['kind'], prompt: string, deviceId: string | null): TurnRecord {
    const turn: TurnRecord = {
      id: newId(),
      sessionId: this.sessionId,
      kind,
      prompt,
      response: null,
      status: 'running',
      startedAt: this.opts.now(),
      endedAt: null,
      deviceId,
    };
    this.queue.push({ turn });
    this.pump();
    return turn;
  }

  /** Call when the agent becomes ready for input (starts queued turns). */
  pump(): void {
    if (this.running || this.queue.length === 0 || !this.opts.isReady()) return;
    const { turn } = this.queue.shift()!;
    const running: Running = { turn, output: [], outputBytes: 0, quiet: null, silence: null, submitted: false };
    this.running = running;
    this.startEmitter.fire(turn);
    this.opts
      .submit(turn.prompt)
      .then(() => {
        if (this.running !== running) return;
        running.submitted = true;
        this.armSilence(running);
        if (!this.opts.authoritative) this.armQuiet(running);
      })
      .catch(() => this.finish('interrupted', null));
  }

  /** Output of the agent (the whole stream; the tracker keeps what belongs to the current turn). */
  onOutput(chunk: Buffer): void {
    const r = this.running;
    if (!r) return;
    r.output.push(chunk);
    r.outputBytes += chunk.length;
    while (r.outputBytes > MAX_TURN_OUTPUT_BYTES && r.output.length > 1) r.outputBytes -= r.output.shift()!.length;
    if (r.submitted && !this.opts.authoritative) {
      this.armQuiet(r);
      this.armSilence(r);
    }
  }

  /** An authoritative end (Stop hook, OSC 7501 done): `text` is the agent's own answer when it gives one. */
  end(status: 'completed' | 'interrupted', text: string | null): void {
    this.finish(status, text);
  }

  /** The agent died or the session ended: every turn, running or queued, ends interrupted. */
  abortAll(): void {
    this.finish('interrupted', null);
    for (const { turn } of this.queue.splice(0)) {
      turn.status = 'interrupted';
      turn.response = '';
      turn.endedAt = this.opts.now();
      this.endEmitter.fire({ turn });
    }
  }

  /** Keeps a hook-driven turn from being ended by the silence timeout (e.g. while a permission prompt is open). */
  touch(): void {
    if (this.running?.submitted && this.opts.authoritative) this.armSilence(this.running);
  }

  private armQuiet(r: Running): void {
    if (r.quiet) clearTimeout(r.quiet);
    r.quiet = setTimeout(() => {
      r.quiet = null;
      if (this.running !== r) return;
      if (this.opts.promptPattern && !this.opts.promptPattern.test(this.tailText(r))) {
        // Quiet but not back at its prompt: still working (e.g. a long computation).
        this.armQuiet(r);
        return;
      }
      this.finish('completed', null);
    }, this.opts.idleMs);
  }

  private armSilence(r: Running): void {
    if (r.silence) clearTimeout(r.silence);
    r.silence = setTimeout(() => {
      if (this.running === r) this.finish('interrupted', null);
    }, TURN_SILENCE_TIMEOUT_MS);
  }

  /** The end of the last non-empty line, what `promptPattern` is tested against. */
  private tailText(r: Running): string {
    const lines = toPlainLines(Buffer.concat(r.output).toString('utf8')).filter((l) => l.trim() !== '');
    return (lines[lines.length - 1] ?? '').slice(-PROMPT_TEST_MAX_CHARS);
  }

  private finish(status: 'completed' | 'interrupted', text: string | null): void {
    const r = this.running;
    if (!r) return;
    this.clearTimers();
    this.running = null;
    const turn = r.turn;
    turn.status = status;
    turn.endedAt = this.opts.now();
    // An agent that reports its own turns and stopped without answering (denied, Esc, died) gave no answer: its
    // screen then is chrome (spinners, tips, the dialog), not a response.
    const noAnswer = status === 'interrupted' && this.opts.authoritative;
    turn.response = text ?? (noAnswer ? '' : turnText(Buffer.concat(r.output).toString('utf8'), turn.prompt, this.opts.promptPattern));
    this.endEmitter.fire({ turn });
    this.pump();
  }

  private clearTimers(): void {
    const r = this.running;
    if (!r) return;
    if (r.quiet) clearTimeout(r.quiet);
    if (r.silence) clearTimeout(r.silence);
    r.quiet = r.silence = null;
  }

  override dispose(): void {
    this.abortAll();
    super.dispose();
  }
}

