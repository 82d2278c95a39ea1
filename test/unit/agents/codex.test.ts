import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  codexArgs,
  codexPermissionKeys,
  codexRolloutExists,
  codexRolloutPath,
  codexTurnEnd,
  codexTurnError,
  Osc7501Parser,
  Osc7501Report,
  parseCodexApproval,
  parseCodexNotify,
  parseReport,
  tomlString,
  tomlStringArray,
} from '../../../server/agents/codex';
import { silentLogger } from '../../../server/common/log';
import { CODEX_FLIP_WAIT_MS, createDriver, DriverHost } from '../../../server/sessions/drivers';
import { SessionRecord } from '../../../server/store/SessionStore';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';

const screen = (name: string) => readFileSync(join(__dirname, '..', '..', 'fixtures', 'screens', name), 'utf8');
const THREAD = '01a20c21-4366-7312-a818-85cdd1ca154e';
const TITLE_THREAD = '01a20c21-453c-7632-b9c2-88ad1c9ebd53';

afterAll(cleanupTmp);

describe('tomlString', () => {
  it('writes TOML basic strings with JSON-compatible escapes', () => {
    expect(tomlString('/usr/bin/node')).toBe('"/usr/bin/node"');
    expect(tomlString('a "b" \\ c\n\t')).toBe('"a \\"b\\" \\\\ c\\n\\t"');
    expect(tomlString('ü ✓ 🍌')).toBe('"ü ✓ 🍌"');
  });

  it('escapes DEL and refuses lone surrogates, which TOML forbids raw', () => {
    expect(tomlString('a\x7fb')).toBe('"a\\u007fb"');
    expect(() => tomlString('a\ud800b')).toThrow(RangeError);
    expect(() => tomlString('\udc00')).toThrow(RangeError);
  });

  it('writes arrays', () => {
    expect(tomlStringArray(['/n ode', "it's"])).toBe(`["/n ode", "it's"]`);
  });
});

describe('codexArgs', () => {
  const notifyCommand = ['/usr/bin/node', '/opt/agent d/hook-relay.js', 'CodexNotify'];

  it('starts without the shared daemon and with notify set', () => {
    expect(codexArgs({ revive: false, notifyCommand })).toEqual([
      '--no-daemon',
      '-c',
      'notify=["/usr/bin/node", "/opt/agent d/hook-relay.js", "CodexNotify"]',
    ]);
  });

  it('resumes a known thread with the subcommand after the options', () => {
    expect(codexArgs({ revive: true, threadId: THREAD, notifyCommand }).slice(3)).toEqual(['resume', THREAD]);
  });

  it('starts fresh when reviving before any thread id was learned', () => {
    expect(codexArgs({ revive: true, threadId: null, notifyCommand })).toHaveLength(3);
    expect(codexArgs({ revive: false, threadId: THREAD, notifyCommand })).toHaveLength(3);
  });

  it('refuses an empty notify command', () => {
    expect(() => codexArgs({ revive: false, notifyCommand: [] })).toThrow(RangeError);
  });
});

const osc = (body: string, end = '\x1b\\') => `\x1b]7501;${body}${end}`;
const IDLE = osc('state=idle:app=codex');
const WORKING = osc('state=working:app=codex');
const BLOCKED = osc('state=blocked:app=codex:kind=permission');

function feedAll(parser: Osc7501Parser, chunks: string[]): Osc7501Report[] {
  const out: Osc7501Report[] = [];
  for (const c of chunks) out.push(...parser.feed(Buffer.from(c, 'latin1')));
  return out;
}

