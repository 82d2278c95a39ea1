import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, ENV_KEYS, loadConfig } from '../../../server/config/load';
import { AgentRegistry, childEnv, resolveCommand } from '../../../server/agents/profiles';
import { tokenMatches, hostNameOf } from '../../../server/http/auth';

const dir = mkdtempSync(join(tmpdir(), 'agentd-cfg-'));

describe('configuration', () => {
  it('has the contract defaults with no file and no variables', () => {
    const c = loadConfig({ HOME: dir });
    expect(c).toMatchObject({ host: '127.0.0.1', port: 3000, dataDir: join(dir, '.agentd'), maxConcurrentSessions: 10, maxConnections: 1000, sessionTimeoutHours: 24, sessionWarningHours: 20, idleTimeoutHours: 0, maxMemoryPerSessionMB: 500, maxTotalMemoryGB: 2, cpuUsageLimitPercent: 80, cpuSustainSeconds: 60, healthCheckIntervalSeconds: 30, maxSessionHistoryMB: 50, chatWaitSeconds: 120, logLevel: 'info' });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('documents every variable it reads in .env.example, with its default', () => {
    const example = readFileSync(join(__dirname, '../../../.env.example'), 'utf8');
    const documented = new Set([...example.matchAll(/^# ([A-Z_]+)=/gm)].map((m) => m[1]));
    expect([...documented].sort()).toEqual(Object.keys(ENV_KEYS).sort());
    expect(example).toContain('# MAX_CONNECTIONS=1000\n');
  });

  it('names every bad key at once', () => {
    try {
      loadConfig({ HOME: dir, PORT: 'eighty', MAX_CONCURRENT_SESSIONS: '0', LOG_LEVEL: 'loud', ALLOWED_ROOTS: 'relative' });
      throw new Error('should have thrown');
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const msg = (err as Error).message;
      for (const key of ['PORT', 'MAX_CONCURRENT_SESSIONS', 'LOG_LEVEL']) expect(msg).toContain(key);
    }
  });

  it('names a warning past the lifetime with another bad key too', () => {
    expect(() => loadConfig({ HOME: dir, PORT: 'abc', SESSION_WARNING_HOURS: '30' })).toThrow(/PORT[\s\S]*SESSION_WARNING_HOURS: must be less than SESSION_TIMEOUT_HOURS \(24\)/);
    expect(() => loadConfig({ HOME: dir, SESSION_WARNING_HOURS: '30' })).toThrow('SESSION_WARNING_HOURS: must be less than SESSION_TIMEOUT_HOURS (24)');
  });

  it('refuses time settings past their ceiling (a date that cannot be written, a timer that overflows)', () => {
    const env = { HOME: dir, SESSION_TIMEOUT_HOURS: '1e12', HEALTH_CHECK_INTERVAL_SECONDS: '3000000', CHAT_WAIT_SECONDS: '1e9', RETENTION_DAYS: '1e9' };
    expect(() => loadConfig(env)).toThrow(
      /SESSION_TIMEOUT_HOURS: must be at most 8760 \(a year\)[\s\S]*HEALTH_CHECK_INTERVAL_SECONDS: must be at most 86400 \(a day\)[\s\S]*CHAT_WAIT_SECONDS[\s\S]*RETENTION_DAYS/,
    );
    expect(loadConfig({ HOME: dir, SESSION_TIMEOUT_HOURS: '8760', SESSION_WARNING_HOURS: '8000', HEALTH_CHECK_INTERVAL_SECONDS: '86400' }).sessionTimeoutHours).toBe(8760);
  });

  it('says that ~ and $VARIABLES are not expanded in DATA_DIR and ALLOWED_ROOTS, and where a missing root came from', () => {
    const problems = (env: NodeJS.ProcessEnv) => {
      try {
        loadConfig({ HOME: dir, ...env });
      } catch (err) {
        return (err as ConfigError).problems;
      }
      return [];
    };
    expect(problems({ DATA_DIR: '~/data' })).toEqual([expect.stringMatching(/^DATA_DIR: ~\/data is not expanded: .*give an absolute path$/)]);
    expect(problems({ ALLOWED_ROOTS: '$HOME' })).toEqual([expect.stringMatching(/^ALLOWED_ROOTS: \$HOME is not expanded: /)]);
    const file = join(dir, 'roots.json');
    writeFileSync(file, JSON.stringify({ allowedRoots: ['/srv/no-such-root'] }));
    expect(problems({ CONFIG_FILE: file })).toEqual(['CONFIG_FILE allowedRoots: /srv/no-such-root does not exist (create it first)']);
    expect(problems({ ALLOWED_ROOTS: '/srv/no-such-root' })).toEqual(['ALLOWED_ROOTS: /srv/no-such-root does not exist (create it first)']);
  });

  it('lets the environment win over CONFIG_FILE', () => {
    const file = join(dir, 'agentd.json');
    writeFileSync(file, JSON.stringify({ allowedRoots: ['/tmp'], agents: { py: { command: 'python3', args: ['-i'] } } }));
    const c = loadConfig({ HOME: dir, CONFIG_FILE: file, ALLOWED_ROOTS: dir });
    expect(c.allowedRoots).toEqual([dir]);
    expect(c.agents.py.command).toBe('python3');
  });

  it('names every bad key at once, profiles and roots included', () => {
    const file = join(dir, 'several.json');
    writeFileSync(file, JSON.stringify({ agents: { newbie: { args: ['-x'] }, py: { command: 'python3', promptPattern: '([' } } }));
    let message = '';
    try {
      loadConfig({ HOME: dir, CONFIG_FILE: file, PORT: 'nope', SESSION_WARNING_HOURS: '30', ALLOWED_ROOTS: '/definitely/missing' });
    } catch (err) {
      message = (err as Error).message;
    }
    for (const part of ['PORT', 'newbie.command', 'py.promptPattern', '/definitely/missing']) expect(message).toContain(part);
  });

  it('names every problem of one profile, its command too when another field is bad', () => {
    const file = join(dir, 'two-problems.json');
    writeFileSync(file, JSON.stringify({ agents: { y: { command: '../bin/a', idleMs: -5 }, z: { idleMs: 'soon' } } }));
    let message = '';
    try {
      loadConfig({ HOME: dir, CONFIG_FILE: file });
    } catch (err) {
      message = (err as Error).message;
    }
    for (const part of ['agents.y.idleMs', 'agents.y.command: ../bin/a must be an absolute path or a bare program name', 'agents.z.idleMs', 'agents.z.command: is required for a new profile']) {
      expect(message).toContain(part);
    }
  });

  it('names a profile\'s problems even when the file is wrong elsewhere too', () => {
    const file = join(dir, 'mixed.json');
    writeFileSync(file, JSON.stringify({ agents: { x: { args: ['a'] } }, allowedRoots: '/tmp' }));
    expect(() => loadConfig({ HOME: dir, CONFIG_FILE: file })).toThrow(/CONFIG_FILE allowedRoots: .*\n.*CONFIG_FILE agents\.x\.command: is required for a new profile/s);
  });

  it('refuses an unknown top-level key in CONFIG_FILE, naming the known ones (a misspelt allowedRoots would leave all of $HOME allowed)', () => {
    const file = join(dir, 'typo.json');
    writeFileSync(file, JSON.stringify({ allowedRoot: ['/tmp'] }));
    expect(() => loadConfig({ HOME: dir, CONFIG_FILE: file })).toThrow('CONFIG_FILE: unknown key allowedRoot (known: agents, allowedRoots, allowedOrigins, notifier)');
  });

  it('refuses an ALLOWED_ORIGINS value that is not an exact origin (it could never match)', () => {
    let message = '';
    try {
      loadConfig({ HOME: dir, ALLOWED_ORIGINS: 'notanorigin,http://x:1/path,https://ok.example,http://localhost:3000,https://a.example/' });
    } catch (err) {
      message = (err as Error).message;
    }
    for (const bad of ['notanorigin', 'http://x:1/path', 'https://a.example/']) expect(message).toContain(`${bad} is not an origin`);
    for (const good of ['https://ok.example ', 'http://localhost:3000 ']) expect(message).not.toContain(good);
    expect(loadConfig({ HOME: dir, ALLOWED_ORIGINS: 'https://ok.example,http://localhost:3000' }).allowedOrigins).toEqual(['https://ok.example', 'http://localhost:3000']);
  });

  it('refuses an unknown key in a profile', () => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ agents: { py: { command: 'python3', shell: 'rm -rf /' } } }));
    expect(() => loadConfig({ HOME: dir, CONFIG_FILE: file })).toThrow(/agents/);
  });
});

describe('profiles refused at load', () => {
  function problemsOf(agents: unknown): string[] {
    const file = join(dir, `refused-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, typeof agents === 'string' ? agents : JSON.stringify({ agents }));
    try {
      loadConfig({ HOME: dir, CONFIG_FILE: file });
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as ConfigError).problems;
    }
    throw new Error('loadConfig accepted the file');
  }

  it('refuses a promptPattern with nested quantifiers, naming the key and why', () => {
    expect(problemsOf({ py: { command: 'python3', promptPattern: '^(a+)+$' } })).toEqual([
      `CONFIG_FILE agents.py.promptPattern: "(a+)+" repeats a group that holds a quantifier itself: nested quantifiers can take exponential time on an agent's output`,
    ]);
  });

  it('refuses a profile named __proto__ (as the file writes it, before it could vanish), constructor or prototype', () => {
    const reserved = 'cannot name a profile (__proto__, constructor, prototype are reserved in JavaScript objects)';
    expect(problemsOf('{"agents": {"__proto__": {"command": "python3"}}}')).toEqual([`CONFIG_FILE agents.__proto__: ${reserved}`]);
    expect(problemsOf({ constructor: { command: 'python3' }, prototype: { command: 'python3' } })).toEqual([
      `CONFIG_FILE agents.constructor: ${reserved}`,
      `CONFIG_FILE agents.prototype: ${reserved}`,
    ]);
  });

  it('refuses a relative command path with the words session create would use', () => {
    expect(problemsOf({ sh: { command: '../../bin/bash' } })).toEqual(['CONFIG_FILE agents.sh.command: ../../bin/bash must be an absolute path or a bare program name']);
    const reg = new AgentRegistry({ sh: { command: '../../bin/bash' } });
    expect(() => resolveCommand(reg.get('sh'))).toThrow('sh: command ../../bin/bash must be an absolute path or a bare program name');
  });

  it('names all three at once, with the other problems of the file', () => {
    const problems = problemsOf('{"agents": {"__proto__": {"command": "x"}, "re": {"command": "./re", "promptPattern": "(a*)*"}, "newbie": {}}}');
    for (const key of ['agents.__proto__:', 'agents.re.command:', 'agents.re.promptPattern:', 'agents.newbie.command:']) {
      expect(problems.filter((p) => p.includes(key))).toHaveLength(1);
    }
  });

  it('still accepts bare names, absolute paths and prompt patterns without nesting', () => {
    const file = join(dir, 'fine.json');
    writeFileSync(file, JSON.stringify({ agents: { py: { command: 'python3', promptPattern: '^>>> ?$' }, sh: { command: '/bin/bash', promptPattern: '^[a-z]+@[^:]+:.*[$#] ?$' }, 'my.agent': { command: 'x' } } }));
    expect(Object.keys(loadConfig({ HOME: dir, CONFIG_FILE: file }).agents)).toEqual(['py', 'sh', 'my.agent']);
  });
});

