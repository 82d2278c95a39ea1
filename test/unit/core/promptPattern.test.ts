import { nestedQuantifier } from '../../../server/config/regexSafety';
import { TurnTracker } from '../../../server/sessions/TurnTracker';
import { AgentRegistry } from '../../../server/agents/profiles';
import { PROMPT_TEST_MAX_CHARS } from '../../../server/sessions/text';

describe('promptPattern star-height check', () => {
  it.each([
    ['\\$ $'],
    ['^>>> $'],
    ['^[a-z]+@[^:]+:.*[$#] ?$'],
    ['(ab)+'],
    ['(a|b)*c'],
    ['a{2,3}'],
    ['^>>> ?$'],
    // A quantifier after a group that holds none, or a quantifier that cannot repeat.
    ['(a+)?'],
    ['(a+){1}'],
    ['(a+){0,1}'],
    ['(?=a+)b'],
    // Escaped parentheses and brackets are no groups; quantifiers inside a class are characters.
    ['\\(a+\\)+'],
    ['[(]a+[)]+'],
    ['([a+*])+'],
    ['([\\]+])+'],
    // Without the u flag "{,5}" is literal text, no quantifier.
    ['(a{,5})+'],
  ])('accepts %s', (pattern) => {
    expect(() => new RegExp(pattern, 'm')).not.toThrow();
    expect(nestedQuantifier(pattern)).toBeNull();
  });

  it.each([
    ['^(a+)+$', '(a+)+'],
    ['(a*)*', '(a*)*'],
    ['(?:x+y?)+', '(?:x+y?)+'],
    ['((a)+)*', '((a)+)*'],
    ['(a{1,5}){2,}', '(a{1,5}){2,}'],
    ['(a+?)+?', '(a+?)+?'],
    ['(?<word>\\w+\\s?)*$', '(?<word>\\w+\\s?)*'],
    ['^x((a+)b)+', '((a+)b)+'],
    ['(?=(a+)+)', '(a+)+'],
    ['([)]a+)+', '([)]a+)+'],
    ['(a+){2}', '(a+){2}'],
  ])('refuses %s, naming %s', (pattern, fragment) => {
    expect(() => new RegExp(pattern, 'm')).not.toThrow();
    expect(nestedQuantifier(pattern)).toBe(fragment);
  });
});

describe('a promptPattern that backtracks polynomially', () => {
  it('is run by the linear-time engine once it backtracks too much (~13 s on a 512-character line before)', () => {
    const profile = new AgentRegistry({ slow: { command: 'bash', promptPattern: '.*.*.*x$' } }).get('slow');
    const t0 = process.hrtime.bigint();
    expect(profile.promptPattern!.test('a'.repeat(PROMPT_TEST_MAX_CHARS))).toBe(false);
    expect(profile.promptPattern!.test('a'.repeat(PROMPT_TEST_MAX_CHARS - 1) + 'x')).toBe(true);
    expect(Number(process.hrtime.bigint() - t0) / 1e6).toBeLessThan(2_000);
  });
});

describe('promptPattern at a turn end', () => {
  afterEach(() => jest.useRealTimers());

  it('is tested against the last 512 characters of the last line only', async () => {
    jest.useFakeTimers();
    const tested: string[] = [];
    const promptPattern = /^>>> $/m;
    promptPattern.test = (text: string) => (tested.push(text), true);
    const tracker = new TurnTracker('s1', { idleMs: 100, promptPattern, authoritative: false, now: () => 0, submit: async () => {}, isReady: () => true });
    tracker.enqueue('chat', 'go', null);
    await Promise.resolve();
    tracker.onOutput(Buffer.from('go\r\n' + 'y'.repeat(5000) + '>>> '));
    jest.advanceTimersByTime(100);
    // Plain text: trailing spaces are gone, so the line ends ">>>".
    expect(tested[0]).toBe('y'.repeat(509) + '>>>');
    tracker.dispose();
  });
});
