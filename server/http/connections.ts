import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Logger } from '../common/log';

/** Request headers must have arrived within this (Node's default of 60 s lets a slow-loris hold sockets that long). */
export const HEADERS_TIMEOUT_MS = 15_000;
/** How often Node looks for requests whose headers are late (its default is 30 s). */
export const CONNECTIONS_CHECK_MS = 5_000;
/** A connection past the cap is answered 503 if it asks within this, and closed after it either way. */
export const OVER_CAP_GRACE_MS = 1_000;
/** What an over-cap client is told to wait, in seconds. */
export const OVER_CAP_RETRY_AFTER_S = 5;
/** Refusing stops once open connections fall to this share of the cap (no log line per connection at the edge). */
const RECOVER_SHARE = 0.9;

/**
 * Caps the daemon's open TCP connections (HTTP, WebSocket, the agents' hook
 * posts alike), so a flood of idle sockets cannot take the descriptors that
 * sessions need for their terminals and the database. A connection past the
 * cap is not counted: its request (or upgrade) is answered `503 unavailable`
 * with Retry-After, and the socket is closed within OVER_CAP_GRACE_MS. Open
 * connections, authenticated WebSockets among them, are never touched.
 */
export class ConnectionCap {
  private open = 0;
  private readonly over = new WeakSet<Duplex>();
  private refusing = false;
  private refused = 0;

  constructor(
    private readonly max: number,
    private readonly logger: Logger,
  ) {}

  /** Counts the server's connections from now on (before its own listener sees them). */
  attach(server: Server): void {
    server.prependListener('connection', (socket: Socket) => this.onConnection(socket));
  }

  /** Whether the request came on a connection past the cap: then answer it with `refusal` and nothing else. */
  isOver(req: IncomingMessage): boolean {
    return this.over.has(req.socket);
  }

  /** What a request or upgrade past the cap is answered: `503 unavailable`, with these words and headers. */
  get refusal(): { message: string; headers: Record<string, string> } {
    return { message: `the daemon has ${this.max} connections open (MAX_CONNECTIONS); try again later`, headers: { 'Retry-After': String(OVER_CAP_RETRY_AFTER_S) } };
  }

  private onConnection(socket: Socket): void {
    if (this.open < this.max) {
      this.open++;
      socket.once('close', () => this.onClose());
      return;
    }
    this.over.add(socket);
    this.refused++;
    // A fixed deadline, not an idle timeout: a client trickling bytes must not keep it open.
    const deadline = setTimeout(() => socket.destroy(), OVER_CAP_GRACE_MS);
    socket.once('close', () => clearTimeout(deadline));
    if (!this.refusing) {
      this.refusing = true;
      this.logger.warn({ maxConnections: this.max }, 'connection limit reached: new connections are answered 503 until some close');
    }
  }

  private onClose(): void {
    this.open--;
    if (this.refusing && this.open <= Math.floor(this.max * RECOVER_SHARE)) {
      this.refusing = false;
      this.logger.info({ maxConnections: this.max, open: this.open, refused: this.refused }, 'connections below the limit again');
      this.refused = 0;
    }
  }
}
