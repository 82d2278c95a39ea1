import { isLoopbackHost } from '../../../server/common/net';

describe('telling a loopback HOST from one the network reaches (isLoopbackHost)', () => {
  it.each(['127.0.0.1', '127.1.2.3', 'localhost', 'LOCALHOST', '::1', '[::1]'])('%s is loopback', (h) => expect(isLoopbackHost(h)).toBe(true));
  it.each(['0.0.0.0', '::', '192.168.1.10', '10.0.0.1', 'my-laptop', '127.example.com', '::ffff:127.0.0.1'])('%s is not', (h) => expect(isLoopbackHost(h)).toBe(false));
});
