import { execFile } from 'node:child_process';
import { createServer, IncomingHttpHeaders, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { existsSync, writeFileSync } from 'node:fs';
import { DaemonProcess, startDaemonProcess } from '../../helpers/daemonProcess';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';

const CLI = join(__dirname, '..', '..', '..', 'dist', 'server', 'cli', 'index.js');
let d: DaemonProcess | null = null;
let impostor: Server | null = null;
afterAll(async () => {
  await d?.kill('SIGKILL');
  impostor?.close();
  cleanupTmp();
});

/** Runs the CLI with the daemon's environment; exit code and output. */
function cli(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, API_TOKEN: '', ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('agentd sessions (the CLI)', () => {
  it('lists the running daemon\'s sessions, says why on a refused token, and never sends the token to a port a dead daemon left', async () => {
    const dataDir = tmpdir('cli-data');
    const root = tmpdir('cli-root');
    d = await startDaemonProcess({ dataDir, root });
    const s = (await d.api('POST', '/api/sessions', { agent: 'shell' })).json.session;
    const env = { DATA_DIR: dataDir, ALLOWED_ROOTS: root, CONFIG_FILE: join(dataDir, 'test-config.json') };

    const listed = await cli(['sessions'], env);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain(`${s.id}\tshell\t`);

    const refused = await cli(['sessions', '--json'], { ...env, API_TOKEN: 'x'.repeat(32) });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('HTTP 401');

    // The daemon dies; another program takes a port and the left-behind port file is made to name it.
    expect(await d.kill('SIGKILL')).toBe(null);
    d = null;
    const seen: IncomingHttpHeaders[] = [];
    impostor = createServer((req, res) => {
      seen.push(req.headers);
      res.end('{"sessions":[]}');
    });
    await new Promise<void>((r) => impostor!.listen(0, '127.0.0.1', r));
    writeFileSync(join(dataDir, 'agentd.port'), String((impostor.address() as AddressInfo).port));
    const stale = await cli(['sessions'], env);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain('was left by a daemon that is no longer running');
    expect(seen).toEqual([]);
  }, 30_000);
});

describe('a starting daemon and the port file', () => {
  it('removes a port file left by a crash as soon as it holds the data directory, before it listens (or fails to)', async () => {
    const dataDir = tmpdir('port-data');
    const root = tmpdir('port-root');
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const taken = (busy.address() as AddressInfo).port;
    writeFileSync(join(dataDir, 'agentd.port'), '4242\n'); // what a crashed daemon left
    const main = join(__dirname, '..', '..', '..', 'dist', 'server', 'main.js');
    const code = await new Promise<number | null>((resolve) => {
      execFile(process.execPath, [main], { env: { ...process.env, DATA_DIR: dataDir, ALLOWED_ROOTS: root, PORT: String(taken), HOST: '127.0.0.1', API_TOKEN: '', LOG_LEVEL: 'silent' } }, (err) =>
        resolve(err ? ((err as { code?: number }).code ?? 1) : 0),
      );
    });
    busy.close();
    expect(code).not.toBe(0); // the port was taken
    expect(existsSync(join(dataDir, 'agentd.port'))).toBe(false);
  }, 30_000);
});

describe('agentd doctor', () => {
  it('reports a bad configuration as a FAIL line and still looks for the built-in agents', async () => {
    const dir = tmpdir('doctor');
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ agents: { y: { command: '../x' } } }));
    const res = await cli(['doctor'], { DATA_DIR: join(dir, 'data'), ALLOWED_ROOTS: dir, CONFIG_FILE: join(dir, 'bad.json') });
    expect(res.code).toBe(1);
    expect(res.stdout).toMatch(/^FAIL {2}config valid — invalid configuration:\n.*agents\.y\.command: \.\.\/x must be an absolute path/m);
    expect(res.stdout).toMatch(/^ok {4}agent shell: /m);
  }, 30_000);
});
