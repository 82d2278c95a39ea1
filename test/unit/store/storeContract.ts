import { randomBytes } from 'node:crypto';
import type { SessionRecord, SessionStore, TurnRecord } from '../../../server/store/SessionStore';

/**
 * What every SessionStore must do, whatever holds the data. `settle` moves
 * the store to the state under test (nothing flushed, flushed, closed and
 * reopened) and returns the store to read from; writes then reads must agree
 * in every state.
 */
export interface ContractTarget {
  /** A fresh, empty store with the given history cap. */
  make(options: { maxHistoryBytes?: number }): SessionStore;
  settle(store: SessionStore): SessionStore;
  dispose(store: SessionStore): void;
}

export function record(overrides: Partial<SessionRecord> = {}): SessionRecord {
  return {
    id: 'S1',
    agent: 'claude',
    projectPath: '/home/dev/project',
    state: 'running',
    pid: 4242,
    pidStartTime: 987654,
    tag: 'tag-abc',
    agentSessionId: '0b5f0f3c-6a59-4f0a-9c2b-3b7d1f1e2a10',
    createdAt: 1_767_225_600_000,
    lastActivityAt: 1_767_225_601_000,
    expiresAt: 1_767_312_000_000,
    warnedAt: 1_767_300_000_000,
    endedAt: null,
    cols: 120,
    rows: 40,
    exitCode: null,
    signal: null,
    endReason: null,
    deviceToken: 'apns-device-token',
    outputBytes: 0,
    ...overrides,
  };
}

export function turn(overrides: Partial<TurnRecord> = {}): TurnRecord {
  return {
    id: 'T1',
    sessionId: 'S1',
    kind: 'chat',
    prompt: 'fix the failing test',
    response: null,
    status: 'running',
    startedAt: 1000,
    endedAt: null,
    deviceId: null,
    ...overrides,
  };
}

