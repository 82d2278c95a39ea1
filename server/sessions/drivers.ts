import { randomUUID } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { IDisposable } from '../common/disposable';
import { Logger } from '../common/log';
import { AgentProfile } from '../agents/profiles';
import { claudeArgs, claudeConfigDir, claudeHookSettings, claudePermissionKeys, parseClaudeHook, parseClaudePermissionDialog, prepareClaudeRevival } from '../agents/claude';
import { codexArgs, codexPermissionKeys, codexRolloutExists, codexTurnEnd, codexTurnError, CodexState, Osc7501Parser, parseCodexApproval, parseCodexNotify } from '../agents/codex';
import { CODEX_NOTIFY_EVENT, codexNotifyCommand, HOOK_SECRET_ENV, HOOK_URL_ENV, hookRelayCommand } from '../agents/relay';
import { AgentSignal, digitKeys, PermissionOption } from '../agents/signals';
import { SessionRecord } from '../store/SessionStore';

/** What a driver may ask of its session. */
export interface DriverHost {
  readonly record: SessionRecord;
  readonly logger: Logger;
  signal(signal: AgentSignal | { kind: 'turn-interrupted' }): void;
  /** The visible screen as plain text lines. */
  screenText(): Promise<string[] | null>;
  /** Stores the agent's own conversation id at once (a crash right after must not lose it). */
  setAgentSessionId(id: string): void;
  turnRunning(): boolean;
}

export interface LaunchContext {
  revive: boolean;
  /** The child's environment as built so far (profile env included). */
  env: Record<string, string>;
  hookUrl: string;
  hookSecret: string;
}

/**
 * Per-agent knowledge at run time: how to launch (first start or revival),
 * when the agent is ready, where turns end, how to answer its questions.
 */
export interface AgentDriver extends IDisposable {
  /** Turn ends come from the agent (hooks, state reports), not from quiet output. */
  readonly authoritative: boolean;
  launch(ctx: LaunchContext): { args: string[]; env: Record<string, string> };
  /** Input written before this is lost (claude before SessionStart). */
  isReady(): boolean;
  /** Raw output, in order (on the output path: must be cheap). */
  onOutput(chunk: Buffer): void;
  onHook(event: string, payload: unknown): void;
  permissionKeys(optionId: string): string;
  /** A permission option was chosen. */
  onAnswer(option: PermissionOption): void;
}

/** Any CLI: turns end on quiet output; revival uses the profile's resumeArgs. */
class GenericDriver implements AgentDriver {
  readonly authoritative = false;
  constructor(private readonly profile: AgentProfile, private readonly host: DriverHost) {}
  launch(ctx: LaunchContext) {
    const { resumeArgs, args } = this.profile;
    // A profile without its own conversation id resumes by the session's id.
    const id = this.host.record.agentSessionId ?? this.host.record.id;
    if (ctx.revive && resumeArgs) return { args: resumeArgs.map((a) => a.split('{agentSessionId}').join(id)), env: {} };
    return { args: [...args], env: {} };
  }
  isReady() {
    return true;
  }
  onOutput() {}
  onHook() {}
  permissionKeys(optionId: string) {
    return digitKeys(optionId);
  }
  onAnswer() {}
  dispose() {}
}

/** How long to wait for claude to draw its permission dialog after the PermissionRequest hook. */
const DIALOG_DRAW_WAIT_MS = 3_000;
/** After "No" in claude's dialog no hook fires: the turn is ended as interrupted if Stop does not come by then. */
const DENIED_TURN_GRACE_MS = 3_000;

/**
 * Claude Code: `--session-id` chosen by us, `--resume` when its transcript
 * exists; hooks through `--settings` (never the user's files) relayed to the
 * daemon with a per-session secret.
 */
class ClaudeDriver implements AgentDriver {
  readonly authoritative = true;
  private ready = false;
  private deniedTimer: NodeJS.Timeout | null = null;

  constructor(private readonly profile: AgentProfile, private readonly host: DriverHost) {}

  launch(ctx: LaunchContext) {
    const rec = this.host.record;
    if (!rec.agentSessionId) this.host.setAgentSessionId(randomUUID());
    const uuid = rec.agentSessionId!;
    let transcriptExists = false;
    if (ctx.revive) {
      const configDir = claudeConfigDir(ctx.env);
      const prep = prepareClaudeRevival(configDir, rec.projectPath, uuid);
      transcriptExists = prep.transcriptExists;
      if (prep.setAside) this.host.logger.info({ setAside: prep.setAside }, 'claude transcript had no conversation: set aside, starting the same id afresh');
    }
    const hookSettingsJson = JSON.stringify(claudeHookSettings(hookRelayCommand()));
    this.ready = false;
    return {
      args: [...this.profile.args, ...claudeArgs({ agentSessionId: uuid, revive: ctx.revive, transcriptExists, hookSettingsJson })],
      env: { [HOOK_URL_ENV]: ctx.hookUrl, [HOOK_SECRET_ENV]: ctx.hookSecret },
    };
  }

  isReady() {
    return this.ready;
  }

  onOutput() {}

