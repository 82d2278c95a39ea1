/** Plain text from terminal output: escape sequences removed, carriage returns and backspaces applied. */

// CSI, OSC (BEL or ST terminated), DCS/PM/APC strings, two-byte escapes.
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[PX^_][^\x1b]*\x1b\\|\x1b[@-Z\\-_]|\x1b[()*+][0-9A-Za-z]/g;

/**
 * How much of the last line `promptPattern` (or the built-in prompt test) is
 * tested against: a prompt is far shorter, and the test runs on the daemon's
 * event loop. Config load refuses nested quantifiers only; ".*.*x$" still
 * backtracks in polynomial time of the line's length, which this bounds
 * (~0.1 s at 512; ".*.*.*x$" is still ~14 s: DECISIONS 56).
 */
export const PROMPT_TEST_MAX_CHARS = 512;

export function stripAnsi(text: string): string {
  return text.replace(ESCAPES, '');
}

/** Applies \r (return to line start, overwrite), \b and cursor-forward moves within each line. */
function renderLine(line: string): string {
  const out: string[] = [];
  let col = 0;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (ch === '\r') {
      col = 0;
    } else if (ch === '\b') {
      col = Math.max(0, col - 1);
    } else if (ch === MOVE) {
      // MOVE digits MOVE: a cursor-forward by that many columns, stopped at the right margin as a terminal does.
      const close = line.indexOf(MOVE, i + 1);
      col = Math.min(col + Number(line.slice(i + 1, close)), MAX_COLUMN);
      i = close;
    } else if (ch >= ' ' || ch === '\t') {
      out[col++] = ch;
    }
  }
  // Columns a move skipped and nothing wrote are blank (join would drop the holes).
  for (let c = 0; c < out.length; c++) out[c] ??= ' ';
  // trimEnd, not /\s+$/: that regex is quadratic on a long run of spaces inside a line (160 000 spaces took 9 s).
  return out.join('').trimEnd();
}

export function toPlainLines(raw: string): string[] {
  return stripAnsi(raw.replace(NULS, '').replace(CURSOR_FORWARD, moveMark)).split('\n').map(renderLine);
}

/*
 * Cursor forward (CSI n C) is how claude puts the gaps between words. It is
 * kept through stripAnsi as MOVE n MOVE (NUL, which terminals ignore: real
 * NULs are dropped first), and renderLine moves the column: a move costs the
 * same few bytes however far it goes.
 */
const MOVE = '\0';
// eslint-disable-next-line no-control-regex
const NULS = /\0/g;
// eslint-disable-next-line no-control-regex
const CURSOR_FORWARD = /\x1b\[(\d{0,9})C/g;
/** The right margin for moves: wider than any terminal agentd allows (MAX_COLS). */
const MAX_COLUMN = 1000;
const moveMark = (_: string, n: string) => `${MOVE}${Math.min(Number(n) || 1, MAX_COLUMN)}${MOVE}`;

/** The last non-empty line of `raw` as plain text, trimmed ('' if there is none). */
export function lastPlainLine(raw: string): string {
  const lines = toPlainLines(raw).filter((l) => l.trim() !== '');
  return (lines[lines.length - 1] ?? '').trim();
}

/**
 * What an agent answered in one turn, as plain text: the echoed prompt and
 * the ready prompt it ends on are removed.
 */
export function turnText(raw: string, prompt: string, promptPattern?: RegExp): string {
  const lines = toPlainLines(raw);
  const firstPromptLine = prompt.split('\n')[0].trim();
  if (!firstPromptLine) return answerOf(lines, promptPattern);
  // Drop everything up to and including the echo of the prompt. The last echo counts: a prompt written before the
  // agent was reading is echoed twice (by the terminal, then by the REPL). But an answer may itself end with the
  // prompt's text (`history 20` lists itself last): an echo that would leave no answer gives way to an earlier one.
  const echoes: number[] = [];
  for (let i = 0; i < lines.length; i++) if (lines[i].endsWith(firstPromptLine)) echoes.push(i);
  if (echoes.length === 0) {
    const loose = lines.findIndex((l) => l.includes(firstPromptLine));
    if (loose >= 0) echoes.push(loose);
  }
  const extra = prompt.split('\n').length - 1;
  let answer = '';
  for (let k = echoes.length - 1; k >= 0 && answer === ''; k--) answer = answerOf(lines.slice(echoes[k] + 1 + extra), promptPattern);
  return echoes.length ? answer : answerOf(lines, promptPattern);
}

/** The lines of an answer, without the ready prompt it ends on and blank lines around it. */
function answerOf(lines: string[], promptPattern?: RegExp): string {
  lines = [...lines];
  while (lines.length && lines[lines.length - 1].trim() === '') lines.pop();
  // The last line is the agent's ready prompt (">>> ", "$ ") if it matches the pattern or looks like one.
  if (lines.length) {
    const last = lines[lines.length - 1].slice(-PROMPT_TEST_MAX_CHARS);
    if (promptPattern ? promptPattern.test(last) : /^\S{0,40}[>$#%❯›]\s*$/.test(last)) lines.pop();
  }
  while (lines.length && lines[0].trim() === '') lines.shift();
  while (lines.length && lines[lines.length - 1].trim() === '') lines.pop();
  return lines.join('\n');
}
