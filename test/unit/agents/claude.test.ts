import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  claudeArgs,
  claudeConfigDir,
  CLAUDE_HOOK_EVENTS,
  claudeHookSettings,
  claudePermissionKeys,
  claudeProjectSlug,
  claudeTranscriptExists,
  claudeTranscriptPath,
  claudeTranscriptState,
  claudeTurnInterrupted,
  parseClaudeHook,
  parseClaudePermissionDialog,
  prepareClaudeRevival,
  shellQuote,
} from '../../../server/agents/claude';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';

const screen = (name: string) => readFileSync(join(__dirname, '..', '..', 'fixtures', 'screens', name), 'utf8');
const UUID = '2f8ea035-2948-493c-9150-63879c58097e';

afterAll(cleanupTmp);

describe('claudeArgs', () => {
  const base = { agentSessionId: UUID, hookSettingsJson: '{"hooks":{}}' };

  it('chooses the id with --session-id on first start', () => {
    expect(claudeArgs({ ...base, revive: false, transcriptExists: false })).toEqual(['--session-id', UUID, '--settings', '{"hooks":{}}']);
  });

  it('resumes on revival only when the transcript holds a conversation', () => {
    expect(claudeArgs({ ...base, revive: true, transcriptExists: true }).slice(0, 2)).toEqual(['--resume', UUID]);
    expect(claudeArgs({ ...base, revive: true, transcriptExists: false }).slice(0, 2)).toEqual(['--session-id', UUID]);
    // A first start never resumes, whatever is on disk.
    expect(claudeArgs({ ...base, revive: false, transcriptExists: true }).slice(0, 2)).toEqual(['--session-id', UUID]);
  });
});

describe('claudeHookSettings', () => {
  it('registers every event the daemon needs, each running the command with the event name appended', () => {
    const settings = claudeHookSettings(['/usr/bin/node', '/opt/agentd/hook-relay.js']);
    expect(Object.keys(settings.hooks)).toEqual([...CLAUDE_HOOK_EVENTS]);
    expect(settings.hooks.Stop).toEqual([{ hooks: [{ type: 'command', command: "'/usr/bin/node' '/opt/agentd/hook-relay.js' 'Stop'", timeout: 10 }] }]);
  });

  it('quotes each word so the shell gives the program exactly those words', () => {
    const tricky = [`it's`, 'a "quoted" $HOME `x` \\ word', '', ';rm -rf /'];
    const settings = claudeHookSettings(['printf', '[%s]\\n', ...tricky]);
    const command = (settings.hooks.PermissionRequest[0] as { hooks: Array<{ command: string }> }).hooks[0].command;
    const out = execFileSync('/bin/sh', ['-c', command], { encoding: 'utf8' });
    expect(out).toBe([...tricky, 'PermissionRequest'].map((w) => `[${w}]\n`).join(''));
  });

  it('refuses an empty command and NUL bytes', () => {
    expect(() => claudeHookSettings([])).toThrow(RangeError);
    expect(() => shellQuote('a\0b')).toThrow(RangeError);
  });
});

