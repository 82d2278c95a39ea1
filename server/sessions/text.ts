/** Plain text from terminal output: escape sequences removed, carriage returns and backspaces applied. */

// CSI, OSC (BEL or ST terminated), DCS/PM/APC strings, two-byte escapes.
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[PX^_][^\x1b]*\x1b\\|\x1b[@-Z\\-_]|\x1b[()*+][0-9A-Za-z]/g;

export function stripAnsi(text: string): string {
  return text.replace(ESCAPES, '');
}

/** Applies \r (return to line start, overwrite) and \b within each line. */
function renderLine(line: string): string {
  let out: string[] = [];
  let col = 0;
  for (const ch of line) {
    if (ch === '\r') {
      col = 0;
    } else if (ch === '\b') {
      col = Math.max(0, col - 1);
    } else if (ch >= ' ' || ch === '\t') {
      out[col++] = ch;
    }
  }
  out = out.slice(0, Math.max(col, out.length));
  return out.join('').replace(/\s+$/, '');
}

export function toPlainLines(raw: string): string[] {
  return stripAnsi(raw).split('\n').map(renderLine);
}

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
  // Drop everything up to and including the echo of the prompt.
  if (firstPromptLine) {
    // The last echo counts: a prompt written before the agent was reading is echoed twice (by the terminal, then by the REPL).
    let echo = -1;
    for (let i = 0; i < lines.length; i++) if (lines[i].trimEnd().endsWith(firstPromptLine)) echo = i;
    if (echo < 0) echo = lines.findIndex((l) => l.includes(firstPromptLine));
    if (echo >= 0) lines.splice(0, echo + 1 + (prompt.split('\n').length - 1));
  }
  while (lines.length && lines[lines.length - 1].trim() === '') lines.pop();
  // The last line is the agent's ready prompt (">>> ", "$ ") if it matches the pattern or looks like one.
  if (lines.length) {
    const last = lines[lines.length - 1];
    if (promptPattern ? promptPattern.test(last) : /^\S{0,40}[>$#%❯›]\s*$/.test(last)) lines.pop();
  }
  while (lines.length && lines[0].trim() === '') lines.shift();
  while (lines.length && lines[lines.length - 1].trim() === '') lines.pop();
  return lines.join('\n');
}
