import type { InputTarget } from '../pty/FastInput';
import { binaryFrame, FAST_SLOTS, FastOutput, frameLength } from '../pty/FastOutput';

/** An attached client, as the domain sees it (the ws layer implements it). */
export interface SessionClient {
  readonly id: string;
  /** Output bytes: one binary frame, never split or merged with JSON. */
  sendOutput(data: Buffer): void;
  sendJson(frame: object): void;
  /** Bytes queued on the socket and not yet written to the network. */
  readonly bufferedAmount: number;
  close(code: number, reason: string): void;
  /**
   * For the native output path (pty/FastOutput.ts): the socket's descriptor
   * while nothing of this process is queued on it, so that a frame written
   * there directly cannot interleave with one of ours; else null.
   */
  fastFd?(): number | null;
  /** Bytes that are WebSocket frames already (the rest of one the native path began). */
  sendFramed?(frames: Buffer): void;
  /** Called before anything else is written to the socket: the native path must stop writing there first. */
  onWrite?: (() => void) | null;
  /**
   * For the native input path (pty/FastInput.ts): from now on, this client's
   * keystrokes (binary frames) go straight to `target`. `onInput(rest)` tells
   * of keystrokes written since it last ran (when told: `tellInput`, every
   * second, and when the path stops) — `rest`: bytes the terminal did not
   * take, for the session's writer. False if it cannot start now.
   */
  startInput?(target: InputTarget, onInput: (rest: Buffer | undefined) => void): boolean;
  /** Ends the native input path (if on): every frame goes through `ws` again. */
  stopInput?(): void;
  /** Calls `onInput` now for keystrokes written natively and not yet told (else it runs every second, and at the end). */
  tellInput?(): void;
}

/**
 * Flow control (VS Code's char-count acks, ttyd's pause): a client with more
 * than this in flight stops getting live bytes and is resynchronised with a
 * snapshot once it has drained; the agent and other clients never wait.
 */
export const MAX_UNACKED_BYTES = 4 * 1024 * 1024;
/** Socket-level watermark for clients that do not send acks. */
export const MAX_BUFFERED_BYTES = 2 * 1024 * 1024;
/** A lagging client is resynchronised once below this. */
export const RESUME_BELOW_BYTES = 256 * 1024;

export class Attachment {
  /** Offset of the next byte this client gets. */
  position = 0;
  /** False until the client's snapshot or catch-up bytes are out: live bytes wait. */
  ready = false;
  /** Offset the client says it has processed (null until its first ack). */
  acked: number | null = null;
  lagging = false;
  cols: number | null = null;
  rows: number | null = null;
  /** Order stamps for resize arbitration (0 = never). */
  lastInput = 0;
  lastSize = 0;
  /** The native output path's slot that sends to this client, -1 if none (see ClientSet.armFast). */
  slot = -1;

  constructor(readonly client: SessionClient) {}

  get inFlight(): number {
    const byAck = this.acked === null ? 0 : this.position - this.acked;
    return Math.max(byAck, this.client.bufferedAmount);
  }

  overWatermark(): boolean {
    if (this.acked !== null && this.position - this.acked > MAX_UNACKED_BYTES) return true;
    return this.client.bufferedAmount > MAX_BUFFERED_BYTES;
  }
}

/** The clients attached to one session: fan-out, flow control and who sets the size. */
export class ClientSet {
  private readonly attachments = new Map<string, Attachment>();
  private stamp = 0;
  /** The attachment that sent input last (its size governs, if it gave one). */
  private typist: Attachment | null = null;
  /** The native output path the slots belong to (the terminal's; a revived session has another). */
  private fast: FastOutput | null = null;
  /** Which attachment each slot sends to. */
  private readonly slots: Array<Attachment | null> = new Array<Attachment | null>(FAST_SLOTS).fill(null);
  /** Chunks the native path sent to a client, and of them those it only began (tests, diagnostics). */
  readonly fastStats = { sent: 0, partial: 0 };

  get size(): number {
    return this.attachments.size;
  }

  all(): Attachment[] {
    return [...this.attachments.values()];
  }

  get(client: SessionClient): Attachment | undefined {
    return this.attachments.get(client.id);
  }

  add(client: SessionClient, cols?: number, rows?: number): Attachment {
    const att = new Attachment(client);
    if (cols && rows) {
      att.cols = cols;
      att.rows = rows;
      att.lastSize = ++this.stamp;
    }
    this.attachments.set(client.id, att);
    return att;
  }

  remove(client: SessionClient): boolean {
    const att = this.attachments.get(client.id);
    if (att) this.disarm(att);
    if (att && this.typist === att) this.typist = null;
    return this.attachments.delete(client.id);
  }

  noteInput(att: Attachment): void {
    att.lastInput = ++this.stamp;
    this.typist = att;
  }

