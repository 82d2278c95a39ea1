import { stripAnsi, toPlainLines, turnText } from '../../../server/sessions/text';

describe('terminal text', () => {
  it('removes CSI, OSC and two-byte escapes', () => {
    expect(stripAnsi('\x1b[1;31mred\x1b[0m \x1b]0;title\x07ok \x1b]7501;state=idle:app=codex\x1b\\done')).toBe('red ok done');
  });

  it('keeps the gaps claude draws with cursor-forward, without blanking text a move skips over', () => {
    expect(toPlainLines('●\x1b[1CBash(touch\x1b[1C/tmp/x)\x1b[2Cok')).toEqual(['● Bash(touch /tmp/x)  ok']);
    expect(toPlainLines('abcdef\r\x1b[3CX')).toEqual(['abcXef']);
    expect(toPlainLines('a\x1b[C\0b')).toEqual(['a b']);
    expect(toPlainLines('a\x1b[99999Cb')).toEqual([`a${' '.repeat(999)}b`]);
  });

  it('stops moves at the right margin, so a flood of them costs what its bytes cost (it once took the daemon down)', () => {
    const flood = '\x1b[999C'.repeat(200_000) + 'x\r\n';
    const t0 = performance.now();
    const lines = toPlainLines(flood.repeat(5));
    expect(performance.now() - t0).toBeLessThan(2_000);
    expect(lines.slice(0, 5)).toEqual(Array(5).fill(`${' '.repeat(1000)}x`));
  });

  it('applies carriage returns and backspaces', () => {
    expect(toPlainLines('progress 10%\rprogress 100%\r\nab\bc')).toEqual(['progress 100%', 'ac']);
  });

  it('keeps an answer that ends with the prompt\'s own text (a shell\'s `history 20` lists itself last)', () => {
    const raw = '$ history 20\r\n  501  echo alpha\r\n  502  history 20\r\n$ ';
    expect(turnText(raw, 'history 20')).toBe('  501  echo alpha\n  502  history 20');
    expect(turnText('$ history 1\r\n  502  history 1\r\n$ ', 'history 1')).toBe('  502  history 1');
    // Still: a prompt echoed twice (terminal, then REPL) is dropped both times.
    expect(turnText('print(1)\r\n>>> print(1)\r\n1\r\n>>> ', 'print(1)')).toBe('1');
    expect(turnText('$ true\r\n$ ', 'true')).toBe('');
  });

  it('renders a line with a long run of spaces in linear time (a regex trim took 9 s for 160 000)', () => {
    const line = `${' '.repeat(2_000_000)}x\n`;
    const t0 = Date.now();
    expect(toPlainLines(line)[0].length).toBe(2_000_001);
    expect(turnText(`$ go\r\n${line}$ `, 'go')).toHaveLength(2_000_001);
    // Quadratic, this is hours; linear, well under a second.
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it('takes a turn\'s answer without the echoed prompt and the ready prompt', () => {
    const raw = 'print(6*7)\r\n42\r\n>>> ';
    expect(turnText(raw, 'print(6*7)')).toBe('42');
    // Written before python read it: the terminal echoed it, then python's prompt echoed it again.
    expect(turnText('print(2**10)\r\n>>> print(2**10)\r\n1024\r\n>>> ', 'print(2**10)')).toBe('1024');
    expect(turnText('recap please\r\nline one\r\nline two\r\nPROMPT> ', 'recap please', /^PROMPT> ?$/)).toBe('line one\nline two');
  });
});
