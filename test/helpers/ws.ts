import WebSocket from 'ws';
import { waitFor } from './wait';

/** A test client for the terminal and chat sockets: collects frames, waits on them. */
export class TestSocket {
  readonly frames: Array<{ json?: any; bytes?: Buffer }> = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  output = Buffer.alloc(0);
  closeCode: number | null = null;
  opened = false;
  unexpected: { status: number; body: string } | null = null;

  constructor(readonly ws: WebSocket) {
    ws.on('open', () => (this.opened = true));
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        this.frames.push({ bytes: data });
        this.output = Buffer.concat([this.output, data]);
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

  static connect(url: string, opts: { token?: string; headers?: Record<string, string>; origin?: string } = {}): TestSocket {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    return new TestSocket(new WebSocket(url, { headers, origin: opts.origin, maxPayload: 64 * 1024 * 1024 }));
  }

  json(): any[] { // eslint-disable-line @typescript-eslint/no-explicit-any
    return this.frames.filter((f) => f.json).map((f) => f.json);
  }

  async nextJson(match: (f: any) => boolean, ms = 10_000): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
    return waitFor(() => this.json().find(match), ms, 'a matching frame');
  }

  async waitOutput(text: string | RegExp, ms = 10_000): Promise<void> {
    await waitFor(() => (typeof text === 'string' ? this.output.toString('utf8').includes(text) : text.test(this.output.toString('utf8'))), ms, `output ${text}`);
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
