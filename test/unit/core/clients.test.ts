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
