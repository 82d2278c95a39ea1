import type { AddressInfo } from 'node:net';
import { testConfig } from '../../server/config/load';
import { Config } from '../../server/config/schema';
import { silentLogger } from '../../server/common/log';
import { App, AppDeps, createApp } from '../../server/http/app';
import { MemoryStore } from '../../server/store/MemoryStore';
import { SessionStore } from '../../server/store/SessionStore';
import { http, Reply } from './http';
import { tmpdir } from './tmp';
import { TestSocket } from './ws';

export const TEST_TOKEN = 'test-token-0123456789abcdef';
export const TEST_SHELL = { command: 'bash', args: ['--norc', '--noprofile', '-i'], env: { PS1: '$ ' } };

export interface TestDaemon {
  app: App;
  config: Config;
  root: string;
  base: string;
  wsBase: string;
  store: SessionStore;
  api(method: string, path: string, body?: unknown, opts?: Parameters<typeof http>[3]): Promise<Reply>;
  socket(path: string, opts?: Parameters<typeof TestSocket.connect>[1]): TestSocket;
  /** Creates a session and returns its JSON. */
  create(body: Record<string, unknown>): Promise<any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  dispose(): Promise<void>;
}

/** A real daemon (real PTYs, real sockets) on 127.0.0.1 port 0, built in-process. */
export async function startDaemon(overrides: Record<string, unknown> = {}, store?: SessionStore, deps: Partial<Pick<AppDeps, 'headersTimeoutMs' | 'logger'>> = {}): Promise<TestDaemon> {
  const root = tmpdir('root');
  const dataDir = tmpdir('data');
  // The machine's own rc files may run slow hooks (pyenv rehash): tests use a plain bash.
  const agents = { shell: TEST_SHELL, ...((overrides.agents as object) ?? {}) };
  const config = testConfig({ dataDir, allowedRoots: [root], port: 0, ...overrides, agents });
  const theStore = store ?? new MemoryStore();
  const app = createApp(config, { logger: silentLogger(), store: theStore, token: TEST_TOKEN, ...deps });
  await new Promise<void>((resolve) => app.server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = app.server.address() as AddressInfo;
  const base = `http://127.0.0.1:${port}`;
  const sockets: TestSocket[] = [];
  const daemon: TestDaemon = {
    app,
    config,
    root,
    base,
    wsBase: `ws://127.0.0.1:${port}`,
    store: theStore,
    api: (method, path, body, opts = {}) => http(base, method, path, { token: TEST_TOKEN, body, ...opts }),
    socket: (path, opts = { token: TEST_TOKEN }) => {
      const s = TestSocket.connect(`ws://127.0.0.1:${port}${path}`, opts);
      sockets.push(s);
      return s;
    },
    async create(body) {
      const res = await daemon.api('POST', '/api/sessions', { projectPath: root, ...body });
      if (res.status !== 201) throw new Error(`create failed: ${res.status} ${res.text}`);
      return res.json.session;
    },
    async dispose() {
      for (const s of sockets) s.ws.terminate();
      await app.dispose();
      theStore.close();
    },
  };
  return daemon;
}
