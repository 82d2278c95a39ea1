/** An attached client, as the domain sees it (the ws layer implements it). */
export interface SessionClient {
  readonly id: string;
  /** Output bytes: one binary frame, never split or merged with JSON. */
  sendOutput(data: Buffer): void;
  sendJson(frame: object): void;
  /** Bytes queued on the socket and not yet written to the network. */
  readonly bufferedAmount: number;
  close(code: number, reason: string): void;
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
    return this.attachments.delete(client.id);
  }

  noteInput(att: Attachment): void {
    att.lastInput = ++this.stamp;
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

  /** Sends live output to every ready client that keeps up; returns those that fell behind just now. */
  broadcast(data: Buffer, at: number): Attachment[] {
    let fellBehind: Attachment[] | null = null;
    for (const att of this.attachments.values()) {
      if (!att.ready || att.lagging) continue;
      if (att.position !== at) continue; // still catching up through its own path
      if (att.overWatermark()) {
        att.lagging = true;
        (fellBehind ??= []).push(att);
        continue;
      }
      att.client.sendOutput(data);
      att.position = at + data.length;
    }
    return fellBehind ?? [];
  }

  sendJson(frame: object): void {
    for (const att of this.attachments.values()) att.client.sendJson(frame);
  }
}
