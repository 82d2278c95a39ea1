import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import { WebSocket } from 'ws';
import { Logger } from '../../common/log';
import { InputTarget, NativeInput } from '../../pty/FastInput';
import { SessionClient } from '../../sessions/Clients';
import { Session } from '../../sessions/Session';
import { isValidSize } from '../../sessions/SessionPool';
import { ChatService } from '../../sessions/ChatService';

/** A WebSocket's TCP socket, with the libuv handle Node keeps private (its descriptor, its reads). */
type FastSocket = Socket & { _handle?: { fd?: number; reading?: boolean; readStop?(): number; readStart?(): number } | null };

/** How often keystrokes written natively are told to the session (activity, keep-alive), while they come. */
const INPUT_TELL_MS = 1000;

/** What `ws`'s frame parser (its Receiver, ws 8) shows of where it is: checked, never changed. */
interface ReceiverState {
  _state?: number;
  _bufferedBytes?: number;
  _fragmented?: number;
  _errored?: boolean;
  _writableState?: { needDrain?: boolean };
}

/** The terminal socket's side of a client: binary frames for output, JSON for the rest. */
export class WsClient implements SessionClient {
  readonly id = randomUUID();
  onWrite: (() => void) | null = null;
  /** Called after `ws` handled each read of the socket: the session may offer the native input path then. */
  onRead: (() => void) | null = null;
  private readonly socket: FastSocket | null;
  /** The native input reader of this socket: undefined until first wanted, null if there cannot be one. */
  private input: NativeInput | null | undefined;
  /** The native input path takes this client's frames now (Node does not read the socket meanwhile). */
  private inputOn = false;
  private onInput: ((rest: Buffer | undefined) => void) | null = null;
  private tellTimer: NodeJS.Timeout | null = null;
  /** Runs of keystrokes the native input path wrote, and of them those the terminal took only in part (tests, diagnostics). */
  readonly nativeStats = { runs: 0, rests: 0 };

  constructor(private readonly ws: WebSocket) {
    this.socket = (ws as unknown as { _socket?: FastSocket })._socket ?? null;
    const socket = this.socket;
    if (!socket) return;
    // Every write to the socket — ours, and ws's own (pongs, the close frame) — goes through here: the native output
    // path stops writing to the socket first, so that its frames and these never interleave.
    const write = socket.write;
    socket.write = (...args: unknown[]) => {
      this.onWrite?.();
      return (write as (...a: unknown[]) => boolean).apply(socket, args);
    };
    // However the socket ends (a terminate, an error, the daemon stopping), the native input reader lets go of it at
    // once: its own descriptor would hold the connection open, and until the 'close' event (after the loop's next
    // poll) it could still take a keystroke that ws, reading no more, would have dropped.
    const destroy = socket.destroy;
    socket.destroy = (...args: unknown[]) => {
      this.closeInput();
      return (destroy as (...a: unknown[]) => Socket).apply(socket, args);
    };
    socket.once('close', () => this.closeInput());
    // After ws's own listener (added when the socket was upgraded): its frames have been handled by now.
    socket.on('data', () => this.onRead?.());
  }

  /**
   * The native input path (pty/FastInput.ts): this socket's binary frames go
   * straight to `target` until it stops. Only between frames, with nothing of
   * the client's read but not yet handled by `ws`: then Node stops reading,
   * and reads again from exactly where the native reader stopped.
   */
  startInput(target: InputTarget, onInput: (rest: Buffer | undefined) => void): boolean {
    if (this.inputOn) return true;
    const s = this.socket;
    const handle = s?._handle;
    if (!s || !handle || !this.betweenFrames()) return false;
    if (this.input === undefined) this.input = NativeInput.open(handle.fd!, (runs, rest, stopped) => this.nativeInput(runs, rest, stopped));
    if (!this.input || !this.input.start(target)) return false;
    // Node's stream still counts itself as reading (handle.reading stays true), so it never starts reads itself
    // meanwhile: only resumeReading does.
    handle.readStop!();
    this.inputOn = true;
    this.onInput = onInput;
    this.tellTimer ??= setInterval(() => this.tellInput(), INPUT_TELL_MS).unref();
    return true;
  }

  stopInput(): void {
    if (!this.inputOn) return;
    this.tellInput();
    this.inputOn = false;
    this.input?.stop();
    this.endTelling();
    this.resumeReading();
  }

  /** The native input path takes this client's frames now. */
  get nativeInputOn(): boolean {
    return this.inputOn;
  }

  /** Tells the session of the keystrokes written natively since it was last told (every INPUT_TELL_MS, and at the end). */
  tellInput(): void {
    const runs = this.input?.take() ?? 0;
    if (runs <= 0) return;
    this.nativeStats.runs += runs;
    this.onInput?.(undefined);
  }

  private endTelling(): void {
    if (this.tellTimer) clearInterval(this.tellTimer);
    this.tellTimer = null;
  }

  /** `ws` is between frames, has nothing buffered, and Node's stream holds nothing unread: the socket is all there is. */
  private betweenFrames(): boolean {
    const s = this.socket!;
    const h = s._handle;
    const r = (this.ws as unknown as { _receiver?: ReceiverState })._receiver;
    return (
      this.ws.readyState === WebSocket.OPEN &&
      !s.destroyed &&
      !(s as { encrypted?: boolean }).encrypted &&
      typeof h?.fd === 'number' &&
      h.fd >= 0 &&
      h.reading === true &&
      typeof h.readStop === 'function' &&
      typeof h.readStart === 'function' &&
      s.readableFlowing === true &&
      s.readableLength === 0 &&
      r?._state === 0 &&
      r._bufferedBytes === 0 &&
      r._fragmented === 0 &&
      r._errored === false &&
      r._writableState?.needDrain === false
    );
  }