  onHook(event: string, payload: unknown) {
    const signal = parseClaudeHook(payload, event);
    if (!signal) return;
    if (signal.kind === 'ready') {
      this.ready = true;
      if (signal.agentSessionId && signal.agentSessionId !== this.host.record.agentSessionId) this.host.setAgentSessionId(signal.agentSessionId);
    }
    if (signal.kind === 'turn-ended') this.clearDenied();
    if (signal.kind === 'permission') {
      void this.relayWhenDrawn(signal);
      return;
    }
    this.host.signal(signal);
  }

  /**
   * PermissionRequest fires before the dialog is drawn, and a digit written
   * before that is lost: the question is relayed once it is on screen (or
   * after a bound, with the hook's words).
   */
  private async relayWhenDrawn(signal: Extract<AgentSignal, { kind: 'permission' }>) {
    const deadline = Date.now() + DIALOG_DRAW_WAIT_MS;
    while (Date.now() < deadline) {
      const lines = await this.host.screenText();
      if (lines && parseClaudePermissionDialog(lines.join('\n'))) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (this.host.turnRunning()) this.host.signal(signal);
  }

  permissionKeys(optionId: string) {
    return claudePermissionKeys(optionId);
  }

  onAnswer(option: PermissionOption) {
    if (!/^no\b/i.test(option.label)) return;
    this.clearDenied();
    this.deniedTimer = setTimeout(() => {
      this.deniedTimer = null;
      if (this.host.turnRunning()) this.host.signal({ kind: 'turn-interrupted' });
    }, DENIED_TURN_GRACE_MS);
  }

  private clearDenied() {
    if (this.deniedTimer) clearTimeout(this.deniedTimer);
    this.deniedTimer = null;
  }

  dispose() {
    this.clearDenied();
  }
}

/**
 * Codex is ready for a prompt once its state has stayed idle this long: its start-up may flip idle → working → idle
 * within ~50 ms (measured over 17 starts; research note: 30–80 ms), and a prompt written inside that flip is lost.
 */
const CODEX_SETTLE_MS = 150;
/**
 * A fresh codex is ready only after its start-up flip (idle → working → idle). On a loaded machine the flip came
 * more than CODEX_SETTLE_MS after the first idle (4–7 codex starting at once: 10 of 48 first prompts lost or hung),
 * so the first idle is not trusted; if no flip comes within this long after it, codex is taken as ready anyway.
 */
export const CODEX_FLIP_WAIT_MS = 3_000;
/** How often a working codex turn's screen is checked for an API error (codex reports no state change then). */
const CODEX_ERROR_CHECK_MS = 2_000;
/** How long to wait for codex to draw its approval dialog after it reported `blocked`. */
const APPROVAL_DRAW_WAIT_MS = 5_000;
/** How long a codex turn end waits for notify's text before taking the screen's. */
const NOTIFY_WAIT_MS = 1_500;

/**
 * Codex: `--no-daemon`, notify through `-c`, busy/idle from OSC 7501 in the
 * output, the answer's text from notify (filtered by thread id), revival
 * with `resume <thread id>`.
 */
class CodexDriver implements AgentDriver {
  readonly authoritative = true;
  private readonly parser = new Osc7501Parser();
  private state: CodexState | null = null;
  private ready = false;
  /** A fresh start (not a resume) still owes its start-up flip. */
  private flipOwed = false;
  private lastText: { text: string; at: number } | null = null;
  private turnStartedAt = 0;
  private pendingEnd: NodeJS.Timeout | null = null;
  private readyTimer: NodeJS.Timeout | null = null;
  private errorWatch: NodeJS.Timeout | null = null;

  constructor(private readonly profile: AgentProfile, private readonly host: DriverHost) {}

  launch(ctx: LaunchContext) {
    const threadId = this.host.record.agentSessionId;
    const codexHome = ctx.env.CODEX_HOME ?? join(ctx.env.HOME ?? homedir(), '.codex');
    const resumable = ctx.revive && !!threadId && codexRolloutExists(codexHome, threadId);
    if (ctx.revive && threadId && !resumable) this.host.logger.warn({ threadId }, 'codex rollout not found: starting a new thread');
    this.ready = false;
    this.state = null;
    this.flipOwed = !resumable;
    const extra = this.profile.args.filter((a) => a !== '--no-daemon');
    const base = codexArgs({ threadId, revive: resumable, notifyCommand: codexNotifyCommand() });
    // Options go before the `resume` subcommand.
    const at = base.indexOf('resume');
    const args = at >= 0 ? [...base.slice(0, at), ...extra, ...base.slice(at)] : [...base, ...extra];
    return { args, env: { [HOOK_URL_ENV]: ctx.hookUrl, [HOOK_SECRET_ENV]: ctx.hookSecret } };
  }

  isReady() {
    return this.ready;
  }

  onOutput(chunk: Buffer) {
    const reports = this.parser.feed(chunk);
    for (const report of reports) this.onState(report.state, report.kind);
  }