describe('Osc7501Parser', () => {
  it('reads reports in a chunk, among other output', () => {
    const parser = new Osc7501Parser();
    expect(feedAll(parser, [`\x1b[?1049h${IDLE}\x1b[2Jhello${WORKING}x`])).toEqual([{ state: 'idle' }, { state: 'working' }]);
    expect(feedAll(parser, [BLOCKED, osc('state=done:app=codex')])).toEqual([{ state: 'blocked', kind: 'permission' }, { state: 'done' }]);
  });

  it('reads a report split at every possible byte', () => {
    const stream = `ab${BLOCKED}cd${IDLE}`;
    for (let cut = 1; cut < stream.length; cut++) {
      const parser = new Osc7501Parser();
      expect(feedAll(parser, [stream.slice(0, cut), stream.slice(cut)])).toEqual([{ state: 'blocked', kind: 'permission' }, { state: 'idle' }]);
    }
  });

  it('reads a report fed one byte at a time', () => {
    const parser = new Osc7501Parser();
    expect(feedAll(parser, [...`${WORKING}\x1b[0m${IDLE}`])).toEqual([{ state: 'working' }, { state: 'idle' }]);
  });

  it('accepts BEL as the terminator too', () => {
    expect(feedAll(new Osc7501Parser(), [osc('state=done:app=codex', '\x07')])).toEqual([{ state: 'done' }]);
  });

  it('ignores other OSCs, other apps, unknown states and an unterminated run', () => {
    const parser = new Osc7501Parser();
    expect(feedAll(parser, ['\x1b]0;title\x07', '\x1b]7500;state=idle\x1b\\', osc('state=idle:app=other'), osc('state=sleeping:app=codex')])).toEqual([]);
    // 300 bytes without a terminator are not a report: dropped, and parsing goes on.
    expect(feedAll(parser, [`\x1b]7501;${'x'.repeat(300)}`, 'y'.repeat(10), IDLE])).toEqual([{ state: 'idle' }]);
  });

  it('does not hold a chunk that merely ends in ESC of something else', () => {
    const parser = new Osc7501Parser();
    expect(feedAll(parser, ['text\x1b[', '0m', IDLE])).toEqual([{ state: 'idle' }]);
    expect(feedAll(parser, ['\x1b]75', '00;state=idle:app=codex\x1b\\'])).toEqual([]);
  });

  it('allocates nothing for a chunk without a report', () => {
    const parser = new Osc7501Parser();
    const chunk = Buffer.from('plain output '.repeat(1000));
    expect(parser.feed(chunk)).toBe(parser.feed(chunk));
    expect(parser.feed(chunk)).toHaveLength(0);
  });

  it('is cheap on the hot path', () => {
    const parser = new Osc7501Parser();
    const chunk = Buffer.from('\x1b[38;5;244m────\x1b[39m plain output with escapes '.repeat(400)); // ~20 KB
    const rounds = 2_000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) parser.feed(chunk);
    const nsPerByte = Number(process.hrtime.bigint() - t0) / (rounds * chunk.length);
    // memchr-speed indexOf: well under a nanosecond per byte; the bound is loose for slow CI machines.
    expect(nsPerByte).toBeLessThan(2);
  });
});

describe('parseReport', () => {
  it('reads the fields codex sends', () => {
    expect(parseReport('state=blocked:app=codex:kind=permission')).toEqual({ state: 'blocked', kind: 'permission' });
    expect(parseReport('state=idle')).toEqual({ state: 'idle' });
    expect(parseReport('garbage')).toBeNull();
  });
});

describe('codexTurnEnd', () => {
  it('completes on done and is interrupted by idle straight after working or blocked', () => {
    expect(codexTurnEnd('working', 'done')).toBe('completed');
    expect(codexTurnEnd('working', 'idle')).toBe('interrupted');
    expect(codexTurnEnd('blocked', 'idle')).toBe('interrupted');
    // The idle that follows done ~0.5 s later is not a second end.
    expect(codexTurnEnd('done', 'idle')).toBeNull();
    expect(codexTurnEnd(null, 'idle')).toBeNull();
    expect(codexTurnEnd('idle', 'working')).toBeNull();
    expect(codexTurnEnd('working', 'blocked')).toBeNull();
  });
});