describe('agent profiles', () => {
  it('overrides only the given fields of a built-in profile', () => {
    const reg = new AgentRegistry({ claude: { command: '/opt/claude', env: { X: '1' } } });
    const claude = reg.get('claude');
    expect(claude.kind).toBe('claude');
    expect(claude.command).toBe('/opt/claude');
    expect(claude.env).toMatchObject({ X: '1', DISABLE_AUTOUPDATER: '1' });
    expect(reg.get('codex').args).toContain('--no-daemon');
  });

  it('says in human words when a program is missing', () => {
    const reg = new AgentRegistry({ ghost: { command: 'definitely-not-installed-xyz' } });
    expect(() => resolveCommand(reg.get('ghost'), '/usr/bin:/bin')).toThrow('definitely-not-installed-xyz is not installed or not on PATH (looked in /usr/bin, /bin)');
  });

  it('gives the child the daemon\'s env minus the token and terminal leftovers, plus TERM and the profile env', () => {
    const reg = new AgentRegistry({ py: { command: 'python3', env: { PYTHONUNBUFFERED: '1' } } });
    const env = childEnv({ PATH: '/bin', API_TOKEN: 'secret', TMUX: 'x', STY: 'y', COLUMNS: '80', LINES: '24', TERM: 'screen' }, reg.get('py'), { AGENTD_SESSION_TAG: 't' });
    expect(env).toEqual({ PATH: '/bin', TERM: 'xterm-256color', COLORTERM: 'truecolor', PYTHONUNBUFFERED: '1', AGENTD_SESSION_TAG: 't' });
  });
});

describe('auth helpers', () => {
  it('compares tokens in constant time over digests, rejecting near misses', () => {
    expect(tokenMatches('abcdefghijklmnop', 'abcdefghijklmnop')).toBe(true);
    for (const bad of ['', 'abcdefghijklmno', 'abcdefghijklmnopq', 'x'.repeat(5000), undefined, null, 42]) expect(tokenMatches('abcdefghijklmnop', bad)).toBe(false);
  });

  it('reads the host name of a Host header', () => {
    expect(hostNameOf('localhost:3000')).toBe('localhost');
    expect(hostNameOf('[::1]:3000')).toBe('[::1]');
    expect(hostNameOf('127.0.0.1')).toBe('127.0.0.1');
    expect(hostNameOf(undefined)).toBeNull();
  });
});
