import WebSocket from 'ws';
import { waitFor } from './wait';

/** A test client for the terminal and chat sockets: collects frames, waits on them. */
export class TestSocket {
  readonly frames: Array<{ json?: any; bytes?: Buffer }> = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  private chunks: Buffer[] = [];
  private joined: Buffer | null = Buffer.alloc(0);
  /** Every output byte received so far (joined lazily: a flood arrives in thousands of frames). */
  get output(): Buffer {
    if (!this.joined) {
      this.joined = Buffer.concat(this.chunks);
      this.chunks = [this.joined];
    }
    return this.joined;
  }
  closeCode: number | null = null;
  opened = false;
  unexpected: { status: number; body: string } | null = null;

  constructor(readonly ws: WebSocket) {
    ws.on('open', () => (this.opened = true));
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        this.frames.push({ bytes: data.length < 65536 ? data : undefined });
        this.chunks.push(data);
        this.joined = null;
      } else {
        this.frames.push({ json: JSON.parse(data.toString('utf8')) });
      }
    });
    ws.on('close', (code) => (this.closeCode = code));
    ws.on('error', () => undefined);
    ws.on('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        this.unexpected = { status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') };
        this.closeCode = -1;
      });
    });
  }

  /** `zeroMask`: frames go with a mask of zeros, so their payloads are on the wire as they are. */
  static connect(url: string, opts: { token?: string; headers?: Record<string, string>; origin?: string; zeroMask?: boolean } = {}): TestSocket {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const generateMask = opts.zeroMask ? (mask: Buffer) => void mask.fill(0) : undefined;
    return new TestSocket(new WebSocket(url, { headers, origin: opts.origin, maxPayload: 64 * 1024 * 1024, generateMask }));
  }

  json(): any[] { // eslint-disable-line @typescript-eslint/no-explicit-any
    return this.frames.filter((f) => f.json).map((f) => f.json);
  }

  async nextJson(match: (f: any) => boolean, ms = 10_000): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
    return waitFor(() => this.json().find(match), ms, 'a matching frame');
  }

  async waitOutput(text: string | RegExp, ms = 10_000): Promise<void> {
    let checked = 0;
    await waitFor(() => {
      const out = this.output;
      // Only the new bytes (and a little before, for a match split across frames) need looking at.
      const from = Math.max(0, checked - 4096);
      checked = out.length;
      const tail = out.subarray(from).toString('utf8');
      return typeof text === 'string' ? tail.includes(text) : text.test(tail);
    }, ms, `output ${text}`);
  }

  async waitOpen(ms = 5_000): Promise<void> {
    await waitFor(() => this.opened || this.closeCode !== null, ms, 'open');
  }

  async waitClose(ms = 10_000): Promise<number> {
    return waitFor(() => this.closeCode, ms, 'close');
  }

  send(frame: object): void {
    this.ws.send(JSON.stringify(frame));
  }

  sendBytes(data: string | Buffer): void {
    this.ws.send(Buffer.from(data), { binary: true });
  }

  close(): void {
    this.ws.close();
  }
}