describe('parseCodexNotify (payloads as codex 0.169.0 sends them)', () => {
  const main = JSON.stringify({
    type: 'agent-turn-complete',
    'thread-id': THREAD,
    'turn-id': '01a20c21-4508-7af3-9a22-307c60215a82',
    cwd: '/tmp/x/proj',
    client: 'codex-tui',
    'input-messages': ['Remember the word BANANA'],
    'last-assistant-message': 'FAKE-REPLY #1. You said: [Remember the word BANANA]',
  });
  const title = JSON.stringify({
    type: 'agent-turn-complete',
    'thread-id': TITLE_THREAD,
    'turn-id': '01a20c21-455a-7e13-870b-6b1596327f04',
    cwd: '/tmp/x/proj',
    client: 'codex-tui',
    'input-messages': [
      "Generate a concise, single-line task title of at most 36 characters and under five words where possible. Start with an imperative verb. Capitalize only the first word unless the user's language, proper nouns, acronyms, or code terms require otherwise. Preserve ticket references exactly. Write in the user's language. Do not use quotes, markdown, or trailing punctuation. Do not answer the request.\n\nUser prompt:\nRemember the word BANANA",
    ],
    'last-assistant-message': 'Fake task title',
  });

  it('learns the thread id from the first main-thread notify', () => {
    expect(parseCodexNotify(main, null)).toEqual({
      threadId: THREAD,
      turnId: '01a20c21-4508-7af3-9a22-307c60215a82',
      text: 'FAKE-REPLY #1. You said: [Remember the word BANANA]',
      inputMessages: ['Remember the word BANANA'],
      isTitleThread: false,
    });
  });

  it('drops the title side-thread, before and after the thread id is known', () => {
    expect(parseCodexNotify(title, null)).toBeNull();
    expect(parseCodexNotify(title, THREAD)).toBeNull();
  });

  it('drops other threads once the thread id is known', () => {
    expect(parseCodexNotify(main, THREAD)).not.toBeNull();
    expect(parseCodexNotify(main, '01a20c24-eb70-7ea2-be88-be1da76f362a')).toBeNull();
  });

  it('drops what is not a turn-complete notify', () => {
    expect(parseCodexNotify('not json', null)).toBeNull();
    expect(parseCodexNotify('{"type":"other","thread-id":"x"}', null)).toBeNull();
    expect(parseCodexNotify('{"type":"agent-turn-complete"}', null)).toBeNull();
  });

  it('keeps a main-thread turn whose prompt happens to use the title wording', () => {
    const titleLike = (messages: string[]) => JSON.stringify({ ...JSON.parse(main), 'input-messages': messages });
    expect(parseCodexNotify(titleLike(['Generate a concise, single-line task title for me']), THREAD)).not.toBeNull();
    expect(parseCodexNotify(titleLike(['Generate a concise, single-line task title for me', 'and more']), null)).not.toBeNull();
  });
});

describe('codexRolloutPath', () => {
  it('finds the rollout of a thread under sessions/YYYY/MM/DD', () => {
    const home = tmpdir('codex-home');
    const day = join(home, 'sessions', '2026', '11', '24');
    mkdirSync(day, { recursive: true });
    const file = join(day, `rollout-2026-11-24T05-58-37-${THREAD}.jsonl`);
    writeFileSync(file, '{}\n');
    expect(codexRolloutPath(home, THREAD)).toBe(file);
    expect(codexRolloutExists(home, THREAD)).toBe(true);
    expect(codexRolloutExists(home, TITLE_THREAD)).toBe(false);
  });

  it('finds nothing in a fresh home or for a malformed id', () => {
    const home = tmpdir('codex-home');
    expect(codexRolloutExists(home, THREAD)).toBe(false);
    expect(codexRolloutPath(home, '../../etc')).toBeNull();
    expect(codexRolloutPath(home, '')).toBeNull();
  });
});

describe('parseCodexApproval (real screens)', () => {
  it('reads the question and the options without their shortcut hints', () => {
    expect(parseCodexApproval(screen('codex-approval.txt'))).toEqual({
      prompt: 'Would you like to run the following command?\nEnvironment: local\nReason: The user asked to run touch perm-file.txt\n$ touch perm-file.txt',
      options: [
        { id: '1', label: 'Yes, proceed' },
        { id: '2', label: "Yes, and don't ask again for commands that start with `touch perm-file.txt`" },
        { id: '3', label: 'No, and tell Codex what to do differently' },
      ],
    });
  });

  it('joins labels wrapped on a narrow screen', () => {
    expect(parseCodexApproval(screen('codex-approval-narrow.txt'))?.options).toEqual([
      { id: '1', label: 'Yes, proceed' },
      { id: '2', label: "Yes, and don't ask again for commands that start with `touch a-rather-long-file-name-for-wrapping.txt`" },
      { id: '3', label: 'No, and tell Codex what to do differently' },
    ]);
  });

  it('finds nothing when no dialog is open', () => {
    expect(parseCodexApproval(screen('codex-interrupted.txt'))).toBeNull();
  });
});

