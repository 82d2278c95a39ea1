/**
 * The screen model, off the output path: a worker thread that keeps one
 * headless xterm per session, fed every output byte in order, and answers
 * snapshot requests with the serialized screen at an exact stream offset.
 * A terminal that has been quiet for a while is serialized and disposed, so an
 * idle session costs a string, not a live terminal (~17 MB with scrollback).
 */
import { parentPort } from 'node:worker_threads';
import { Terminal } from '@xterm/headless';
import { SerializeAddon } from '@xterm/addon-serialize';
import { canReleaseMemory, collectGarbage, releaseMemorySoon } from '../common/memory';
import type { ScreenRequest, ScreenReply } from './screenProtocol';

/** Lines of scrollback kept in the screen model and its snapshots. */
export const SCREEN_SCROLLBACK = 1_000;
/** A terminal unused this long is folded into its serialized form. */
const EVICT_AFTER_MS = 15_000;
const EVICT_SWEEP_MS = 5_000;
/** Live terminals kept at most (~2.5 MB each); the least recently used beyond this are folded. */
const MAX_LIVE = 16;

interface ScreenState {
  cols: number;
  rows: number;
  term: Terminal | null;
  serializer: SerializeAddon | null;
  /** Serialized form (UTF-8) while no live terminal is held: a flat Buffer, not the string rope serialize() builds (~2 MB of heap). */
  folded: Buffer | null;
  consumed: number;
  lastUse: number;
  /** Bumped on every use: a fold that finds it changed was overtaken by new work and is dropped. */
  uses: number;
  /** A fold is waiting for the terminal's queued writes. */
  folding: boolean;
}

const screens = new Map<string, ScreenState>();

function live(state: ScreenState): Terminal {
  state.lastUse = Date.now();
  state.uses++;
  if (state.term) return state.term;
  const term = new Terminal({ cols: state.cols, rows: state.rows, scrollback: SCREEN_SCROLLBACK, allowProposedApi: true });
  const serializer = new SerializeAddon();
  term.loadAddon(serializer as never);
  if (state.folded) term.write(state.folded);
  state.term = term;
  state.serializer = serializer;
  state.folded = null;
  liveCount++;
  if (liveCount - foldingCount > MAX_LIVE) foldLeastRecent(state);
  return term;
}

function serialize(state: ScreenState): string {
  if (!state.term || !state.serializer) return state.folded ? state.folded.toString('utf8') : '';
  return state.serializer.serialize({ scrollback: SCREEN_SCROLLBACK });
}

let liveCount = 0;
/** Live terminals with a fold under way (they no longer count against MAX_LIVE). */
let foldingCount = 0;
let foldedSinceGc = false;

function fold(state: ScreenState): void {
  if (!state.term || state.folding) return;
  const term = state.term;
  const uses = state.uses;
  state.folding = true;
  foldingCount++;
  term.write('', () => {
    if (!state.folding) return; // closed meanwhile, and counted there
    state.folding = false;
    foldingCount--;
    // Disposed meanwhile, or written to again (those bytes are queued after this point): keep it live.
    if (state.term !== term || state.uses !== uses) return;
    state.folded = Buffer.from(serialize(state), 'utf8');
    term.dispose();
    state.term = null;
    state.serializer = null;
    liveCount--;
    foldedSinceGc = true;
  });
}

function foldLeastRecent(except: ScreenState): void {
  let oldest: ScreenState | null = null;
  for (const s of screens.values()) if (s !== except && s.term && !s.folding && (!oldest || s.lastUse < oldest.lastUse)) oldest = s;
  if (oldest) fold(oldest);
}

function reply(message: ScreenReply): void {
  parentPort!.postMessage(message);
}

function handle(msg: ScreenRequest): void {
  switch (msg.type) {
    case 'open':
      screens.set(msg.id, {
        cols: msg.cols,
        rows: msg.rows,
        term: null,
        serializer: null,
        folded: msg.base ? Buffer.from(msg.base, 'utf8') : null,
        consumed: msg.offset,
        lastUse: Date.now(),
        uses: 0,
        folding: false,
      });
      return;
    case 'data': {
      const state = screens.get(msg.id);
      if (!state) return;
      state.consumed += msg.data.length;
      const consumed = state.consumed;
      live(state).write(msg.data, () => reply({ type: 'progress', id: msg.id, consumed }));
      return;
    }
    case 'resize': {
      const state = screens.get(msg.id);
      if (!state) return;
      state.cols = msg.cols;
      state.rows = msg.rows;
      live(state).resize(msg.cols, msg.rows);
      return;
    }
    case 'snapshot': {
      const state = screens.get(msg.id);
      if (!state) {
        reply({ type: 'snapshot', requestId: msg.requestId, error: 'unknown screen' });
        return;
      }
      const offset = state.consumed;
      const term = live(state);
      term.write('', () => {
        reply({ type: 'snapshot', requestId: msg.requestId, offset, cols: state.cols, rows: state.rows, data: serialize(state) });
      });
      return;
    }
    case 'text': {
      const state = screens.get(msg.id);
      if (!state) {
        reply({ type: 'text', requestId: msg.requestId, error: 'unknown screen' });
        return;
      }
      const term = live(state);
      term.write('', () => {
        const buf = term.buffer.active;
        const lines: string[] = [];
        for (let i = buf.baseY; i < buf.baseY + term.rows; i++) lines.push(buf.getLine(i)?.translateToString(true) ?? '');
        reply({ type: 'text', requestId: msg.requestId, lines });
      });
      return;
    }
    case 'close': {
      const state = screens.get(msg.id);
      if (state?.term) {
        state.term.dispose();
        state.term = null;
        liveCount--;
        if (state.folding) {
          state.folding = false;
          foldingCount--;
        }
      }
      screens.delete(msg.id);
      return;
    }
  }
}

parentPort!.on('message', (msg: ScreenRequest) => {
  try {
    handle(msg);
  } catch (err) {
    // A bad sequence must not take the screen model down for every session.
    reply({ type: 'error', id: 'id' in msg ? msg.id : undefined, message: (err as Error).message });
  }
});

const sweep = setInterval(() => {
  const now = Date.now();
  for (const state of screens.values()) if (state.term && now - state.lastUse > EVICT_AFTER_MS) fold(state);
  if (foldedSinceGc) {
    foldedSinceGc = false;
    // A collection frees the folded terminals; with the memory helper built, the allocator then hands the memory back.
    if (canReleaseMemory()) releaseMemorySoon();
    // Folded terminals leave garbage that an idle worker would otherwise keep for good.
    else collectGarbage?.();
  }
}, EVICT_SWEEP_MS);
sweep.unref();
