import { AgentProfile } from '../../../server/agents/profiles';
import { AppError } from '../../../server/common/errors';
import { asPrompt, bracketedPaste, Conversation, ConversationHost, ENTER_PAUSE_MS, goesAsPaste, hasVisibleText, PASTE_OVER_CHARS } from '../../../server/sessions/Conversation';
import { AgentDriver } from '../../../server/sessions/drivers';
import { MemoryStore } from '../../../server/store/MemoryStore';
import { SessionState } from '../../../server/store/SessionStore';

const PROFILE: AgentProfile = { name: 'fake', kind: 'generic', command: 'fake', args: [], env: {}, recapPrompt: 'recap', idleMs: 1_000 };

/** A hook-driven agent (turn ends come from it) that answers questions with digits. */
class FakeDriver implements AgentDriver {
  readonly authoritative = true;
  ready = true;
  answered: string[] = [];
  launch() {
    return { args: [], env: {} };
  }
  isReady() {
    return this.ready;
  }
  onOutput() {}
  onHook() {}
  permissionKeys(optionId: string) {
    return `<${optionId}>`;
  }
  onAnswer(option: { id: string }) {
    this.answered.push(option.id);
  }
  dispose() {}
}

describe('the chat layer of a session (Conversation)', () => {
  let keys: string[];
  let states: SessionState[];
  let frames: Array<Record<string, unknown>>;
  let live: boolean;
  let activity: number;
  let driver: FakeDriver;
  let store: MemoryStore;
  let chat: Conversation;

  beforeEach(() => {
    jest.useFakeTimers();
    keys = [];
    states = [];
    frames = [];
    live = true;
    activity = 0;
    driver = new FakeDriver();
    store = new MemoryStore();
    const host: ConversationHost = {
      id: 'S1',
      isLive: () => live,
      describeEnd: () => 'exited (agent exited with code 0)',
      setState: (s) => states.push(s),
      sendJson: (f) => frames.push(f),
      writeKeys: (k) => {
        if (!live) return false;
        keys.push(k);
        return true;
      },
      noteUserActivity: () => activity++,
    };
    chat = new Conversation(host, { profile: PROFILE, driver, store, now: () => 1_000 });
    chat.restart();
  });
  afterEach(() => {
    chat.dispose();
    jest.clearAllTimers();
    jest.useRealTimers();
  });

  /** Lets the Enter pause pass and the submit promise settle. */
  const afterEnter = async () => {
    await jest.advanceTimersByTimeAsync(ENTER_PAUSE_MS);
  };

  it('writes a chat line as text, a pause, then Enter alone; the session goes busy, then idle at the agent\'s end', async () => {
    const turn = chat.send('chat', 'hello', 'phone-1');
    expect(states).toEqual(['busy']);
    expect(keys).toEqual(['hello']);
    await jest.advanceTimersByTimeAsync(ENTER_PAUSE_MS - 1);
    expect(keys).toEqual(['hello']);
    await jest.advanceTimersByTimeAsync(1);
    expect(keys).toEqual(['hello', '\r']);
    expect(activity).toBe(1);

    const ended: string[] = [];
    chat.onTurnEnd((t) => ended.push(t.id));
    chat.endTurn('completed', 'hi there');
    expect(turn).toMatchObject({ status: 'completed', response: 'hi there', deviceId: 'phone-1' });
    expect(ended).toEqual([turn.id]);
    expect(states).toEqual(['busy', 'idle']);
    expect(frames).toContainEqual({ type: 'turn', turnId: turn.id, status: 'completed', response: 'hi there' });
    expect(store.listTurns('S1')).toEqual([expect.objectContaining({ id: turn.id, status: 'completed' })]);
  });

  it('gives an interrupted turn of a hook-driven agent no response, not the screen it left (spinners, the dialog)', async () => {
    const turn = chat.send('chat', 'touch x', null);
    await afterEnter();
    chat.onOutput(Buffer.from('touch x\r\n● Bash(touch x)\r\n  ⎿ Interrupted · What should Claude do instead?\r\n❯ '));
    chat.endTurn('interrupted', null);
    expect(turn).toMatchObject({ status: 'interrupted', response: '' });
    const failed = chat.send('chat', 'again', null);
    await afterEnter();
    chat.endTurn('interrupted', 'API Error: 400');
    expect(failed).toMatchObject({ status: 'interrupted', response: 'API Error: 400' });
  });

  it('sends a multi-line message to a hook-driven agent as one bracketed paste', async () => {
    chat.send('chat', 'one\ntwo', null);
    await afterEnter();
    expect(keys).toEqual(['\x1b[200~one\ntwo\x1b[201~', '\r']);
  });

  it('queues turns until the agent is ready, and runs them one at a time', async () => {
    driver.ready = false;
    const first = chat.send('chat', 'first', null);
    const second = chat.send('chat', 'second', null);
    expect(keys).toEqual([]);
    driver.ready = true;
    chat.agentReady();
    await afterEnter();
    expect(keys).toEqual(['first', '\r']);
    chat.endTurn('completed', 'one');
    await afterEnter();
    expect(keys).toEqual(['first', '\r', 'second', '\r']);
    expect(first.status).toBe('completed');
    expect(second.status).toBe('running');
  });

  it('opens a question (needs_input, a permission frame), answers it with the driver\'s keys and goes back to busy', async () => {
    const turn = chat.send('chat', 'edit the file', null);
    await afterEnter();
    const prompts: unknown[] = [];
    chat.onPrompt((p) => prompts.push(p));
    chat.openPermission('Allow edit?', [
      { id: '1', label: 'Yes' },
      { id: '2', label: 'No' },
    ]);
    expect(chat.prompt).toEqual({ turnId: turn.id, prompt: 'Allow edit?', options: [{ id: '1', label: 'Yes' }, { id: '2', label: 'No' }] });
    expect(states).toEqual(['busy', 'needs_input']);
    expect(frames).toContainEqual({ type: 'permission', turnId: turn.id, prompt: 'Allow edit?', options: expect.any(Array) });

    chat.answer(2);
    expect(keys.at(-1)).toBe('<2>');
    expect(driver.answered).toEqual(['2']);
    expect(chat.prompt).toBeNull();
    expect(prompts.at(-1)).toBeNull();
    expect(states.at(-1)).toBe('busy');
  });

  it('refuses an answer with no question open (409) or an option the question does not offer (400), writing nothing', () => {
    expect(() => chat.answer('1')).toThrow(expect.objectContaining({ code: 'conflict' }));
    chat.openPermission('Allow?', [{ id: '1', label: 'Yes' }]);
    const written = keys.length;
    let err: AppError | null = null;
    try {
      chat.answer('7');
    } catch (e) {
      err = e as AppError;
    }
    expect(err).toMatchObject({ code: 'invalid_request', message: 'option must be one of 1' });
    expect(keys.length).toBe(written);
    expect(chat.prompt).not.toBeNull();
  });

  it('refuses a turn for an ended session with a conflict that says why, storing nothing', () => {
    live = false;
    expect(() => chat.send('chat', 'hello', null)).toThrow('session S1 is exited (agent exited with code 0)');
    expect(store.listTurns('S1')).toEqual([]);
    expect(activity).toBe(0);
  });

  it('ends a turn interrupted when its agent is gone before Enter', async () => {
    const turn = chat.send('chat', 'hello', null);
    live = false;
    await afterEnter();
    expect(turn.status).toBe('interrupted');
    expect(keys).toEqual(['hello']);
  });

  it('interrupts every queued and running turn and forgets the question when the agent ends', async () => {
    const running = chat.send('chat', 'a', null);
    const queued = chat.send('chat', 'b', null);
    await afterEnter();
    chat.openPermission('Allow?', [{ id: '1', label: 'Yes' }]);
    chat.abortAll();
    expect([running.status, queued.status]).toEqual(['interrupted', 'interrupted']);
    // No answer is an empty one, in the turn frames as in /messages (a waiting POST /api/chat gets it too).
    expect([running.response, queued.response]).toEqual(['', '']);
    expect(frames.filter((f: any) => f.type === 'turn').map((f: any) => f.response)).toEqual(['', '']);
    expect(chat.prompt).toBeNull();
    expect(chat.busy).toBe(false);
  });
});

