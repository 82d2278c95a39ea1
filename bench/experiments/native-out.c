/*
 * Experiment (not part of agentd): a Node addon that takes a PTY's output off
 * the JavaScript path. A uv_poll on the PTY's master, on the event loop's own
 * thread, reads a chunk and writes it to the client's socket as one binary
 * WebSocket frame (writev), and only then calls a JS callback with the bytes
 * (where agentd would do its bookkeeping), if one was given. With a socket of
 * -1 it only reads, and the callback sends. Used by lean-relay.js
 * (MODE=native, native-nocb, native-read) to measure what a native output
 * path, or a native reader alone, would save a keystroke's echo. No partial-write handling: for
 * one-byte echoes on an idle socket only.
 *
 *   gcc -O2 -shared -fPIC -I/usr/include/node -o /tmp/native-out.node bench/experiments/native-out.c
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>

typedef struct { uv_poll_t poll; int pty, sock; napi_env env; napi_ref cb; napi_async_context ctx; } fast_t;

static void on_readable(uv_poll_t *h, int status, int events) {
  fast_t *f = (fast_t *)h->data;
  static unsigned char out[65535];
  ssize_t r = read(f->pty, out, sizeof out);
  if (r <= 0) { if (r < 0 && errno == EAGAIN) return; uv_poll_stop(h); return; }
  unsigned char hdr[4] = {0x82, 0, 0, 0}; size_t hl = 2;
  if (r < 126) hdr[1] = (unsigned char)r; else hdr[1] = 126, hdr[2] = (unsigned char)(r >> 8), hdr[3] = (unsigned char)r, hl = 4;
  struct iovec iov[2] = {{hdr, hl}, {out, (size_t)r}};
  if (f->sock >= 0) {
    ssize_t w = writev(f->sock, iov, 2);
    (void)w;
  }
  if (f->cb) {
    napi_handle_scope scope; napi_open_handle_scope(f->env, &scope);
    napi_value cb, buf, global, result; void *data;
    napi_get_reference_value(f->env, f->cb, &cb);
    napi_create_buffer_copy(f->env, (size_t)r, out, &data, &buf);
    napi_get_global(f->env, &global);
    napi_make_callback(f->env, f->ctx, global, cb, 1, &buf, &result);
    napi_close_handle_scope(f->env, scope);
  }
}

static napi_value Start(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3]; int32_t pty, sock;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_get_value_int32(env, argv[0], &pty); napi_get_value_int32(env, argv[1], &sock);
  fast_t *f = calloc(1, sizeof *f); f->pty = pty; f->sock = sock; f->env = env;
  napi_valuetype t; napi_typeof(env, argv[2], &t);
  if (t == napi_function) {
    napi_create_reference(env, argv[2], 1, &f->cb);
    napi_value name; napi_create_string_utf8(env, "fast", NAPI_AUTO_LENGTH, &name);
    napi_async_init(env, NULL, name, &f->ctx);
  }
  uv_loop_t *loop; napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, &f->poll, pty); f->poll.data = f;
  uv_poll_start(&f->poll, UV_READABLE, on_readable);
  return NULL;
}

/* Input: a uv_poll on the client's socket reads masked client frames and writes
 * each payload to the PTY, before any JavaScript runs. Whole small frames only
 * (no fragmentation, no control frames): for one-byte keystrokes. */
typedef struct { uv_poll_t poll; int sock, pty; } fastin_t;

static void on_socket(uv_poll_t *h, int status, int events) {
  fastin_t *f = (fastin_t *)h->data;
  unsigned char in[65536];
  ssize_t r = recv(f->sock, in, sizeof in, MSG_DONTWAIT);
  if (r <= 0) { if (r < 0 && errno == EAGAIN) return; uv_poll_stop(h); return; }
  size_t i = 0;
  while (i + 6 <= (size_t)r) {
    size_t len = in[i + 1] & 0x7f, hl = 2;
    if (len == 126) len = (size_t)in[i + 2] << 8 | in[i + 3], hl = 4;
    unsigned char *mask = in + i + hl, *p = mask + 4;
    for (size_t k = 0; k < len; k++) p[k] ^= mask[k & 3];
    ssize_t w = write(f->pty, p, len);
    (void)w;
    i += hl + 4 + len;
  }
}

static napi_value StartIn(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2]; int32_t sock, pty;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_get_value_int32(env, argv[0], &sock); napi_get_value_int32(env, argv[1], &pty);
  fastin_t *f = calloc(1, sizeof *f); f->sock = dup(sock); f->pty = pty; /* its own fd: one libuv watcher per fd */
  uv_loop_t *loop; napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, &f->poll, f->sock); f->poll.data = f;
  uv_poll_start(&f->poll, UV_READABLE, on_socket);
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn; napi_create_function(env, "start", NAPI_AUTO_LENGTH, Start, NULL, &fn);
  napi_set_named_property(env, exports, "start", fn);
  napi_create_function(env, "startIn", NAPI_AUTO_LENGTH, StartIn, NULL, &fn);
  napi_set_named_property(env, exports, "startIn", fn);
  return exports;
}
