import { OutputLog } from '../../../server/sessions/OutputLog';

describe('OutputLog', () => {
  it('assigns consecutive offsets and returns exact slices', () => {
    const log = new OutputLog(1024);
    expect(log.append(Buffer.from('hello '))).toBe(0);
    expect(log.append(Buffer.from('world'))).toBe(6);
    expect(log.end).toBe(11);
    expect(log.slice(3)!.toString()).toBe('lo world');
    expect(log.slice(3, 8)!.toString()).toBe('lo wo');
    expect(log.slice(11)!.length).toBe(0);
  });

  it('drops the oldest chunks past its cap and says so for offsets no longer kept', () => {
    const log = new OutputLog(10);
    for (let i = 0; i < 10; i++) log.append(Buffer.from(`${i}${i}${i}${i}`));
    expect(log.end).toBe(40);
    expect(log.bytesInMemory).toBeLessThanOrEqual(14);
    expect(log.start).toBeGreaterThan(0);
    expect(log.slice(0)).toBeNull();
    expect(log.start).toBe(28);
    expect(log.slice(log.start)!.toString()).toBe('777788889999');
    expect(log.slice(36)!.toString()).toBe('9999');
    expect(log.has(41)).toBe(false);
    expect(log.slice(20, 50)).toBeNull();
  });

  it('continues offsets from where a stored stream ended', () => {
    const log = new OutputLog(100, 5000);
    expect(log.append(Buffer.from('x'))).toBe(5000);
    expect(log.slice(4999)).toBeNull();
    expect(log.slice(5000)!.toString()).toBe('x');
  });
});