describe('how a chat message is typed into claude and codex', () => {
  it('sends a short plain line as keystrokes and anything else as one bracketed paste', () => {
    expect(goesAsPaste('what is 6*7?')).toBe(false);
    expect(goesAsPaste('x'.repeat(PASTE_OVER_CHARS))).toBe(false);
    expect(goesAsPaste('x'.repeat(PASTE_OVER_CHARS + 1))).toBe(true);
    for (const text of ['two\nlines', 'col1\tcol2', 'early\rsubmit', 'esc\x1b']) expect(goesAsPaste(text)).toBe(true);
  });

  it('keeps a paste whole: no ESC inside, so nothing in the text can end it early; tabs and newlines stay', () => {
    expect(bracketedPaste('a\x1b[201~\rrm -rf x\x1b[201~b')).toBe('\x1b[200~a[201~\nrm -rf x[201~b\x1b[201~');
    // One pass of removing the end mark would have made a new one here.
    expect(bracketedPaste('\x1b[20\x1b[201~1~\rrm -rf ~')).toBe('\x1b[200~[20[201~1~\nrm -rf ~\x1b[201~');
    expect(bracketedPaste('col1\tcol2\r\nnext\x03\x7f')).toBe('\x1b[200~col1\tcol2\nnext\x1b[201~');
  });

  it('finds no visible text in a message of spaces and control characters', () => {
    for (const blank of ['', ' \n\t', '\x1b', '\x03\r', '\u00a0\u2003']) expect(hasVisibleText(blank)).toBe(false);
    for (const text of ['x', ' \x1b[1mhi', '🍌']) expect(hasVisibleText(text)).toBe(true);
  });
});

describe('a chat message is a prompt, not a command of the CLI', () => {
  it('puts a zero-width space before a leading / or ! and leaves other text alone', () => {
    expect(asPrompt('/help')).toBe('\u200b/help');
    expect(asPrompt('  !rm -rf x')).toBe('\u200b!rm -rf x');
    // Control characters before it would be dropped by the paste, leaving the / or ! first.
    for (const sneaky of ['\x01/help', '\x00!id', '\x7f/status', '\x1b/help', '\t\x03 !id']) expect(asPrompt(sneaky)).toMatch(/^\u200b[/!]/);
    expect(asPrompt('what does /etc/hosts do?')).toBe('what does /etc/hosts do?');
    expect(asPrompt(' plain')).toBe(' plain');
  });
});
