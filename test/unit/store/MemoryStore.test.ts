import { MemoryStore } from '../../../server/store/MemoryStore';
import { describeStoreContract, record } from './storeContract';

describeStoreContract('MemoryStore', {
  make: ({ maxHistoryBytes }) => new MemoryStore({ maxHistoryBytes }),
  settle: (store) => store,
  dispose: (store) => store.close(),
});

describe('MemoryStore', () => {
  it('prunes sessions that ended more than the retention ago', () => {
    const store = new MemoryStore();
    store.putSession(record({ id: 'live', endedAt: null }));
    store.putSession(record({ id: 'recent', endedAt: 9_000 }));
    store.putSession(record({ id: 'old', endedAt: 1_000 }));
    store.appendOutput('old', 0, Buffer.from('x'));
    expect(store.pruneEnded(5_000, 10_000)).toBe(1);
    expect(store.listSessions().map((s) => s.id).sort()).toEqual(['live', 'recent']);
    expect(store.outputRange('old')).toEqual({ start: 0, end: 0 });
  });
});