  private onState(next: CodexState, kind?: string) {
    const previous = this.state;
    this.state = next;
    if (!this.ready) {
      // A fresh codex goes idle → working → idle at start, a resumed one just idle: ready once idle stays put
      // after the flip (or, if a fresh one never flips, once it has stayed idle for CODEX_FLIP_WAIT_MS).
      if (this.readyTimer) clearTimeout(this.readyTimer);
      this.readyTimer = null;
      if (next !== 'idle') this.flipOwed = false;
      else {
        this.readyTimer = setTimeout(() => {
          this.readyTimer = null;
          this.ready = true;
          this.host.signal({ kind: 'ready' });
        }, this.flipOwed ? CODEX_FLIP_WAIT_MS : CODEX_SETTLE_MS);
      }
      return;
    }
    if (next === 'working' && previous !== 'working' && previous !== 'blocked') this.turnStartedAt = Date.now();
    if (next === 'working') this.watchForError();
    else this.stopErrorWatch();
    if (next === 'blocked' && kind === 'permission') {
      void this.readApproval();
      return;
    }
    const end = codexTurnEnd(previous, next);
    if (end === 'interrupted') this.host.signal({ kind: 'turn-interrupted' });
    else if (end === 'completed') this.endWithText();
  }

  /**
   * After an API error codex prints it and shows its composer again, but its
   * state report stays `working`: while working, the screen is checked for
   * that, and the turn ended with the error instead of hanging.
   */
  private watchForError() {
    if (this.errorWatch) return;
    this.errorWatch = setInterval(async () => {
      if (this.state !== 'working' || !this.host.turnRunning()) return;
      const lines = await this.host.screenText();
      const error = lines ? codexTurnError(lines.join('\n')) : null;
      if (error && this.state === 'working') {
        this.stopErrorWatch();
        this.state = 'idle';
        this.host.logger.warn({ error }, 'codex turn ended on an error');
        this.host.signal({ kind: 'turn-ended', text: error, error });
      }
    }, CODEX_ERROR_CHECK_MS);
  }

  private stopErrorWatch() {
    if (this.errorWatch) clearInterval(this.errorWatch);
    this.errorWatch = null;
  }

  private async readApproval() {
    // Codex draws the dialog ~1 s after reporting `blocked`, and a key written before that is lost:
    // the question is relayed only once it is on screen.
    let dialog: ReturnType<typeof parseCodexApproval> = null;
    const deadline = Date.now() + APPROVAL_DRAW_WAIT_MS;
    while (!dialog && Date.now() < deadline && this.state === 'blocked') {
      await new Promise((r) => setTimeout(r, 100));
      const lines = await this.host.screenText();
      dialog = lines ? parseCodexApproval(lines.join('\n')) : null;
    }
    if (this.state !== 'blocked') return;
    this.host.signal({
      kind: 'permission',
      prompt: dialog?.prompt ?? 'Codex asks for approval',
      options: dialog?.options ?? [
        { id: '1', label: 'Yes, proceed' },
        { id: '3', label: 'No, and tell Codex what to do differently' },
      ],
    });
  }

  /** Turn over: the text is notify's when it came for this turn, else what the screen shows. */
  private endWithText() {
    const fresh = () => (this.lastText && this.lastText.at >= this.turnStartedAt ? this.lastText.text : null);
    const text = fresh();
    if (text !== null) {
      this.host.signal({ kind: 'turn-ended', text });
      return;
    }
    if (this.pendingEnd) clearTimeout(this.pendingEnd);
    this.pendingEnd = setTimeout(async () => {
      this.pendingEnd = null;
      const late = fresh();
      if (late !== null) return this.host.signal({ kind: 'turn-ended', text: late });
      const lines = (await this.host.screenText()) ?? [];
      this.host.signal({ kind: 'turn-ended', text: lines.join('\n').trim() });
    }, NOTIFY_WAIT_MS);
  }

  onHook(event: string, payload: unknown) {
    if (event !== CODEX_NOTIFY_EVENT) return;
    const json = typeof payload === 'string' ? payload : JSON.stringify(payload);
    const notify = parseCodexNotify(json, this.host.record.agentSessionId);
    if (!notify) return;
    if (!this.host.record.agentSessionId) this.host.setAgentSessionId(notify.threadId);
    this.lastText = { text: notify.text, at: Date.now() };
    if (this.pendingEnd) {
      clearTimeout(this.pendingEnd);
      this.pendingEnd = null;
      this.host.signal({ kind: 'turn-ended', text: notify.text });
    }
  }

  permissionKeys(optionId: string) {
    return codexPermissionKeys(optionId);
  }

  onAnswer() {}

  dispose() {
    if (this.pendingEnd) clearTimeout(this.pendingEnd);
    if (this.readyTimer) clearTimeout(this.readyTimer);
    this.pendingEnd = this.readyTimer = null;
    this.stopErrorWatch();
  }
}

export function createDriver(profile: AgentProfile, host: DriverHost): AgentDriver {
  switch (profile.kind) {
    case 'claude':
      return new ClaudeDriver(profile, host);
    case 'codex':
      return new CodexDriver(profile, host);
    default:
      return new GenericDriver(profile, host);
  }
}
