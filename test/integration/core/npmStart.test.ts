import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DaemonProcess, startDaemonProcess } from '../../helpers/daemonProcess';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';

/**
 * `npm start` puts the package's node_modules/.bin first on PATH (where its
 * devDependencies' claude and codex live) and adds npm_* variables: the daemon
 * must find agents, and start sessions, as from the user's own terminal.
 */
let d: DaemonProcess | null = null;
afterAll(async () => {
  await d?.kill('SIGTERM');
  cleanupTmp();
});

describe('started by npm', () => {
  it('looks agents up and starts sessions without npm\'s PATH folders and variables', async () => {
    const pkg = tmpdir('pkg');
    const bin = join(pkg, 'node_modules', '.bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'claude'), '#!/bin/sh\necho "9.9.9 (the package\'s own claude)"\n');
    chmodSync(join(bin, 'claude'), 0o755);
    d = await startDaemonProcess({
      dataDir: tmpdir('data'),
      root: tmpdir('root'),
      env: { npm_lifecycle_event: 'start', npm_config_user_agent: 'npm/11', INIT_CWD: pkg, PATH: `${bin}:${process.env.PATH}` },
    });
    const claude = (await d.api('GET', '/api/health')).json.agents.claude;
    expect(claude.version ?? null).not.toBe('9.9.9 (the package\'s own claude)');

    const s = (await d.api('POST', '/api/sessions', { agent: 'shell' })).json.session;
    await d.api('POST', `/api/sessions/${s.id}/input`, { data: 'echo "npm-vars=$(env | grep -c -e ^npm_ -e ^INIT_CWD=) bin-in-path=$(echo $PATH | grep -c node_modules/.bin)"\r' });
    const line = await waitFor(async () => /npm-vars=(\d+) bin-in-path=(\d+)/.exec((await d!.api('GET', `/api/sessions/${s.id}/history`)).text), 5_000, 'the shell to answer');
    expect({ npmVars: line[1], binInPath: line[2] }).toEqual({ npmVars: '0', binInPath: '0' });
  }, 30_000);
});