  /** True if `att` sent input last: more of its input cannot change the governing size. */
  typedLast(att: Attachment): boolean {
    return this.typist === att;
  }

  noteSize(att: Attachment, cols: number, rows: number): void {
    att.cols = cols;
    att.rows = rows;
    att.lastSize = ++this.stamp;
  }

  /**
   * The size the terminal should have: that of the client that most recently
   * sent input; while none has, of the one that most recently sent a size.
   */
  governingSize(): { cols: number; rows: number } | null {
    let best: Attachment | null = null;
    for (const att of this.attachments.values()) {
      if (att.cols === null || att.rows === null) continue;
      if (!best) best = att;
      else if (att.lastInput !== best.lastInput) best = att.lastInput > best.lastInput ? att : best;
      else if (att.lastSize > best.lastSize) best = att;
    }
    return best ? { cols: best.cols!, rows: best.rows! } : null;
  }

  /**
   * Sends live output to every ready client that keeps up; returns those that
   * fell behind just now. `fast`: the terminal's native output path, which
   * may have sent the chunk to some of them already.
   */
  broadcast(data: Buffer, at: number, fast: FastOutput | null = null): Attachment[] {
    if (fast !== this.fast) this.useFast(fast);
    let fellBehind: Attachment[] | null = null;
    for (const att of this.attachments.values()) {
      if (att.slot >= 0 && !this.liveAt(att, at)) {
        // Never so while the bookkeeping holds (an armed client is live); if it broke, the client starts afresh.
        this.resetArmed(att, data);
        (fellBehind ??= []).push(att);
        continue;
      }
      if (!att.ready || att.lagging) continue;
      if (att.position !== at) continue; // still catching up through its own path
      if (att.slot >= 0 && this.sentNatively(att, data)) continue;
      if (att.overWatermark()) {
        att.lagging = true;
        (fellBehind ??= []).push(att);
        continue;
      }
      att.client.sendOutput(data);
      att.position = at + data.length;
    }
    if (fast?.active) this.armFast(fast, at + data.length);
    return fellBehind ?? [];
  }

  // ---- the native output path (pty/FastOutput.ts) ----

  /** The chunk went out natively to `att` (whole, or begun: the rest is sent here); false if nothing of it did. */
  private sentNatively(att: Attachment, data: Buffer): boolean {
    const sent = this.fast!.sentTo(att.slot);
    if (sent <= 0) return false;
    att.position += data.length;
    this.fastStats.sent++;
    if (sent < frameLength(data.length)) {
      this.fastStats.partial++;
      this.disarm(att);
      this.finishFrame(att, data, sent);
    } else if (att.overWatermark()) {
      // The next chunk goes the usual way, which finds it lagging.
      this.disarm(att);
    }
    return true;
  }

  private liveAt(att: Attachment, at: number): boolean {
    return att.ready && !att.lagging && att.position === at;
  }

  /** An armed client out of step: what the reader began is finished, the slot let go, and the client resynchronised. */
  private resetArmed(att: Attachment, data: Buffer): void {
    const sent = this.fast!.sentTo(att.slot);
    this.disarm(att);
    if (sent > 0) this.finishFrame(att, data, sent);
    att.lagging = true;
  }

  /** Sends the rest of the chunk's frame, of which the reader wrote `sent` bytes (nothing if it wrote it all). */
  private finishFrame(att: Attachment, data: Buffer, sent: number): void {
    if (sent < frameLength(data.length)) att.client.sendFramed!(binaryFrame(data).subarray(sent));
  }

  /** Arms a free slot for each caught-up client whose socket has nothing of ours queued. */
  private armFast(fast: FastOutput, end: number): void {
    for (const att of this.attachments.values()) {
      if (att.slot >= 0 || !this.liveAt(att, end) || att.overWatermark()) continue;
      const slot = this.slots.indexOf(null);
      if (slot < 0) return;
      const fd = att.client.fastFd?.();
      if (fd === null || fd === undefined || !att.client.sendFramed || !fast.arm(slot, fd)) continue;
      att.slot = slot;
      this.slots[slot] = att;
      att.client.onWrite = () => this.disarm(att);
    }
  }

  private disarm(att: Attachment): void {
    if (att.slot < 0) return;
    this.fast?.disarm(att.slot);
    this.slots[att.slot] = null;
    att.slot = -1;
    att.client.onWrite = null;
  }

  /** Another terminal (or none): the slots of the previous one are let go. */
  private useFast(fast: FastOutput | null): void {
    for (const att of this.attachments.values()) this.disarm(att);
    this.fast = fast;
  }

  sendJson(frame: object): void {
    for (const att of this.attachments.values()) att.client.sendJson(frame);
  }
}
