/**
 * What an agent tells the daemon, whatever the channel (claude's hooks,
 * codex's OSC 7501 and notify, the screen). Pure data: the session decides
 * what a signal means for its state and turns.
 */

/** One answer of a permission question; `id` is what the agent's dialog shows (claude and codex: "1", "2", …). */
export interface PermissionOption {
  id: string;
  label: string;
}

export type AgentSignal =
  /** The agent accepts input now. `agentSessionId` is claude's session id (it changes after /clear). */
  | { kind: 'ready'; agentSessionId?: string; source?: string }
  | { kind: 'turn-started'; prompt: string }
  /** The turn is over; `text` is the agent's last message. `error` is set when it ended on an API failure. */
  | { kind: 'turn-ended'; text: string; error?: string }
  | { kind: 'permission'; prompt: string; options: PermissionOption[] }
  /** The agent has been idle at its prompt for a while (claude: 60 s after a turn). */
  | { kind: 'waiting' }
  | { kind: 'ended'; reason?: string };

/** The keys that pick a numbered option in both agents' dialogs: the digit alone, no Enter. */
export function digitKeys(optionId: string): string {
  if (!/^[1-9]$/.test(optionId)) throw new RangeError(`not a dialog option: ${JSON.stringify(optionId)}`);
  return optionId;
}

/** One dialog on screen: the question and its numbered options, as the agent drew them. */
export interface ScreenDialog {
  prompt: string;
  options: PermissionOption[];
}

// Claude drops the space after "2." when the label wraps ("2.Yes, and don't ask again for …").
const OPTION_LINE = /^\s*(?:[❯›>]\s*)?([1-9])\.\s*(\S.*?)\s*$/;

/**
 * Reads the numbered options that end just above the line at `endIndex`
 * (exclusive), walking up. A wrapped label's continuation lines (indented,
 * not numbered) are joined to the option above them. Returns the options in
 * order and the index of the first option line.
 */
export function optionsAbove(lines: string[], endIndex: number): { options: PermissionOption[]; firstLine: number } {
  const options: PermissionOption[] = [];
  let continuation: string[] = [];
  let firstLine = endIndex;
  let i = endIndex - 1;
  // Blank lines between the options and the footer.
  while (i >= 0 && lines[i].trim() === '') i--;
  for (; i >= 0; i--) {
    const line = lines[i];
    const m = OPTION_LINE.exec(line);
    if (m) {
      options.unshift({ id: m[1], label: joinWrapped([m[2], ...continuation]) });
      continuation = [];
      firstLine = i;
      if (m[1] === '1') break;
      continue;
    }
    // Only an indented line can continue a wrapped label (the option above it).
    if (line.trim() === '' || !/^\s{3,}\S/.test(line)) break;
    continuation.unshift(line.trim());
  }
  return { options, firstLine };
}

/** Joins a label's wrapped pieces; a piece ending in a hyphenated word ("file-") was broken inside the word. */
function joinWrapped(pieces: string[]): string {
  let out = '';
  for (const piece of pieces) {
    const p = piece.trim();
    if (!p) continue;
    out = out === '' ? p : /\S-$/.test(out) ? out + p : `${out} ${p}`;
  }
  return out.replace(/\s+/g, ' ');
}

/**
 * The numbered options of a dialog whose last line matches `footer` (the
 * lowest such line on screen), or null when there is none or it lists fewer
 * than two options starting at 1.
 */
export function dialogOptions(lines: string[], footer: RegExp): { options: PermissionOption[]; firstLine: number } | null {
  let end = -1;
  for (let i = lines.length - 1; i >= 0; i--) {
    if (footer.test(lines[i])) {
      end = i;
      break;
    }
  }
  if (end < 0) return null;
  const found = optionsAbove(lines, end);
  return found.options.length >= 2 && found.options[0].id === '1' ? found : null;
}
