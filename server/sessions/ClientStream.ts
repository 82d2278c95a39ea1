import { IDisposable } from '../common/disposable';
import { Logger } from '../common/log';
import type { FastOutput } from '../pty/FastOutput';
import { SessionStore } from '../store/SessionStore';
import { Attachment, ClientSet, RESUME_BELOW_BYTES, SessionClient } from './Clients';
import { OutputLog } from './OutputLog';
import { ScreenKeeper } from './ScreenKeeper';

/** How often lagging clients are checked for having drained. */
const LAG_CHECK_MS = 100;
/**
 * Bytes a crashed daemon may have sent to clients beyond what it had stored:
 * the store writes every second, or at once past 256 KiB queued, so even a
 * flood (~80 MB/s, a write taking tens of ms) stays well within this.
 */
export const CRASH_LOSS_BOUND_BYTES = 8 * 1024 * 1024;

/**
 * The session's output as its clients see it: attach (snapshot or exact
 * resume), live fan-out with per-client flow control, resynchronisation of a
 * client that fell behind, and who governs the terminal size.
 */
export class ClientStream implements IDisposable {
  readonly clients = new ClientSet();
  private lagTimer: NodeJS.Timeout | null = null;
  /**
   * Offsets a crash made ambiguous: (from, to]. The previous daemon may have
   * sent bytes past `from` (its stored end) that were lost, and the revived
   * agent's output takes the same offsets; a `since` in there cannot be told
   * apart, so it gets a fresh attach.
   */
  private crashGap: { from: number; to: number } | null = null;

  constructor(
    private readonly id: string,
    private readonly log: OutputLog,
    private readonly screen: ScreenKeeper,
    private readonly deps: { store: SessionStore; logger: Logger; onSize: (cols: number, rows: number) => void },
  ) {}

  get size(): number {
    return this.clients.size;
  }

  /** The previous daemon crashed with the stream stored up to here (see crashGap). */
  noteCrashAt(storedEnd: number): void {
    this.crashGap = { from: storedEnd, to: storedEnd + CRASH_LOSS_BOUND_BYTES };
  }

  /** Live output at offset `at` (hot path); `fast`: the terminal's native output path, if it has one. */
  broadcast(chunk: Buffer, at: number, fast: FastOutput | null = null): void {
    if (this.clients.size === 0) return;
    const behind = this.clients.broadcast(chunk, at, fast);
    if (behind.length) this.watchLaggards();
  }

  sendJson(frame: object): void {
    this.clients.sendJson(frame);
  }

  /**
   * Fresh (no `since`, or its bytes are gone): attached(N), snapshot(N), bytes
   * from N. Resume with kept bytes: attached(S), then exactly the bytes from S.
   */
  async attach(client: SessionClient, opts: { since?: number; cols?: number; rows?: number }, session: () => object): Promise<void> {
    const att = this.clients.add(client, opts.cols, opts.rows);
    this.applyGoverningSize();
    const since = opts.since;
    const ambiguous = since !== undefined && this.crashGap !== null && since > this.crashGap.from && since <= this.crashGap.to;
    if (since !== undefined && since <= this.log.end && !ambiguous) {
      const missing = this.readBytes(since);
      if (missing) {
        client.sendJson({ type: 'attached', session: session(), offset: since });
        if (missing.length) client.sendOutput(missing);
        att.position = since + missing.length;
        this.catchUp(att);
        return;
      }
    }
    client.sendJson({ type: 'attached', session: session(), offset: this.log.end });
    await this.resync(att);
  }

  detach(client: SessionClient): boolean {
    if (!this.clients.remove(client)) return false;
    this.applyGoverningSize();
    return true;
  }

  /** The client that sent input now governs the size. */
  noteInput(client: SessionClient): void {
    const att = this.clients.get(client);
    if (!att) return;
    // Another client typed: one on the native input path goes back to `ws`, so that its next keystroke is noted (and
    // its size applied) before the keystroke is written.
    if (!this.clients.typedLast(att)) for (const other of this.clients.all()) if (other !== att) other.client.stopInput?.();
    this.clients.noteInput(att);
    this.applyGoverningSize();
  }

  /** True if `client` sent input last (only it may type on the native input path). */
  typedLast(client: SessionClient): boolean {
    const att = this.clients.get(client);
    return att !== undefined && this.clients.typedLast(att);
  }

  /** Notes the keystrokes clients wrote on the native input path since last told (activity, keep-alive). */
  tellInput(): void {
    for (const att of this.clients.all()) att.client.tellInput?.();
  }

  /** Ends the native input path of every client (the terminal is going). */
  stopInput(): void {
    for (const att of this.clients.all()) att.client.stopInput?.();
  }

  /** A client's acknowledgement of bytes processed. */
  ack(client: SessionClient, offset: number): void {
    const att = this.clients.get(client);
    if (!att || offset > att.position) return;
    att.acked = Math.max(att.acked ?? 0, offset);
    if (att.lagging) this.checkLaggard(att);
  }

  /** A client's terminal size (validated by the caller). */
  resizeFrom(client: SessionClient, cols: number, rows: number): void {
    const att = this.clients.get(client);
    if (!att) return;
    this.clients.noteSize(att, cols, rows);
    this.applyGoverningSize();
  }

  private applyGoverningSize(): void {
    const size = this.clients.governingSize();
    if (size) this.deps.onSize(size.cols, size.rows);
  }

  /** Bytes from `from` to the end, from memory or the store; null if no longer kept. */
  private readBytes(from: number): Buffer | null {
    const inMemory = this.log.slice(from);
    if (inMemory) return inMemory;
    const stored = this.deps.store.readOutput(this.id, from, this.log.start);
    if (!stored || stored.offset !== from) return null;
    const rest = this.log.slice(this.log.start);
    return rest ? Buffer.concat([stored.data, rest]) : null;
  }

  /** Sends a snapshot at the current end, then whatever came after it, then live bytes. */
  private async resync(att: Attachment): Promise<void> {
    att.ready = false;
    const snap = await this.screen.snapshot();
    if (!this.clients.get(att.client)) return; // left meanwhile
    att.client.sendJson({ type: 'snapshot', offset: snap.offset, cols: snap.cols, rows: snap.rows, data: snap.data });
    att.position = snap.offset;
    att.lagging = false;
    this.catchUp(att);
  }

  /** Sends the bytes between the client's position and the end, then marks it live. */
  private catchUp(att: Attachment): void {
    const rest = this.log.slice(att.position);
    if (rest === null) {
      void this.resync(att);
      return;
    }
    if (rest.length) att.client.sendOutput(rest);
    att.position = this.log.end;
    att.ready = true;
  }

  private watchLaggards(): void {
    if (this.lagTimer) return;
    this.lagTimer = setInterval(() => {
      const lagging = this.clients.all().filter((a) => a.lagging);
      if (lagging.length === 0) {
        clearInterval(this.lagTimer!);
        this.lagTimer = null;
        return;
      }
      for (const att of lagging) this.checkLaggard(att);
    }, LAG_CHECK_MS);
  }

  private checkLaggard(att: Attachment): void {
    if (att.inFlight > RESUME_BELOW_BYTES || !att.ready) return;
    // It drained: send a fresh screen instead of the backlog it missed.
    att.acked = null;
    this.resync(att).catch((err) => this.deps.logger.warn({ err: (err as Error).message }, 'resync failed'));
  }

  dispose(): void {
    if (this.lagTimer) clearInterval(this.lagTimer);
    this.lagTimer = null;
  }
}
