/**
 * Shared helpers for the benchmarks: statistics, data files, child processes
 * with a request/reply channel, a daemon in its own process, and a minimal
 * terminal-socket client.
 *
 * The daemon runs in a child process so that it and the measuring client use
 * both cores, as in the research harness (docs/research, perf-limits.md). This
 * file is also that child's entry: `node dist/bench/lib.js daemon`.
 */
import { ChildProcess, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';

// ── statistics ───────────────────────────────────────────────────────────

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Nearest-rank percentile (p in 0..100) of unsorted samples. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** Rounds to `digits` significant decimals, keeping integers intact. */
export function round(n: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export function spread(xs: readonly number[], digits = 2): Spread {
  return { median: round(median(xs), digits), min: round(Math.min(...xs), digits), max: round(Math.max(...xs), digits) };
}

/** "12.3 [10.1..14.0]" */
export function fmt(s: Spread, unit = ''): string {
  return `${s.median}${unit} [${s.min}..${s.max}]`;
}

/** Polls `check` until it returns a value other than undefined/false/null. */
export async function waitFor<T>(check: () => T | undefined | null | false, ms: number, what: string, everyMs = 5): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

// ── machine ─────────────────────────────────────────────────────────────

function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(require.resolve(`${name}/package.json`), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** What the figures were measured on. */
/**
 * CPU time of a process (every thread) so far, ms, from /proc/PID/stat: in
 * clock ticks of 10 ms (USER_HZ is 100 on Linux), so read it over spans of
 * seconds, not milliseconds.
 */
export function processCpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / USER_HZ;
}
const USER_HZ = 100;

export function machineNotes(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    cpu: `${cpus.length} x ${cpus[0]?.model ?? 'unknown'}`,
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    loadavg: os.loadavg().map((l) => round(l, 2)),
    versions: Object.fromEntries(['node-pty', 'ws', 'better-sqlite3', '@xterm/headless'].map((p) => [p, packageVersion(p)])),
  };
}

// ── data files ──────────────────────────────────────────────────────────

const LINE_CHARS = 100;

/**
 * A file of `bytes` of base64 text in 100-character lines (plus newline) in
 * os.tmpdir(), made once and reused by later runs. Random, so it does not
 * compress to nothing in the store.
 */
export function base64File(bytes: number): string {
  const file = join(os.tmpdir(), `agentd-bench-b64-${bytes}.txt`);
  if (existsSync(file) && statSync(file).size === bytes) return file;
  // Written aside, then renamed: a run that is stopped, or one beside it, never sees half a file.
  const partial = `${file}.${process.pid}.partial`;
  const fd = openSync(partial, 'w');
  try {
    const blockLines = 10_000;
    for (let left = bytes; left > 0; ) {
      const text = randomBytes(blockLines * 75).toString('base64'); // 75 bytes -> 100 characters
      const lines: string[] = [];
      for (let i = 0; i < blockLines; i++) lines.push(text.slice(i * LINE_CHARS, (i + 1) * LINE_CHARS));
      const block = Buffer.from(lines.join('\n') + '\n');
      const part = block.length > left ? block.subarray(0, left) : block;
      writeSync(fd, part);
      left -= part.length;
    }
  } finally {
    closeSync(fd);
  }
  renameSync(partial, file);
  return file;
}

/** Bytes a terminal delivers for `file` catted through it: the line discipline turns each \n into \r\n. */
export function ttyBytesOf(file: string): number {
  const data = readFileSync(file);
  let newlines = 0;
  for (let i = data.indexOf(10); i !== -1; i = data.indexOf(10, i + 1)) newlines++;
  return data.length + newlines;
}

export function benchDir(name: string): string {
  return mkdtempSync(join(os.tmpdir(), `agentd-bench-${name}-`));
}

// ── child processes with request/reply over IPC ─────────────────────────

interface Reply {
  replyTo: number;
  ok: boolean;
  value?: unknown;
  error?: string;
}

/** A child node process that answers `{id, ...request}` messages with `{replyTo: id, ok, value|error}`. */
export class Child {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private exited = false;
  readonly exit: Promise<void>;
  private readyValue: Promise<unknown>;

  constructor(readonly proc: ChildProcess, readonly name: string) {
    let ready!: (v: unknown) => void;
    let failed!: (e: Error) => void;
    this.readyValue = new Promise((res, rej) => ((ready = res), (failed = rej)));
    proc.on('message', (msg: Reply & { type?: string; value?: unknown }) => {
      if (msg.type === 'ready') return ready(msg.value);
      const w = this.waiting.get(msg.replyTo);
      if (!w) return;
      this.waiting.delete(msg.replyTo);
      if (msg.ok) w.resolve(msg.value);
      else w.reject(new Error(`${name}: ${msg.error}`));
    });
    this.exit = new Promise((resolve) =>
      proc.on('exit', (code, signal) => {
        this.exited = true;
        const err = new Error(`${name} exited (code ${code}, signal ${signal})`);
        failed(err);
        for (const w of this.waiting.values()) w.reject(err);
        this.waiting.clear();
        resolve();
      }),
    );
  }

  /** Forks `script` (a compiled bench file) with `args`; resolves once it says it is ready. */
  static async start<T = unknown>(script: string, args: string[], opts: { execArgv?: string[]; name?: string } = {}): Promise<{ child: Child; ready: T }> {
    const proc = fork(script, args, { execArgv: opts.execArgv ?? [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
    const child = new Child(proc, opts.name ?? `${script} ${args.join(' ')}`);
    const ready = (await child.readyValue) as T;
    return { child, ready };
  }

  get pid(): number {
    return this.proc.pid!;
  }

  request<T = unknown>(type: string, body: Record<string, unknown> = {}): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`${this.name} is not running`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.proc.send({ id, type, ...body });
    });
  }

  /** Asks the child to stop, then ends it by pid if it does not within `ms`. */
  async stop(ms = 10_000): Promise<void> {
    if (this.exited) return;
    this.request('stop').catch(() => undefined);
    const timer = setTimeout(() => {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }, ms);
    await this.exit;
    clearTimeout(timer);
  }
}

type Handler = (msg: Record<string, unknown>) => unknown | Promise<unknown>;

/** The child side: answers requests with `handlers[type]`; `stop` runs `onStop` then exits. */
export function serveRequests(handlers: Record<string, Handler>, onStop: () => Promise<void> | void, ready: unknown): void {
  if (!process.send) throw new Error('not started with an IPC channel');
  const send = (m: unknown) => process.send!(m);
  process.on('message', async (msg: Record<string, unknown> & { id: number; type: string }) => {
    if (msg.type === 'stop') {
      try {
        await onStop();
      } finally {
        send({ replyTo: msg.id, ok: true });
        process.disconnect();
        process.exit(0);
      }
      return;
    }
    const handler = handlers[msg.type];
    try {
      if (!handler) throw new Error(`unknown request ${msg.type}`);
      send({ replyTo: msg.id, ok: true, value: await handler(msg) });
    } catch (err) {
      send({ replyTo: msg.id, ok: false, error: (err as Error).stack ?? String(err) });
    }
  });
  // The parent going away (crash, Ctrl-C) must not leave us behind.
  process.on('disconnect', () => void Promise.resolve(onStop()).finally(() => process.exit(0)));
  send({ type: 'ready', value: ready });
}

// ── the daemon in its own process ───────────────────────────────────────

export const BENCH_TOKEN = 'bench-token-0123456789abcdef';

export interface DaemonOptions {
  /** Agent profiles added to the config (name -> {command, args, env}). */
  agents?: Record<string, { command: string; args?: string[]; env?: Record<string, string> }>;
  /** Config overrides (e.g. maxConcurrentSessions). */
  config?: Record<string, unknown>;
  /** 'sqlite' (default: the real store, what users run) or 'memory'. */
  store?: 'sqlite' | 'memory';
  /** Node flags for the daemon process (e.g. --expose-gc). */
  execArgv?: string[];
}

export interface DaemonMemory {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  fds: number;
}

export interface DaemonHandle {
  pid: number;
  base: string;
  wsBase: string;
  root: string;
  token: string;
  child: Child;
  api<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; json: T }>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** Creates a session of `agent`; returns its id. */
  create(agent: string, extra?: Record<string, unknown>): Promise<string>;
  /** Memory of the daemon process; after a full GC of its main thread if started with --expose-gc, unless `gc` is false. */
  memory(gc?: boolean): Promise<DaemonMemory>;
  /** CPU time the daemon process has used so far (all threads), in ms. */
  cpuMs(): Promise<number>;
  /** Removes ended sessions and their stored history (between rounds: keeps the daemon's state and disk flat). */
  forgetEnded(): Promise<number>;
  stop(): Promise<void>;
}

