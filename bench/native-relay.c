/*
 * A minimal PTY <-> WebSocket relay in C: what a native server of ttyd's kind
 * pays on this machine, measured by bench/core.ts beside agentd, the minimal
 * Node relay and raw node-pty in the same run (ttyd itself cannot be built
 * here). Not part of agentd.
 *
 *   cc -O2 -o native-relay bench/native-relay.c -lutil
 *   native-relay <program> [args...]   prints {"port":N} once listening on 127.0.0.1
 *
 * One single-threaded epoll loop, like ttyd's: each WebSocket connection gets
 * its own PTY running the program (the request's path and query are ignored);
 * client frames (masked, binary or text) are written to the PTY as they come,
 * PTY output goes out in binary frames with one writev. Bounded, not robust:
 * client frames up to 65 528 bytes of payload (a bigger one drops the
 * connection), no fragmentation, and a write to a full socket or PTY waits,
 * holding the loop. It and its programs die with the process that started it
 * (PR_SET_PDEATHSIG), so a killed bench leaves nothing running.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* ── SHA-1 (RFC 3174), for Sec-WebSocket-Accept only ── */
typedef struct { uint32_t h[5]; uint64_t len; uint8_t buf[64]; size_t n; } sha1_t;
#define ROL(x, c) (((x) << (c)) | ((x) >> (32 - (c))))
static void sha1_block(sha1_t *s, const uint8_t *p) {
  uint32_t w[80], a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
  for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 80; i++) w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  for (int i = 0; i < 80; i++) {
    uint32_t f, k;
    if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
    else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
    else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
    else f = b ^ c ^ d, k = 0xCA62C1D6;
    uint32_t t = ROL(a, 5) + f + e + k + w[i];
    e = d, d = c, c = ROL(b, 30), b = a, a = t;
  }
  s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d, s->h[4] += e;
}
static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
  sha1_t s = {{0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0}, 0, {0}, 0};
  for (size_t i = 0; i < len; i++) {
    s.buf[s.n++] = data[i];
    if (s.n == 64) sha1_block(&s, s.buf), s.n = 0;
  }
  uint64_t bits = (uint64_t)len * 8;
  s.buf[s.n++] = 0x80;
  if (s.n > 56) {
    while (s.n < 64) s.buf[s.n++] = 0;
    sha1_block(&s, s.buf), s.n = 0;
  }
  while (s.n < 56) s.buf[s.n++] = 0;
  for (int i = 7; i >= 0; i--) s.buf[s.n++] = (uint8_t)(bits >> (8 * i));
  sha1_block(&s, s.buf);
  for (int i = 0; i < 20; i++) out[i] = (uint8_t)(s.h[i / 4] >> (24 - 8 * (i % 4)));
}
static void base64(const uint8_t *in, size_t len, char *out) {
  static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
    out[o++] = t[v >> 18 & 63];
    out[o++] = t[v >> 12 & 63];
    out[o++] = i + 1 < len ? t[v >> 6 & 63] : '=';
    out[o++] = i + 2 < len ? t[v & 63] : '=';
  }
  out[o] = 0;
}

/* ── connections ── */
enum { MAXFD = 4096, BUF = 1 << 16 };
typedef struct {
  int sock, pty;      /* pty = -1 until the handshake is done */
  pid_t child;
  size_t n;           /* bytes in in[] */
  uint8_t in[BUF + 16];
} conn_t;
static conn_t *bysock[MAXFD], *bypty[MAXFD];
static int ep;
static char **program;

static void writeall(int fd, struct iovec *iov, int cnt) {
  while (cnt > 0) {
    ssize_t w = writev(fd, iov, cnt);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) { struct pollfd p = {fd, POLLOUT, 0}; poll(&p, 1, 1000); continue; }
      return;
    }
    while (cnt > 0 && (size_t)w >= iov->iov_len) w -= (ssize_t)iov->iov_len, iov++, cnt--;
    if (cnt > 0) iov->iov_base = (char *)iov->iov_base + w, iov->iov_len -= (size_t)w;
  }
}

static void drop(conn_t *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->sock, NULL);
  close(c->sock);
  bysock[c->sock] = NULL;
  if (c->pty >= 0) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->pty, NULL);
    close(c->pty);
    bypty[c->pty] = NULL;
    kill(c->child, SIGKILL);
    waitpid(c->child, NULL, 0);
  }
  free(c);
}

