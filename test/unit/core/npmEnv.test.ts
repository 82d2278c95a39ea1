import { withoutNpmScriptEnv } from '../../../server/common/npmEnv';

describe('the environment npm gives a script', () => {
  const npmRun = {
    npm_lifecycle_event: 'start',
    npm_config_user_agent: 'npm/11.0.0 node/v20',
    npm_package_name: 'agentd',
    INIT_CWD: '/home/me/agentd',
    NODE: '/usr/bin/node',
    COLOR: '1',
    EDITOR: 'vim',
    HOME: '/home/me',
    SHELL: '/bin/zsh',
    PATH: '/home/me/agentd/node_modules/.bin:/home/me/node_modules/.bin:/node_modules/.bin:/usr/lib/node_modules/npm/node_modules/@npmcli/run-script/lib/node-gyp-bin:/home/me/.local/bin:/usr/bin:/bin',
  };

  it('is taken back to the user\'s own: npm_* and npm\'s other variables dropped, npm\'s PATH folders removed', () => {
    expect(withoutNpmScriptEnv(npmRun)).toEqual({ EDITOR: 'vim', HOME: '/home/me', SHELL: '/bin/zsh', PATH: '/home/me/.local/bin:/usr/bin:/bin' });
  });

  it('is left alone when npm did not start the process, node_modules/.bin in PATH included', () => {
    const own = { HOME: '/home/me', NODE: '/opt/node', PATH: './node_modules/.bin:/usr/bin' };
    expect(withoutNpmScriptEnv(own)).toBe(own);
  });
});