/** Starts agentd (createApp, real sockets on 127.0.0.1 port 0) in a child process. */
export async function startDaemon(opts: DaemonOptions = {}): Promise<DaemonHandle> {
  const root = benchDir('root');
  const dataDir = benchDir('data');
  const spec = JSON.stringify({ root, dataDir, agents: opts.agents ?? {}, config: opts.config ?? {}, store: opts.store ?? 'sqlite' });
  const { child, ready } = await Child.start<{ port: number }>(join(__dirname, 'lib.js'), ['daemon', spec], { execArgv: opts.execArgv, name: 'daemon' });
  const base = `http://127.0.0.1:${ready.port}`;
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${BENCH_TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  };
  return {
    pid: child.pid,
    base,
    wsBase: `ws://127.0.0.1:${ready.port}`,
    root,
    token: BENCH_TOKEN,
    child,
    api,
    async create(agent, extra = {}) {
      const res = await api('POST', '/api/sessions', { agent, projectPath: root, ...extra });
      if (res.status !== 201) throw new Error(`create ${agent} failed: ${res.status} ${JSON.stringify(res.json)}`);
      return res.json.session.id as string;
    },
    memory: (gc = true) => child.request<DaemonMemory>('memory', { gc }),
    forgetEnded: () => child.request<number>('forget-ended'),
    cpuMs: async () => {
      const u = await child.request<NodeJS.CpuUsage>('cpu');
      return (u.user + u.system) / 1000;
    },
    async stop() {
      await child.stop();
      rmSync(root, { recursive: true, force: true });
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The child side of startDaemon. */
async function daemonMain(specJson: string): Promise<void> {
  // Required here, not at the top: the parent side of this file must not load the daemon.
  /* eslint-disable @typescript-eslint/no-var-requires */
  const { createApp } = require('../server/http/app') as typeof import('../server/http/app');
  const { testConfig } = require('../server/config/load') as typeof import('../server/config/load');
  const { silentLogger } = require('../server/common/log') as typeof import('../server/common/log');
  const { openStore } = require('../server/store/open') as typeof import('../server/store/open');
  const { MemoryStore } = require('../server/store/MemoryStore') as typeof import('../server/store/MemoryStore');
  /* eslint-enable @typescript-eslint/no-var-requires */
  const spec = JSON.parse(specJson) as { root: string; dataDir: string; agents: Record<string, unknown>; config: Record<string, unknown>; store: string };
  const config = testConfig({ dataDir: spec.dataDir, allowedRoots: [spec.root], port: 0, ...spec.config, agents: spec.agents });
  const logger = silentLogger();
  const store = spec.store === 'memory' ? new MemoryStore() : openStore(config, logger);
  const app = createApp(config, { logger, store, token: BENCH_TOKEN });
  await new Promise<void>((resolve) => app.server.listen(0, '127.0.0.1', () => resolve()));
  const gc = (globalThis as { gc?: () => void }).gc;
  let stopping: Promise<void> | null = null;
  const stop = () =>
    (stopping ??= (async () => {
      await app.dispose();
      store.close();
    })());
  serveRequests(
    {
      memory: (msg) => {
        if (gc && msg.gc !== false) {
          gc();
          gc(); // a second pass frees what the first one's finalizers released
        }
        const m = process.memoryUsage();
        let fds = -1;
        try {
          fds = readdirSync('/proc/self/fd').length;
        } catch {
          // Not Linux: no fd count.
        }
        return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, fds };
      },
      /** CPU of the whole process (every thread: the screen worker too), microseconds. */
      cpu: () => process.cpuUsage(),
      'forget-ended': () => {
        let n = 0;
        for (const s of app.pool.list()) {
          if (s.isLive()) continue;
          store.deleteSession(s.id);
          app.pool.forget(s.id);
          n++;
        }
        (store as { flush?: () => void }).flush?.();
        return n;
      },
    },
    stop,
    { port: (app.server.address() as AddressInfo).port },
  );
}

// ── a terminal-socket client ────────────────────────────────────────────

const HEAD_CHARS = 4096;

/**
 * A lean client of `/api/sessions/:id/ws`: keeps the stream position
 * (`attached`/`snapshot` offsets + binary bytes), acks every `ackEvery`
 * bytes like a real client, and calls `onBytes` for each output frame.
 */
export class TermClient {
  position = 0;
  snapshots = 0;
  /** Snapshots after the first: the server resynchronised a lagging client. */
  resyncs = 0;
  exited = false;
  closed = false;
  snapshotText = '';
  attached = false;
  /** The first output the socket carried (snapshot text, then bytes): to see a ready marker that came before `onBytes` was set. */
  head = '';
  onBytes: ((data: Buffer) => void) | null = null;
  private lastAck = 0;

  private constructor(readonly ws: WebSocket, private readonly ackEvery: number) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        this.position += data.length;
        if (this.ackEvery && this.position - this.lastAck >= this.ackEvery) {
          this.lastAck = this.position;
          ws.send(`{"type":"ack","offset":${this.position}}`);
        }
        if (this.head.length < HEAD_CHARS) this.head += data.toString('latin1', 0, HEAD_CHARS);
        this.onBytes?.(data);
        return;
      }
      const frame = JSON.parse(data.toString('utf8')) as { type: string; offset?: number; data?: string };
      if (frame.type === 'attached') {
        this.attached = true;
        this.position = frame.offset!;
      } else if (frame.type === 'snapshot') {
        if (this.snapshots++ > 0) this.resyncs++;
        this.position = frame.offset!;
        this.snapshotText = frame.data ?? '';
        if (this.head.length < HEAD_CHARS) this.head += this.snapshotText.slice(0, HEAD_CHARS);
      } else if (frame.type === 'exit') {
        this.exited = true;
      }
    });
    ws.on('close', () => (this.closed = true));
    ws.on('error', () => undefined);
  }

  static async connect(d: DaemonHandle, sessionId: string, opts: { ackEvery?: number } = {}): Promise<TermClient> {
    const ws = new WebSocket(`${d.wsBase}/api/sessions/${sessionId}/ws`, {
      headers: { authorization: `Bearer ${d.token}` },
      perMessageDeflate: false,
      maxPayload: 64 * 1024 * 1024,
    });
    const client = new TermClient(ws, opts.ackEvery ?? 256 * 1024);
    await waitFor(() => client.snapshots > 0 || client.closed, 10_000, 'attach and snapshot', 1);
    if (client.closed) throw new Error(`socket to ${sessionId} closed before its snapshot`);
    return client;
  }

  send(data: Buffer | string): void {
    this.ws.send(typeof data === 'string' ? Buffer.from(data) : data, { binary: true });
  }

  close(): void {
    this.ws.terminate();
  }
}

if (require.main === module && process.argv[2] === 'daemon') {
  daemonMain(process.argv[3]).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