describe('codexTurnError (real screens)', () => {
  it('reads the API error that ended a turn without an OSC idle', () => {
    expect(codexTurnError(screen('codex-api-error.txt'))).toBe('{"error":{"message":"fake failure 400","type":"invalid_request_error","code":null}}');
  });

  it('reads the interruption after a declined approval', () => {
    expect(codexTurnError(screen('codex-interrupted.txt'))).toBe('Conversation interrupted - use /feedback if something went wrong');
  });

  it('ignores an earlier turn’s error while the next turn works, and screens without one', () => {
    expect(codexTurnError(screen('codex-working.txt'))).toBeNull();
    expect(codexTurnError(screen('codex-approval.txt'))).toBeNull();
    expect(codexTurnError('')).toBeNull();
  });
});

describe('codexPermissionKeys', () => {
  it('is the digit alone, without Enter', () => {
    expect(codexPermissionKeys('1')).toBe('1');
    expect(() => codexPermissionKeys('y')).toThrow(RangeError);
  });
});

describe('when codex is ready for the first prompt', () => {
  const osc = (state: string) => Buffer.from(`\x1b]7501;state=${state}:app=codex\x1b\\`);
  function driver(revive: boolean, home: string) {
    const ready: string[] = [];
    const host: DriverHost = {
      record: { id: 'S1', agentSessionId: revive ? THREAD : null } as SessionRecord,
      logger: silentLogger(),
      signal: (s) => ready.push(s.kind),
      screenText: async () => null,
      setAgentSessionId: () => undefined,
      turnRunning: () => false,
    };
    const d = createDriver({ name: 'codex', kind: 'codex', command: 'codex', args: [], env: {}, recapPrompt: 'recap', idleMs: 1_000 }, host);
    d.launch({ revive, env: { CODEX_HOME: home }, hookUrl: 'http://127.0.0.1:1/hook', hookSecret: 's' });
    return { d, ready };
  }
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('waits for a fresh codex\'s start-up flip however late it comes (a prompt inside it is lost)', () => {
    const { d, ready } = driver(false, tmpdir('codex-home'));
    d.onOutput(osc('idle'));
    jest.advanceTimersByTime(1_000); // a loaded machine: the flip has not come yet
    expect(d.isReady()).toBe(false);
    d.onOutput(osc('working'));
    d.onOutput(osc('idle'));
    jest.advanceTimersByTime(149);
    expect(d.isReady()).toBe(false);
    jest.advanceTimersByTime(1);
    expect(d.isReady()).toBe(true);
    expect(ready).toEqual(['ready']);
    d.dispose();
  });

  it('takes a fresh codex that never flips as ready after CODEX_FLIP_WAIT_MS of idle', () => {
    const { d } = driver(false, tmpdir('codex-home'));
    d.onOutput(osc('idle'));
    jest.advanceTimersByTime(CODEX_FLIP_WAIT_MS - 1);
    expect(d.isReady()).toBe(false);
    jest.advanceTimersByTime(1);
    expect(d.isReady()).toBe(true);
    d.dispose();
  });

  it('takes a resumed codex (no flip) as ready once idle has stayed put briefly', () => {
    const home = tmpdir('codex-home');
    const day = join(home, 'sessions', '2026', '11', '24');
    mkdirSync(day, { recursive: true });
    writeFileSync(join(day, `rollout-2026-11-24T05-58-37-${THREAD}.jsonl`), '{}\n');
    const { d } = driver(true, home);
    d.onOutput(osc('idle'));
    jest.advanceTimersByTime(150);
    expect(d.isReady()).toBe(true);
    d.dispose();
  });
});
