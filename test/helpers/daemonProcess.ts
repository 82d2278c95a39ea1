import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { http, Reply } from './http';
import { waitFor } from './wait';
import { TestSocket } from './ws';
import { TEST_SHELL } from './app';

const MAIN = resolve(__dirname, '../../dist/server/main.js');

export interface DaemonProcess {
  child: ChildProcess;
  pid: number;
  base: string;
  token: string;
  output(): string;
  api(method: string, path: string, body?: unknown, opts?: Parameters<typeof http>[3]): Promise<Reply>;
  socket(path: string): TestSocket;
  /** Sends a signal and waits for the process to exit. */
  kill(signal: NodeJS.Signals): Promise<number | null>;
}

/**
 * The real daemon as users run it (`node dist/server/main.js`), on port 0,
 * with its own DATA_DIR: for crash and restart tests.
 */
export async function startDaemonProcess(opts: { dataDir: string; root: string; agents?: Record<string, unknown>; env?: Record<string, string> }): Promise<DaemonProcess> {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run "npm run build" (npm test does it first)`);
  const portFile = join(opts.dataDir, 'agentd.port');
  rmSync(portFile, { force: true });
  const configFile = join(opts.dataDir, 'test-config.json');
  writeFileSync(configFile, JSON.stringify({ agents: { shell: TEST_SHELL, ...(opts.agents ?? {}) } }));
  let out = '';
  const child = spawn(process.execPath, [MAIN], {
    env: {
      ...process.env,
      DATA_DIR: opts.dataDir,
      PORT: '0',
      HOST: '127.0.0.1',
      ALLOWED_ROOTS: opts.root,
      CONFIG_FILE: configFile,
      LOG_LEVEL: 'info',
      API_TOKEN: '',
      ...(opts.env ?? {}),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  let exitCode: number | null | undefined;
  child.on('exit', (code) => (exitCode = code));
  await waitFor(() => existsSync(portFile) || exitCode !== undefined, 20_000, 'the daemon to listen');
  if (exitCode !== undefined) throw new Error(`daemon exited with ${exitCode}: ${out}`);
  const port = Number(readFileSync(portFile, 'utf8').trim());
  const token = readFileSync(join(opts.dataDir, 'token'), 'utf8').trim();
  const base = `http://127.0.0.1:${port}`;
  return {
    child,
    pid: child.pid!,
    base,
    token,
    output: () => out,
    api: (method, path, body, o = {}) => http(base, method, path, { token, body, ...o }),
    socket: (path) => TestSocket.connect(`ws://127.0.0.1:${port}${path}`, { token }),
    async kill(signal) {
      if (exitCode !== undefined) return exitCode;
      child.kill(signal);
      await waitFor(() => exitCode !== undefined, 20_000, 'the daemon to exit');
      return exitCode!;
    },
  };
}