export function describeStoreContract(name: string, target: ContractTarget): void {
  describe(`${name}: the SessionStore contract`, () => {
    let store: SessionStore;
    const open = (maxHistoryBytes?: number): SessionStore => (store = target.make({ maxHistoryBytes }));
    const settle = (): SessionStore => (store = target.settle(store));
    afterEach(() => target.dispose(store));

    it('round-trips every session field, set and null', () => {
      open();
      const full = record({ endedAt: 5, exitCode: 3, signal: 9, endReason: 'memory_limit: 612 MB', state: 'killed', outputBytes: 0 });
      const empty = record({
        id: 'S2', pid: null, pidStartTime: null, tag: null, agentSessionId: null, expiresAt: null, warnedAt: null,
        endedAt: null, exitCode: null, signal: null, endReason: null, deviceToken: null, state: 'starting',
      });
      store.putSession(full);
      store.putSession(empty);
      settle();
      expect(store.getSession('S1')).toEqual(full);
      expect(store.getSession('S2')).toEqual(empty);
      expect(store.getSession('nope')).toBeUndefined();
    });

    it('replaces a session on put and lists newest first', () => {
      open();
      store.putSession(record({ id: 'old', createdAt: 1 }));
      store.putSession(record({ id: 'new', createdAt: 3 }));
      store.putSession(record({ id: 'mid', createdAt: 2, state: 'idle' }));
      store.putSession(record({ id: 'mid', createdAt: 2, state: 'busy' }));
      settle();
      expect(store.listSessions().map((s) => [s.id, s.state])).toEqual([['new', 'running'], ['mid', 'busy'], ['old', 'running']]);
    });

    it('deletes a session with its output, snapshots, events and turns', () => {
      open();
      store.putSession(record());
      store.appendOutput('S1', 0, Buffer.from('hello'));
      store.putSnapshot({ sessionId: 'S1', offset: 5, cols: 80, rows: 24, data: 'screen', createdAt: 1 });
      store.addEvent({ sessionId: 'S1', type: 'created', at: 1, detail: null });
      store.putTurn(turn());
      settle();
      store.deleteSession('S1');
      settle();
      expect(store.getSession('S1')).toBeUndefined();
      expect(store.listSessions()).toEqual([]);
      expect(store.outputRange('S1')).toEqual({ start: 0, end: 0 });
      expect(store.latestSnapshot('S1')).toBeUndefined();
      expect(store.listEvents('S1')).toEqual([]);
      expect(store.listTurns('S1')).toEqual([]);
    });

    it('reads back exactly the bytes [from, to) across many appends', () => {
      open();
      const all = randomBytes(300_000);
      let offset = 0;
      for (const size of [1, 7, 4096, 100_000, 3, 65_536, 130_000 - 2]) {
        store.appendOutput('S1', offset, all.subarray(offset, offset + size));
        offset += size;
      }
      store.appendOutput('S1', offset, all.subarray(offset));
      settle();
      expect(store.outputRange('S1')).toEqual({ start: 0, end: all.length });
      const whole = store.readOutput('S1', 0);
      expect(whole?.offset).toBe(0);
      expect(whole?.data.equals(all)).toBe(true); // Buffer.equals: jest's deep equality is slow on 300 KB
      for (const [from, to] of [[0, 1], [5, 4100], [65_000, 200_000], [299_999, 300_000], [123_456, 123_457]]) {
        expect(store.readOutput('S1', from, to)?.data.equals(all.subarray(from, to))).toBe(true);
      }
      expect(store.readOutput('S1', 1000, 1000)?.data.length).toBe(0);
      expect(store.readOutput('S1', all.length)).toEqual({ offset: all.length, data: Buffer.alloc(0) });
      expect(store.readOutput('S1', 10, all.length + 500)?.data.equals(all.subarray(10))).toBe(true);
    });

    it('skips bytes it already holds when an append overlaps', () => {
      open();
      store.appendOutput('S1', 0, Buffer.from('abcdef'));
      settle();
      store.appendOutput('S1', 3, Buffer.from('defghi'));
      store.appendOutput('S1', 0, Buffer.from('abc'));
      settle();
      expect(store.readOutput('S1', 0)?.data.toString()).toBe('abcdefghi');
    });

    it('restarts the history at a gap in the stream', () => {
      open();
      store.appendOutput('S1', 0, Buffer.from('before'));
      settle();
      store.appendOutput('S1', 100, Buffer.from('after'));
      settle();
      expect(store.outputRange('S1')).toEqual({ start: 100, end: 105 });
      expect(store.readOutput('S1', 0)).toBeNull();
      expect(store.readOutput('S1', 100)?.data.toString()).toBe('after');
    });

    it('starts a stream at the offset of its first append', () => {
      open();
      store.appendOutput('S1', 5000, Buffer.from('resumed'));
      settle();
      expect(store.outputRange('S1')).toEqual({ start: 5000, end: 5007 });
      expect(store.readOutput('S1', 4999)).toBeNull();
      expect(store.readOutput('S1', 5002, 5004)?.data.toString()).toBe('su');
    });

    it('returns null below what is kept and an empty range for an unknown session', () => {
      open();
      expect(store.outputRange('ghost')).toEqual({ start: 0, end: 0 });
      expect(store.readOutput('ghost', 0)).toEqual({ offset: 0, data: Buffer.alloc(0) });
      expect(store.readOutput('ghost', -1)).toBeNull();
    });

    it('caps history by dropping the oldest bytes, keeping at least the cap', () => {
      const cap = 100_000;
      open(cap);
      const all = randomBytes(1_000_000);
      for (let offset = 0; offset < all.length; offset += 10_000) {
        store.appendOutput('S1', offset, all.subarray(offset, offset + 10_000));
        if (offset % 200_000 === 0) settle();
      }
      settle();
      const { start, end } = store.outputRange('S1');
      expect(end).toBe(all.length);
      expect(end - start).toBeGreaterThanOrEqual(cap);
      expect(end - start).toBeLessThan(cap + 70_000);
      expect(store.readOutput('S1', start - 1)).toBeNull();
      expect(store.readOutput('S1', start)?.data.equals(all.subarray(start))).toBe(true);
    });

    it('reports the output end as the session outputBytes', () => {
      open();
      store.putSession(record({ outputBytes: 0 }));
      store.appendOutput('S1', 0, Buffer.from('12345'));
      settle();
      expect(store.getSession('S1')?.outputBytes).toBe(5);
      expect(store.listSessions()[0].outputBytes).toBe(5);
      store.putSession(record({ outputBytes: 9 }));
      settle();
      expect(store.getSession('S1')?.outputBytes).toBe(9);
    });

    it('keeps the newest snapshots and finds the latest at or before an offset', () => {
      open();
      for (const offset of [10, 50, 20, 40, 30]) {
        store.putSnapshot({ sessionId: 'S1', offset, cols: 100, rows: 30, data: `screen at ${offset} ─ ✓ \x1b[31mred\x1b[0m`, createdAt: offset * 2 });
      }
      store.putSnapshot({ sessionId: 'S2', offset: 1, cols: 80, rows: 24, data: 'other', createdAt: 1 });
      settle();
      expect(store.latestSnapshot('S1')).toEqual({ sessionId: 'S1', offset: 50, cols: 100, rows: 30, data: 'screen at 50 ─ ✓ \x1b[31mred\x1b[0m', createdAt: 100 });
      expect(store.latestSnapshot('S1', 45)?.offset).toBe(40);
      expect(store.latestSnapshot('S1', 30)?.offset).toBe(30);
      expect(store.latestSnapshot('S1', 25)).toBeUndefined(); // 10 and 20 were dropped: only three are kept
      expect(store.latestSnapshot('S2')?.data).toBe('other');
    });

    it('round-trips events with their JSON detail, in time order', () => {
      open();
      store.addEvent({ sessionId: 'S1', type: 'created', at: 10, detail: { agent: 'claude', args: ['--resume', 'x'], nested: { n: 1.5, ok: true, none: null } } });
      store.addEvent({ sessionId: 'S1', type: 'killed', at: 30, detail: { reason: 'memory_limit', usedMB: 612 } });
      store.addEvent({ sessionId: 'S1', type: 'attached', at: 20, detail: null });
      store.addEvent({ sessionId: 'S2', type: 'created', at: 1, detail: null });
      settle();
      expect(store.listEvents('S1')).toEqual([
        { sessionId: 'S1', type: 'created', at: 10, detail: { agent: 'claude', args: ['--resume', 'x'], nested: { n: 1.5, ok: true, none: null } } },
        { sessionId: 'S1', type: 'attached', at: 20, detail: null },
        { sessionId: 'S1', type: 'killed', at: 30, detail: { reason: 'memory_limit', usedMB: 612 } },
      ]);
    });

    it('round-trips turns and updates one in place', () => {
      open();
      store.putTurn(turn({ id: 'T2', startedAt: 2000, kind: 'recap', deviceId: 'iphone' }));
      store.putTurn(turn());
      settle();
      store.putTurn(turn({ response: 'Done: 3 files changed', status: 'completed', endedAt: 1500 }));
      settle();
      expect(store.listTurns('S1')).toEqual([
        turn({ response: 'Done: 3 files changed', status: 'completed', endedAt: 1500 }),
        turn({ id: 'T2', startedAt: 2000, kind: 'recap', deviceId: 'iphone' }),
      ]);
      expect(store.listTurns('S2')).toEqual([]);
    });

    it('reports ok health', () => {
      open();
      expect(store.health()).toEqual({ status: 'ok' });
    });
  });
}