static int handshake(conn_t *c) {
  c->in[c->n] = 0;
  char *end = strstr((char *)c->in, "\r\n\r\n");
  if (!end) return c->n < BUF ? 0 : -1;
  char *k = strcasestr((char *)c->in, "Sec-WebSocket-Key:");
  if (!k) return -1;
  k += 18;
  while (*k == ' ') k++;
  char key[128];
  size_t kl = strcspn(k, "\r\n");
  if (kl > 60) return -1;
  snprintf(key, sizeof key, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)kl, k);
  uint8_t digest[20];
  char accept[32], reply[256];
  sha1((uint8_t *)key, strlen(key), digest);
  base64(digest, 20, accept);
  int len = snprintf(reply, sizeof reply, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
  struct iovec iov = {reply, (size_t)len};
  writeall(c->sock, &iov, 1);
  size_t used = (size_t)(end + 4 - (char *)c->in);
  memmove(c->in, c->in + used, c->n - used);
  c->n -= used;

  struct winsize ws = {40, 120, 0, 0};
  int master;
  pid_t pid = forkpty(&master, NULL, NULL, &ws);
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* the relay's death ends the program */
    setenv("TERM", "xterm-256color", 1);
    execvp(program[0], program);
    _exit(127);
  }
  fcntl(master, F_SETFL, O_NONBLOCK);
  fcntl(master, F_SETFD, FD_CLOEXEC);
  c->pty = master;
  c->child = pid;
  bypty[master] = c;
  struct epoll_event ev = {EPOLLIN, {.fd = master}};
  epoll_ctl(ep, EPOLL_CTL_ADD, master, &ev);
  return 1;
}

/* Writes every complete client frame's payload to the PTY; 0 to keep going, -1 to drop. */
static int frames(conn_t *c) {
  size_t off = 0;
  while (c->n - off >= 6) {
    uint8_t *f = c->in + off, op = f[0] & 15;
    uint64_t len = f[1] & 127;
    size_t hdr = 2;
    if (len == 126) len = (uint64_t)f[2] << 8 | f[3], hdr = 4;
    else if (len == 127) return -1;
    if (!(f[1] & 128)) return -1;
    if (c->n - off < hdr + 4 + len) break;
    uint8_t *mask = f + hdr, *p = f + hdr + 4;
    for (uint64_t i = 0; i < len; i++) p[i] ^= mask[i & 3];
    if (op == 8) return -1;
    if (op == 1 || op == 2 || op == 0) {
      struct iovec iov = {p, (size_t)len};
      writeall(c->pty, &iov, 1);
    }
    off += hdr + 4 + len;
  }
  memmove(c->in, c->in + off, c->n - off);
  c->n -= off;
  return 0;
}

static void on_sock(conn_t *c) {
  ssize_t r = read(c->sock, c->in + c->n, BUF - c->n);
  if (r <= 0) {
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    drop(c);
    return;
  }
  c->n += (size_t)r;
  if (c->pty < 0) {
    int h = handshake(c);
    if (h < 0) { drop(c); return; }
    if (h == 0) return;
  }
  if (frames(c) < 0) drop(c);
}

static void on_pty(conn_t *c) {
  static uint8_t out[BUF - 1]; /* a 16-bit frame length */
  ssize_t r = read(c->pty, out, sizeof out);
  if (r <= 0) {
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    drop(c); /* EIO: the program is gone */
    return;
  }
  uint8_t hdr[4] = {0x82, 0, 0, 0};
  size_t hl = 2;
  if (r < 126) hdr[1] = (uint8_t)r;
  else hdr[1] = 126, hdr[2] = (uint8_t)(r >> 8), hdr[3] = (uint8_t)r, hl = 4;
  struct iovec iov[2] = {{hdr, hl}, {out, (size_t)r}};
  writeall(c->sock, iov, 2);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: native-relay <program> [args...]\n");
    return 2;
  }
  program = argv + 1;
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* the bench's death ends the relay */
  if (getppid() == 1) return 1;      /* it died before the line above */
  signal(SIGPIPE, SIG_IGN);
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {AF_INET, 0, {htonl(INADDR_LOOPBACK)}, {0}};
  socklen_t al = sizeof a;
  if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 64) || getsockname(ls, (struct sockaddr *)&a, &al)) {
    perror("native-relay: listen");
    return 1;
  }
  printf("{\"port\":%d}\n", ntohs(a.sin_port));
  fflush(stdout);
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {EPOLLIN, {.fd = ls}};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  for (;;) {
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int s = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (s < 0 || s >= MAXFD) { if (s >= 0) close(s); continue; }
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = calloc(1, sizeof *c);
        c->sock = s, c->pty = -1;
        bysock[s] = c;
        struct epoll_event e = {EPOLLIN, {.fd = s}};
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &e);
      } else if (bysock[fd]) {
        on_sock(bysock[fd]);
      } else if (bypty[fd]) {
        on_pty(bypty[fd]);
      }
    }
  }
}
