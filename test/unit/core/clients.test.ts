import { binaryFrame, frameLength } from '../../../server/pty/FastOutput';
import { ClientSet, SessionClient, MAX_BUFFERED_BYTES } from '../../../server/sessions/Clients';

function fakeClient(id: string): SessionClient & { out: Buffer[]; buffered: number } {
  const c = {
    id,
    out: [] as Buffer[],
    buffered: 0,
    sendOutput(data: Buffer) {
      c.out.push(data);
    },
    sendJson() {},
    get bufferedAmount() {
      return c.buffered;
    },
    close() {},
  };
  return c;
}

describe('ClientSet', () => {
  it('gives the size of the client that most recently typed, else the most recent size', () => {
    const set = new ClientSet();
    const phone = set.add(fakeClient('phone'), 40, 20);
    const laptop = set.add(fakeClient('laptop'), 150, 50);
    expect(set.governingSize()).toEqual({ cols: 150, rows: 50 });
    set.noteInput(phone);
    expect(set.governingSize()).toEqual({ cols: 40, rows: 20 });
    set.noteSize(laptop, 160, 50);
    expect(set.governingSize()).toEqual({ cols: 40, rows: 20 });
    set.noteInput(laptop);
    expect(set.governingSize()).toEqual({ cols: 160, rows: 50 });
    set.remove(laptop.client);
    expect(set.governingSize()).toEqual({ cols: 40, rows: 20 });
  });

  it('knows which client typed last (only it may type on the native input path), and forgets one that left', () => {
    const set = new ClientSet();
    const a = set.add(fakeClient('a'), 80, 24);
    const b = set.add(fakeClient('b'));
    expect(set.typedLast(a) || set.typedLast(b)).toBe(false);
    set.noteInput(a);
    expect([set.typedLast(a), set.typedLast(b)]).toEqual([true, false]);
    set.noteInput(b);
    expect([set.typedLast(a), set.typedLast(b)]).toEqual([false, true]);
    set.remove(b.client);
    expect(set.typedLast(b)).toBe(false);
    expect(set.typedLast(a)).toBe(false);
  });

  it('never sends live bytes to a client past its watermark, and reports it once', () => {
    const set = new ClientSet();
    const fast = fakeClient('fast');
    const slow = fakeClient('slow');
    for (const c of [fast, slow]) {
      const att = set.add(c);
      att.ready = true;
    }
    slow.buffered = MAX_BUFFERED_BYTES + 1;
    expect(set.broadcast(Buffer.from('a'), 0).map((a) => a.client.id)).toEqual(['slow']);
    expect(set.broadcast(Buffer.from('b'), 1)).toEqual([]);
    expect(Buffer.concat(fast.out).toString()).toBe('ab');
    expect(slow.out).toEqual([]);
  });

  it('holds live bytes for a client that is not ready yet (snapshot in flight)', () => {
    const set = new ClientSet();
    const c = fakeClient('c');
    set.add(c);
    set.broadcast(Buffer.from('x'), 0);
    expect(c.out).toEqual([]);
  });
});

/** A native output path of our own: `next` says what the reader wrote per slot for the coming chunk. */
function fakeFast() {
  const f = {
    active: true,
    armed: new Map<number, number>(),
    next: new Map<number, number>(),
    arm(slot: number, fd: number) {
      f.armed.set(slot, fd);
      return true;
    },
    disarm(slot: number) {
      f.armed.delete(slot);
    },
    sentTo(slot: number) {
      return f.armed.has(slot) ? (f.next.get(slot) ?? -1) : -1;
    },
  };
  return f;
}

function fastClient(id: string, fd: number) {
  const c = Object.assign(fakeClient(id), {
    framed: [] as Buffer[],
    clean: true,
    onWrite: null as (() => void) | null,
    fastFd: () => (c.clean ? fd : null),
    sendFramed(frames: Buffer) {
      c.onWrite?.();
      c.framed.push(frames);
    },
  });
  const send = c.sendOutput;
  c.sendOutput = (data: Buffer) => {
    c.onWrite?.();
    send(data);
  };
  return c;
}