  private nativeInput(runs: number, rest: Buffer | undefined, stopped: boolean): void {
    if (stopped) {
      this.inputOn = false;
      this.endTelling();
    }
    if (runs < 0) {
      this.tellInput();
      this.socket?.destroy(); // the stream is no longer whole (see native/helper.c): end the connection
      return;
    }
    try {
      if (runs > 0 || rest) {
        this.nativeStats.runs += runs;
        if (rest) this.nativeStats.rests++;
        this.onInput?.(rest);
      }
    } catch (err) {
      const e = err as { code?: string; message: string };
      this.sendJson({ type: 'error', code: e.code ?? 'internal', message: e.message });
    } finally {
      if (stopped) this.resumeReading();
    }
  }

  private resumeReading(): void {
    const s = this.socket;
    const h = s?._handle;
    if (s && !s.destroyed && h?.reading === true) h.readStart?.();
  }

  private closeInput(): void {
    if (this.inputOn) this.tellInput();
    this.inputOn = false;
    this.endTelling();
    this.input?.close();
    this.input = null;
  }

  /** The socket's descriptor while nothing of ours is queued on it (see SessionClient.fastFd). */
  fastFd(): number | null {
    const s = this.socket;
    if (!s || this.ws.readyState !== WebSocket.OPEN || this.ws.bufferedAmount !== 0 || s.writableCorked || s.destroyed) return null;
    // Frames go to the descriptor as they are: never under TLS (agentd serves plain HTTP, but a socket may be wrapped).
    if ((s as { encrypted?: boolean }).encrypted) return null;
    const fd = s._handle?.fd;
    return typeof fd === 'number' && fd >= 0 ? fd : null;
  }

  sendFramed(frames: Buffer): void {
    this.socket?.write(frames);
  }

  sendOutput(data: Buffer): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(data, { binary: true });
  }

  sendJson(frame: object): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }
}

function errorFrame(client: WsClient, code: string, message: string): void {
  client.sendJson({ type: 'error', code, message });
}

/**
 * Parses query values the contract allows (digits only); `undefined` when
 * absent, NaN when malformed. A number too big to be exact stands for "beyond
 * any end": a `since` past the stream is a fresh attach, whatever its size.
 */
export function parseOffset(raw: string | null): number | undefined {
  if (raw === null) return undefined;
  return /^\d+$/.test(raw) ? Math.min(Number(raw), Number.MAX_SAFE_INTEGER) : NaN;
}

/**
 * Serves one terminal socket: attach (snapshot or resume), input (binary or
 * `input` frames), resize, ack, keep-alive. Bad frames get an `error` frame
 * and change nothing.
 */
export async function serveTerminal(
  ws: WebSocket,
  session: Session,
  opts: { since?: number; cols?: number; rows?: number },
  deps: { chat: ChatService; logger: Logger; onRevive: (s: Session) => Promise<void> },
): Promise<void> {
  const client = new WsClient(ws);
  const pending: Array<[Buffer, boolean]> = [];
  let attached = false;

  /** Input for the terminal; refused input (the program is not reading) gets an error frame. */
  const input = (data: Buffer | string) => {
    try {
      session.write(data, client);
    } catch (err) {
      const e = err as { code?: string; message: string };
      errorFrame(client, e.code ?? 'internal', e.message);
    }
  };
  const handle = (data: Buffer, isBinary: boolean) => {
    if (isBinary) return input(data);
    let frame: { type?: unknown; [k: string]: unknown };
    try {
      frame = JSON.parse(data.toString('utf8'));
    } catch {
      errorFrame(client, 'invalid_request', 'frame is not valid JSON');
      return;
    }
    if (!frame || typeof frame !== 'object') {
      errorFrame(client, 'invalid_request', 'frame must be a JSON object');
      return;
    }
    switch (frame.type) {
      case 'input':
        if (typeof frame.data !== 'string') return errorFrame(client, 'invalid_request', 'input.data must be a string');
        return input(frame.data);
      case 'resize':
        if (!isValidSize(frame.cols, frame.rows)) {
          return errorFrame(client, 'invalid_request', 'resize needs integer cols 1..1000 and rows 1..500');
        }
        session.resizeFrom(client, frame.cols as number, frame.rows as number);
        return;
      case 'ack':
        if (!Number.isSafeInteger(frame.offset) || (frame.offset as number) < 0) {
          return errorFrame(client, 'invalid_request', 'ack.offset must be a non-negative integer');
        }
        session.ack(client, frame.offset as number);
        return;
      case 'keep-alive':
        deps.chat.keepAlive(session, false).catch((err) => errorFrame(client, err.code ?? 'conflict', err.message));
        return;
      case 'auth':
        return; // already authenticated
      default:
        errorFrame(client, 'invalid_request', `unknown frame type ${JSON.stringify(frame.type)}`);
    }
  };

  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!attached) pending.push([data, isBinary]);
    else handle(data, isBinary);
  });
  client.onRead = () => attached && session.offerNativeInput(client);
  ws.on('close', () => session.detach(client));
  ws.on('error', (err) => deps.logger.debug({ err: err.message, sessionId: session.id }, 'terminal socket error'));

  try {
    await deps.onRevive(session);
  } catch (err) {
    errorFrame(client, (err as { code?: string }).code ?? 'internal', (err as Error).message);
  }
  if (ws.readyState !== WebSocket.OPEN) return;
  await session.attach(client, opts);
  attached = true;
  for (const [data, isBinary] of pending.splice(0)) handle(data, isBinary);
}
