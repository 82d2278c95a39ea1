import { stripAnsi, toPlainLines, turnText } from '../../../server/sessions/text';

describe('terminal text', () => {
  it('removes CSI, OSC and two-byte escapes', () => {
    expect(stripAnsi('\x1b[1;31mred\x1b[0m \x1b]0;title\x07ok \x1b]7501;state=idle:app=codex\x1b\\done')).toBe('red ok done');
  });

  it('applies carriage returns and backspaces', () => {
    expect(toPlainLines('progress 10%\rprogress 100%\r\nab\bc')).toEqual(['progress 100%', 'ac']);
  });

  it('takes a turn\'s answer without the echoed prompt and the ready prompt', () => {
    const raw = 'print(6*7)\r\n42\r\n>>> ';
    expect(turnText(raw, 'print(6*7)')).toBe('42');
    // Written before python read it: the terminal echoed it, then python's prompt echoed it again.
    expect(turnText('print(2**10)\r\n>>> print(2**10)\r\n1024\r\n>>> ', 'print(2**10)')).toBe('1024');
    expect(turnText('recap please\r\nline one\r\nline two\r\nPROMPT> ', 'recap please', /^PROMPT> ?$/)).toBe('line one\nline two');
  });
});