/** A set with one ready client, after the chunk 'a' at offset 0 (sent the usual way; the client is armed after it). */
function armedAfterA() {
  const set = new ClientSet();
  const fast = fakeFast();
  const c = fastClient('c', 41);
  const att = set.add(c);
  att.ready = true;
  set.broadcast(Buffer.from('a'), 0, fast);
  return { set, fast, c, att };
}

describe('ClientSet with a native output path', () => {
  it('arms a caught-up client with a clean socket, and does not send again what the reader sent', () => {
    const { set, fast, c, att } = armedAfterA(); // sent the usual way; armed after it
    expect(Buffer.concat(c.out).toString()).toBe('a');
    expect([...fast.armed.values()]).toEqual([41]);
    fast.next.set(att.slot, frameLength(1));
    set.broadcast(Buffer.from('b'), 1, fast);
    expect(Buffer.concat(c.out).toString()).toBe('a');
    expect(att.position).toBe(2);
    expect(set.fastStats).toEqual({ sent: 1, partial: 0 });
  });

  it('sends the rest of a frame the reader only began, then disarms the client', () => {
    const { set, fast, c, att } = armedAfterA();
    const chunk = Buffer.from('hello world');
    fast.next.set(att.slot, 3);
    c.clean = false; // what it sends now stays queued: no re-arming
    set.broadcast(chunk, 1, fast);
    expect(Buffer.concat(c.framed)).toEqual(binaryFrame(chunk).subarray(3));
    expect(att.slot).toBe(-1);
    expect(fast.armed.size).toBe(0);
    expect(att.position).toBe(1 + chunk.length);
    expect(set.fastStats).toEqual({ sent: 1, partial: 1 });
  });

  it('sends the usual way when the reader wrote nothing there (socket full), and disarms on any other write', () => {
    const { set, fast, c, att } = armedAfterA();
    fast.next.set(att.slot, 0);
    set.broadcast(Buffer.from('b'), 1, fast);
    expect(Buffer.concat(c.out).toString()).toBe('ab');
    // Re-armed after it (the socket is clean again); a JSON frame of ours disarms it first.
    expect(att.slot).toBeGreaterThanOrEqual(0);
    c.sendFramed(Buffer.alloc(0));
    expect(att.slot).toBe(-1);
    expect(fast.armed.size).toBe(0);
  });

  it('never arms a client that is not caught up, is lagging, or has something queued; lets go of slots on remove and on another terminal', () => {
    const set = new ClientSet();
    const fast = fakeFast();
    const behind = fastClient('behind', 40);
    const queued = fastClient('queued', 41);
    const ok = fastClient('ok', 42);
    set.add(behind).ready = true;
    set.add(queued).ready = true;
    set.add(ok).ready = true;
    set.get(behind)!.position = 5; // catching up through its own path
    queued.clean = false;
    set.broadcast(Buffer.from('a'), 0, fast);
    expect([...fast.armed.values()]).toEqual([42]);
    set.remove(ok);
    expect(fast.armed.size).toBe(0);
    const again = fastClient('again', 43);
    set.add(again).ready = true;
    set.get(again)!.position = 1;
    set.broadcast(Buffer.from('b'), 1, fast);
    expect([...fast.armed.values()]).toEqual([43]);
    const other = fakeFast();
    set.broadcast(Buffer.from('c'), 2, other);
    expect(fast.armed.size).toBe(0);
    expect(Buffer.concat(again.out).toString()).toBe('bc');
  });
});

describe('ClientSet with a native output path, when its bookkeeping broke', () => {
  it('finishes the frame the reader began for an armed client out of step, lets its slot go and resynchronises it', () => {
    const { set, fast, c, att } = armedAfterA();
    att.position = 0; // as if a chunk's bookkeeping was lost (an exception in the middle of onData)
    const chunk = Buffer.from('hello');
    fast.next.set(att.slot, 2);
    expect(set.broadcast(chunk, 1, fast)).toEqual([att]);
    expect(Buffer.concat(c.framed)).toEqual(binaryFrame(chunk).subarray(2));
    expect(att.slot).toBe(-1);
    expect(att.lagging).toBe(true);
    expect(fast.armed.size).toBe(0);
  });
});