describe('parseClaudeHook (payloads as claude 2.1.197 sends them)', () => {
  const common = { session_id: UUID, transcript_path: `/cfg/projects/-tmp-p/${UUID}.jsonl`, cwd: '/tmp/p' };

  it('maps SessionStart to ready with the session id', () => {
    const payload = { ...common, hook_event_name: 'SessionStart', source: 'startup', model: 'claude-opus-4-8[1m]' };
    expect(parseClaudeHook(payload)).toEqual({ kind: 'ready', agentSessionId: UUID, source: 'startup' });
  });

  it('maps UserPromptSubmit to turn-started with the prompt', () => {
    const payload = { ...common, prompt_id: 'p1', permission_mode: 'default', hook_event_name: 'UserPromptSubmit', prompt: 'Remember the word BANANA' };
    expect(parseClaudeHook(payload)).toEqual({ kind: 'turn-started', prompt: 'Remember the word BANANA' });
  });

  it('maps Stop to turn-ended with last_assistant_message', () => {
    const payload = {
      ...common,
      prompt_id: 'p1',
      permission_mode: 'default',
      effort: { level: 'high' },
      hook_event_name: 'Stop',
      stop_hook_active: false,
      last_assistant_message: 'FAKE-REPLY #1. You said: [Remember the word BANANA]',
      background_tasks: [],
      session_crons: [],
    };
    expect(parseClaudeHook(payload)).toEqual({ kind: 'turn-ended', text: 'FAKE-REPLY #1. You said: [Remember the word BANANA]' });
  });

  it('maps StopFailure (an API error; no Stop fires then) to a turn that ended with an error', () => {
    const payload = { ...common, prompt_id: 'p1', effort: { level: 'high' }, hook_event_name: 'StopFailure', error: 'unknown', last_assistant_message: 'API Error: 400 fake failure 400' };
    expect(parseClaudeHook(payload)).toEqual({ kind: 'turn-ended', text: 'API Error: 400 fake failure 400', error: 'unknown' });
    expect(parseClaudeHook({ ...common, hook_event_name: 'StopFailure', error: 'rate_limit', error_details: '429' })).toEqual({ kind: 'turn-ended', text: '', error: 'rate_limit: 429' });
  });

  it('builds the permission question and the three options of a rememberable command', () => {
    const payload = {
      ...common,
      hook_event_name: 'PermissionRequest',
      tool_name: 'Bash',
      tool_input: { command: 'touch perm-file.txt', description: 'Run touch perm-file.txt' },
      permission_suggestions: [
        { type: 'addDirectories', directories: ['/tmp/cprobe/my.proj_dir'], destination: 'session' },
        { type: 'setMode', mode: 'acceptEdits', destination: 'session' },
      ],
    };
    expect(parseClaudeHook(payload)).toEqual({
      kind: 'permission',
      prompt: 'Bash command\n  touch perm-file.txt\n  Run touch perm-file.txt\nDo you want to proceed?',
      options: [
        { id: '1', label: 'Yes' },
        { id: '2', label: 'Yes, and always allow access to my.proj_dir/ from this project' },
        { id: '3', label: 'No' },
      ],
    });
  });

  it('labels option 2 with the rule claude offers to remember', () => {
    const payload = {
      ...common,
      hook_event_name: 'PermissionRequest',
      tool_name: 'Bash',
      tool_input: { command: 'git push' },
      permission_suggestions: [{ type: 'addRules', rules: [{ toolName: 'Bash', ruleContent: 'git push *' }], behavior: 'allow', destination: 'localSettings' }],
    };
    const signal = parseClaudeHook(payload);
    expect(signal).toMatchObject({ kind: 'permission', prompt: 'Bash command\n  git push\nDo you want to proceed?' });
    expect(signal?.kind === 'permission' && signal.options[1]).toEqual({ id: '2', label: "Yes, and don't ask again for: git push *" });
  });

  it('offers only Yes and No when claude has no rule to suggest (then "2" means No)', () => {
    const payload = { ...common, hook_event_name: 'PermissionRequest', tool_name: 'Bash', tool_input: { command: 'echo $(whoami) > out.txt' } };
    expect(parseClaudeHook(payload)).toMatchObject({
      options: [
        { id: '1', label: 'Yes' },
        { id: '2', label: 'No' },
      ],
    });
  });

  it('words other tools by their file or URL', () => {
    const write = parseClaudeHook({ ...common, hook_event_name: 'PermissionRequest', tool_name: 'Write', tool_input: { file_path: '/tmp/p/a.txt', content: 'x' } });
    expect(write).toMatchObject({ prompt: 'Write /tmp/p/a.txt\nDo you want to proceed?' });
  });

  it('maps the idle Notification to waiting and ignores the late permission_prompt one', () => {
    expect(parseClaudeHook({ ...common, hook_event_name: 'Notification', message: 'Claude is waiting for your input', notification_type: 'idle_prompt' })).toEqual({ kind: 'waiting' });
    expect(parseClaudeHook({ ...common, hook_event_name: 'Notification', message: 'Claude needs your permission', notification_type: 'permission_prompt' })).toBeNull();
  });

  it('maps SessionEnd to ended with its reason', () => {
    expect(parseClaudeHook({ ...common, hook_event_name: 'SessionEnd', reason: 'other' })).toEqual({ kind: 'ended', reason: 'other' });
  });

  it('uses the relay event name when the payload has none, and ignores the rest', () => {
    expect(parseClaudeHook({ session_id: UUID }, 'SessionStart')).toMatchObject({ kind: 'ready' });
    expect(parseClaudeHook({ ...common, hook_event_name: 'PreToolUse' })).toBeNull();
    expect(parseClaudeHook('not an object', 'Stop')).toBeNull();
    expect(parseClaudeHook(null)).toBeNull();
  });
});

