import { agentLikeOutput } from '../../../bench/persist';
import { SqliteStore } from '../../../server/store/SqliteStore';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';

/** The bar from research/perf-limits.md: tmux returns 10 MiB worth of scrollback in ~60 ms. */
const ATTACH_BUDGET_MS = 100;
const HISTORY_BYTES = 10 * 1024 * 1024;

afterAll(cleanupTmp);

describe('SqliteStore with a long history', () => {
  it('attaches to a session with 10 MB of history in well under 100 ms, after a restart', () => {
    const dataDir = tmpdir('history');
    const history = agentLikeOutput(HISTORY_BYTES, 3);
    let store = SqliteStore.open({ dataDir });
    for (let offset = 0; offset < history.length; offset += 4096) store.appendOutput('S1', offset, history.subarray(offset, offset + 4096));
    store.close();

    store = SqliteStore.open({ dataDir });
    try {
      const started = performance.now();
      const slice = store.readOutput('S1', 0);
      const elapsed = performance.now() - started;
      expect(slice?.data.equals(history)).toBe(true);
      expect(elapsed).toBeLessThan(ATTACH_BUDGET_MS);

      const tailStarted = performance.now();
      const tail = store.readOutput('S1', HISTORY_BYTES - 200_000);
      expect(performance.now() - tailStarted).toBeLessThan(10);
      expect(tail?.data.equals(history.subarray(HISTORY_BYTES - 200_000))).toBe(true);
    } finally {
      store.close();
    }
  });
});
