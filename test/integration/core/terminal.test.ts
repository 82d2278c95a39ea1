import { Terminal } from '@xterm/headless';
import { startDaemon, TestDaemon } from '../../helpers/app';
import { cleanupTmp } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';

let d: TestDaemon;
beforeAll(async () => {
  d = await startDaemon();
});
afterAll(async () => {
  await d.dispose();
  cleanupTmp();
});

async function shell(): Promise<any> {
  return d.create({ agent: 'shell' });
}

function screenText(term: Terminal): string[] {
  const buf = term.buffer.active;
  const lines: string[] = [];
  for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i)!.translateToString(true));
  return lines;
}

function write(term: Terminal, data: string | Uint8Array): Promise<void> {
  return new Promise((resolve) => term.write(data, resolve));
}

describe('terminal WebSocket', () => {
  it('starts an interactive shell in its own PTY and streams its output', async () => {
    const s = await shell();
    expect(s.state).toBe('running');
    expect(typeof s.pid).toBe('number');
    const ws = d.socket(`/api/sessions/${s.id}/ws`);
    const attached = await ws.nextJson((f) => f.type === 'attached');
    expect(attached.offset).toBeGreaterThanOrEqual(0);
    expect(attached.session.id).toBe(s.id);
    await ws.nextJson((f) => f.type === 'snapshot');
    ws.sendBytes('echo hello-$((6*7))\r');
    await ws.waitOutput('hello-42');
    ws.send({ type: 'input', data: 'echo via-$((1+1))-frame\r' });
    await ws.waitOutput('via-2-frame');
  });

  it('sends the same bytes to a second client attached at the same time', async () => {
    const s = await shell();
    const a = d.socket(`/api/sessions/${s.id}/ws`);
    const b = d.socket(`/api/sessions/${s.id}/ws`);
    const [fa, fb] = await Promise.all([a.nextJson((f) => f.type === 'snapshot'), b.nextJson((f) => f.type === 'snapshot')]);
    a.sendBytes('for i in 1 2 3; do echo line-$i; done\r');
    await a.waitOutput('line-3');
    await b.waitOutput('line-3');
    // Both see the stream from their own offsets: the bytes after the later one's start are identical.
    const startA = fa.offset, startB = fb.offset;
    const common = Math.max(startA, startB);
    await waitFor(() => startA + a.output.length === startB + b.output.length, 5000, 'both at the same end');
    expect(a.output.subarray(common - startA).equals(b.output.subarray(common - startB))).toBe(true);
  });

  it('resumes from an offset with no gap and no duplicate', async () => {
    const s = await shell();
    const first = d.socket(`/api/sessions/${s.id}/ws`);
    const snap = await first.nextJson((f) => f.type === 'snapshot');
    first.sendBytes('echo before-disconnect\r');
    await first.waitOutput('before-disconnect\r\n');
    const position = snap.offset + first.output.length;
    first.close();
    await first.waitClose();
    // Output produced while nobody is attached.
    await d.api('POST', `/api/sessions/${s.id}/input`, { data: 'for i in $(seq 1 200); do echo missed-$i; done\r' });
    await waitFor(async () => (await d.api('GET', `/api/sessions/${s.id}/history?format=text`)).text.includes('missed-200'));
    const second = d.socket(`/api/sessions/${s.id}/ws?since=${position}`);
    const attached = await second.nextJson((f) => f.type === 'attached');
    expect(attached.offset).toBe(position);
    await second.waitOutput('missed-200');
    expect(second.json().some((f) => f.type === 'snapshot')).toBe(false);
    const history = await d.api('GET', `/api/sessions/${s.id}/history?format=ansi`);
    const all = Buffer.from(history.text, 'utf8');
    const start = Number(history.headers['x-agentd-offset-start']);
    const expected = all.subarray(position - start);
    await waitFor(() => second.output.length >= expected.length);
    expect(second.output.subarray(0, expected.length).equals(expected)).toBe(true);
    // Together the two connections saw the stream from the snapshot on, once.
    const together = Buffer.concat([first.output.subarray(0, position - snap.offset), second.output]);
    const fromSnapshot = all.subarray(snap.offset - start);
    expect(together.subarray(0, fromSnapshot.length).equals(fromSnapshot)).toBe(true);
  });

  it('treats an offset beyond the end of the stream as a fresh attach, however many digits it has', async () => {
    const s = await shell();
    for (const since of ['999999999', '9999999999999999', '9'.repeat(40)]) {
      const ws = d.socket(`/api/sessions/${s.id}/ws?since=${since}`);
      const attached = await ws.nextJson((f) => f.type === 'attached');
      const snap = await ws.nextJson((f) => f.type === 'snapshot');
      expect(snap.offset).toBe(attached.offset);
      ws.ws.terminate();
    }
  });

  it('reproduces the screen exactly after a flood the screen model did not parse', async () => {
    const s = await d.create({ agent: 'shell', cols: 80, rows: 24 });
    const driver = d.socket(`/api/sessions/${s.id}/ws?cols=80&rows=24`);
    await driver.nextJson((f) => f.type === 'snapshot');
    // ~6 MB at the PTY's pace: far past what the model parses (it is rebuilt from the newest bytes when read).
    driver.sendBytes("seq 1 800000; printf '\\e[1;32mflood-done\\e[0m\\n'\r");
    // This client sends no acks: if it falls 2 MiB behind (a busy machine), it is resynchronised with a snapshot
    // (the contract's flow control) and the end of the flood may reach it only there.
    await waitFor(
      () => driver.output.includes('flood-done\x1b[0m') || driver.json().some((f) => f.type === 'snapshot' && String(f.data).includes('flood-done')),
      60_000,
      'the end of the flood (live, or in a resync snapshot)',
    );
    await new Promise((r) => setTimeout(r, 300));
    const history = await d.api('GET', `/api/sessions/${s.id}/history?format=ansi`);
    const end = Number(history.headers['x-agentd-offset-end']);
    const reference = new Terminal({ cols: 80, rows: 24, scrollback: 1000, allowProposedApi: true });
    await write(reference, Buffer.from(history.text, 'utf8'));
    const viewer = d.socket(`/api/sessions/${s.id}/ws`);
    const snap = await viewer.nextJson((f) => f.type === 'snapshot');
    expect(snap.offset).toBe(end);
    const replay = new Terminal({ cols: snap.cols, rows: snap.rows, scrollback: 1000, allowProposedApi: true });
    await write(replay, snap.data);
    expect(screenText(replay)).toEqual(screenText(reference));
    expect(screenText(replay)).toContain('800000');
    expect(replay.buffer.active.cursorY).toBe(reference.buffer.active.cursorY);
    reference.dispose();
    replay.dispose();
  }, 90_000);

  it('sends a fresh client a snapshot that reproduces the screen exactly', async () => {
    const s = await d.create({ agent: 'shell', cols: 80, rows: 24 });
    const driver = d.socket(`/api/sessions/${s.id}/ws?cols=80&rows=24`);
    await driver.nextJson((f) => f.type === 'snapshot');
    driver.sendBytes("printf '\\e[31mred\\e[0m plain \\e[1;44mbold-on-blue\\e[0m\\n'; for i in $(seq 1 60); do echo row-$i; done; printf '\\e[5;10Hcursor-here'\r");
    await driver.waitOutput('cursor-here');
    // Let the shell print its prompt after the command.
    await new Promise((r) => setTimeout(r, 300));
    const history = await d.api('GET', `/api/sessions/${s.id}/history?format=ansi`);
    const reference = new Terminal({ cols: 80, rows: 24, scrollback: 1000, allowProposedApi: true });
    await write(reference, Buffer.from(history.text, 'utf8'));

    const viewer = d.socket(`/api/sessions/${s.id}/ws`);
    const snap = await viewer.nextJson((f) => f.type === 'snapshot');
    expect(snap.offset).toBe(Number(history.headers['x-agentd-offset-end']));
    const replay = new Terminal({ cols: snap.cols, rows: snap.rows, scrollback: 1000, allowProposedApi: true });
    await write(replay, snap.data);
    expect(screenText(replay)).toEqual(screenText(reference));
    expect(replay.buffer.active.cursorX).toBe(reference.buffer.active.cursorX);
    expect(replay.buffer.active.cursorY).toBe(reference.buffer.active.cursorY);
    // Colours too: the first cell of "red" is red in both.
    const row = screenText(reference).findIndex((l) => l.startsWith('red plain'));
    expect(row).toBeGreaterThanOrEqual(0);
    const cellRef = reference.buffer.active.getLine(row)!.getCell(0)!;
    const cellReplay = replay.buffer.active.getLine(row)!.getCell(0)!;
    expect(cellReplay.getFgColor()).toBe(cellRef.getFgColor());
    expect(cellReplay.getFgColor()).toBe(1);
    reference.dispose();
    replay.dispose();
  });

  it('lets the client that last typed set the size, and the next one when it leaves', async () => {
    const s = await shell();
    const phone = d.socket(`/api/sessions/${s.id}/ws?cols=40&rows=20`);
    await phone.nextJson((f) => f.type === 'snapshot');
    const laptop = d.socket(`/api/sessions/${s.id}/ws?cols=150&rows=50`);
    await laptop.nextJson((f) => f.type === 'snapshot');
    // No input yet: the most recent size wins.
    await waitFor(async () => (await d.api('GET', `/api/sessions/${s.id}`)).json.session.cols === 150);
    phone.sendBytes('stty size\r');
    await phone.waitOutput('20 40');
    phone.close();
    await waitFor(async () => (await d.api('GET', `/api/sessions/${s.id}`)).json.session.cols === 150);
    laptop.sendBytes('stty size\r');
    await laptop.waitOutput('50 150');
  });

  it('answers a bad resize with an error frame and changes nothing', async () => {
    const s = await shell();
    const ws = d.socket(`/api/sessions/${s.id}/ws?cols=100&rows=30`);
    await ws.nextJson((f) => f.type === 'snapshot');
    for (const bad of [{ cols: 0, rows: 10 }, { cols: 1001, rows: 10 }, { cols: 80, rows: 501 }, { cols: 1.5, rows: 10 }, { cols: '80', rows: 24 }, { cols: -1, rows: 5 }]) {
      ws.send({ type: 'resize', ...bad });
    }
    await waitFor(() => ws.json().filter((f) => f.type === 'error').length === 6);
    const session = (await d.api('GET', `/api/sessions/${s.id}`)).json.session;
    expect([session.cols, session.rows]).toEqual([100, 30]);
    ws.send({ type: 'resize', cols: 90, rows: 25 });
    ws.sendBytes('stty size\r');
    await ws.waitOutput('25 90');
  });

  it('answers malformed JSON and unknown frame types with an error frame; the session is unaffected', async () => {
    const s = await shell();
    const ws = d.socket(`/api/sessions/${s.id}/ws`);
    await ws.nextJson((f) => f.type === 'snapshot');
    ws.ws.send('{not json');
    ws.send({ type: 'frobnicate' });
    ws.send({ type: 'ack', offset: -3 });
    await waitFor(() => ws.json().filter((f) => f.type === 'error').length === 3);
    ws.sendBytes('echo still-$((2+3))\r');
    await ws.waitOutput('still-5');
  });

  it('closes a socket that sends a frame over 1 MiB with 1009, and the daemon lives on', async () => {
    const s = await shell();
    const ws = d.socket(`/api/sessions/${s.id}/ws`);
    await ws.nextJson((f) => f.type === 'snapshot');
    ws.sendBytes(Buffer.alloc(1024 * 1024 + 1, 'a'));
    expect(await ws.waitClose()).toBe(1009);
    const again = await d.api('GET', `/api/sessions/${s.id}`);
    expect(again.json.session.state).toBe('running');
  });
});