describe('claudePermissionKeys', () => {
  it('is the digit alone, without Enter', () => {
    expect(claudePermissionKeys('1')).toBe('1');
    expect(claudePermissionKeys('3')).toBe('3');
  });

  it('refuses anything that is not an option digit', () => {
    for (const bad of ['', '0', '10', '1\r', 'y']) expect(() => claudePermissionKeys(bad)).toThrow(RangeError);
  });
});

describe('parseClaudePermissionDialog (real screens)', () => {
  it('reads the question and the three options', () => {
    expect(parseClaudePermissionDialog(screen('claude-permission.txt'))).toEqual({
      prompt: 'Bash command\n  touch perm-file.txt\n  Run touch perm-file.txt\nDo you want to proceed?',
      options: [
        { id: '1', label: 'Yes' },
        { id: '2', label: 'Yes, and always allow access to my.proj_dir/ from this project' },
        { id: '3', label: 'No' },
      ],
    });
  });

  it('reads a two-option dialog', () => {
    const dialog = parseClaudePermissionDialog(screen('claude-permission-two-options.txt'));
    expect(dialog?.options).toEqual([
      { id: '1', label: 'Yes' },
      { id: '2', label: 'No' },
    ]);
    expect(dialog?.prompt).toContain('Contains command_substitution');
  });

  it('joins an option label wrapped on a narrow screen', () => {
    expect(parseClaudePermissionDialog(screen('claude-permission-narrow.txt'))?.options[1]).toEqual({
      id: '2',
      label: "Yes, and don't ask again for touch a and touch b commands in /tmp/cap-1SQXR2/my.proj_dir",
    });
  });

  it('finds nothing when no dialog is open', () => {
    expect(parseClaudePermissionDialog(screen('claude-interrupted.txt'))).toBeNull();
    expect(parseClaudePermissionDialog('')).toBeNull();
  });
});

describe('claudeTurnInterrupted (real screens)', () => {
  it('sees the interruption of the current turn', () => {
    expect(claudeTurnInterrupted(screen('claude-interrupted.txt'))).toBe(true);
  });

  it('ignores an earlier turn’s interruption still on screen', () => {
    expect(claudeTurnInterrupted(screen('claude-after-interrupt-new-turn.txt'))).toBe(false);
    expect(claudeTurnInterrupted(screen('claude-permission-two-options.txt'))).toBe(false);
  });
});

describe('where claude keeps a conversation', () => {
  it('uses CLAUDE_CONFIG_DIR, else ~/.claude', () => {
    expect(claudeConfigDir({ CLAUDE_CONFIG_DIR: '/cfg', HOME: '/home/u' })).toBe('/cfg');
    expect(claudeConfigDir({ HOME: '/home/u' })).toBe('/home/u/.claude');
  });

  it('slugs the cwd like claude 2.1.197 (measured)', () => {
    expect(claudeProjectSlug('/tmp/cprobe-fQsfBL/my.proj_dir')).toBe('-tmp-cprobe-fQsfBL-my-proj-dir');
    expect(claudeProjectSlug('/tmp/cprobe-OK0Iqc/we ird/ü_x.y')).toBe('-tmp-cprobe-OK0Iqc-we-ird---x-y');
    const long = `/tmp/cprobe-QtEpdn/${'a'.repeat(150)}/${'b'.repeat(100)}`;
    expect(claudeProjectSlug(long)).toBe(`-tmp-cprobe-QtEpdn-${'a'.repeat(150)}-${'b'.repeat(30)}-qq8pe7`);
  });

  it('puts the transcript under projects/<slug>/<uuid>.jsonl', () => {
    expect(claudeTranscriptPath('/cfg', '/tmp/my.proj', UUID)).toBe(`/cfg/projects/-tmp-my-proj/${UUID}.jsonl`);
  });

  function transcript(configDir: string, cwd: string, lines: object[]): string {
    const path = claudeTranscriptPath(configDir, cwd, UUID);
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, lines.map((l) => JSON.stringify(l) + '\n').join(''));
    return path;
  }

  it('tells a missing, a stub and a resumable transcript apart', () => {
    const configDir = tmpdir('claude-cfg');
    const path = claudeTranscriptPath(configDir, '/tmp/p', UUID);
    expect(claudeTranscriptState(path)).toBe('missing');
    transcript(configDir, '/tmp/p', [{ type: 'mode' }, { type: 'permission-mode' }, { type: 'ai-title' }]);
    expect(claudeTranscriptState(path)).toBe('empty');
    transcript(configDir, '/tmp/p', [{ type: 'mode' }, { type: 'file-history-snapshot' }, { type: 'user', message: { role: 'user' } }]);
    expect(claudeTranscriptState(path)).toBe('conversation');
  });

  it('finds a user record that straddles a read boundary in a large transcript', () => {
    const configDir = tmpdir('claude-cfg');
    // The 64 KiB read boundary falls inside the first user record's `"type":"user"`.
    const pad = 'x'.repeat(64 * 1024 - '{"pad":"'.length - '"}\n'.length - 5);
    const path = claudeTranscriptPath(configDir, '/tmp/p', UUID);
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, `{"pad":"${pad}"}\n{"type":"user"}\n`);
    expect(readFileSync(path, 'utf8').indexOf('"type":"user"')).toBeLessThan(64 * 1024);
    expect(readFileSync(path, 'utf8').indexOf('"type":"user"') + 13).toBeGreaterThan(64 * 1024);
    expect(claudeTranscriptState(path)).toBe('conversation');
  });

  it('resolves the cwd through symlinks, as claude does', () => {
    const configDir = tmpdir('claude-cfg');
    const real = join(tmpdir('claude-proj'), 'real.dir');
    mkdirSync(real);
    const link = `${real}-link`;
    symlinkSync(real, link);
    transcript(configDir, real, [{ type: 'user' }]);
    expect(claudeTranscriptExists(configDir, link, UUID)).toBe(true);
    expect(claudeTranscriptExists(configDir, real, UUID)).toBe(true);
  });

  it('sets a stub transcript aside before reviving, so --session-id can start over', () => {
    const configDir = tmpdir('claude-cfg');
    const cwd = tmpdir('claude-proj');
    expect(prepareClaudeRevival(configDir, cwd, UUID)).toEqual({ transcriptExists: false });
    const path = transcript(configDir, cwd, [{ type: 'mode' }]);
    const plan = prepareClaudeRevival(configDir, cwd, UUID, 1234);
    expect(plan).toEqual({ transcriptExists: false, setAside: `${path}.stub-1234` });
    expect(existsSync(path)).toBe(false);
    expect(existsSync(`${path}.stub-1234`)).toBe(true);
    transcript(configDir, cwd, [{ type: 'user' }]);
    expect(prepareClaudeRevival(configDir, cwd, UUID)).toEqual({ transcriptExists: true });
  });
});
