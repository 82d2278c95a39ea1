/*
 * agentd's native helper, two small things Node cannot do itself:
 *
 * - trim(): hands the memory the C allocator keeps after a burst back to the
 *   operating system (glibc's malloc_trim); server/common/memory.ts decides when.
 * - dup(fd): a second descriptor for an open file, close-on-exec, so that the
 *   PTY reader thread (server/pty/ReadThread.ts) owns and closes its own
 *   descriptor of a terminal while node-pty owns and closes the original.
 * - out*(): a terminal's output reader on the event loop's own thread that
 *   sends each chunk as a binary WebSocket frame to the sockets of the clients
 *   JavaScript armed, before JavaScript sees the chunk (server/pty/FastOutput.ts
 *   says when a client may be armed and what JavaScript does with the rest).
 *
 * Optional: built at install (native/build.js); without it agentd runs the
 * same, returning memory less eagerly and reading terminals on the event loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

static napi_value Trim(napi_env env, napi_callback_info info) {
  (void)info;
  int released = 0;
#if defined(__GLIBC__)
  released = malloc_trim(0);
#endif
  napi_value result;
  napi_get_boolean(env, released != 0, &result);
  return result;
}

static napi_value Supported(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
#if defined(__GLIBC__)
  napi_get_boolean(env, 1, &result);
#else
  napi_get_boolean(env, 0, &result);
#endif
  return result;
}

static napi_value Dup(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "dup(fd): fd must be a non-negative integer");
    return NULL;
  }
  /* At 3 or above (never a standard stream), closed in every program the daemon starts. */
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) {
    napi_throw_error(env, errno == EBADF ? "EBADF" : "EDUP", strerror(errno));
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, copy, &result);
  return result;
}


/* ---- the output reader ---- */

#define OUT_SLOTS 8
#define OUT_READ_BYTES 65536

typedef struct {
  uv_poll_t poll;
  napi_env env;
  int fd;                  /* our own duplicate of the terminal's master: closed here */
  int socks[OUT_SLOTS];    /* our own duplicates of armed clients' sockets, -1 if none */
  int32_t *written;        /* shared with JavaScript: bytes of the last chunk's frame written per slot, -1 if none */
  napi_ref written_ref, on_data;
  napi_async_context ctx;
  int polling, closed;
  int in_call;             /* JavaScript's onData runs: a close from in there is finished when it returns */
  int handle_closed;       /* libuv is done with the handle */
  int finalized;           /* JavaScript's handle to it was collected: the struct may go once both are done */
  int released;            /* release() ran: the handle is closing */
  napi_async_cleanup_hook_handle cleanup; /* holds the environment's teardown until the handle is closed */
  unsigned char *buf;      /* the thread's read buffer (shared by its readers: one runs at a time) */
} out_reader;

static void free_buffer(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* One read buffer per JavaScript thread (its readers run one at a time), not 64 KiB per terminal. */
static unsigned char *read_buffer(napi_env env) {
  void *buf = NULL;
  if (napi_get_instance_data(env, &buf) == napi_ok && buf) return buf;
  buf = malloc(OUT_READ_BYTES);
  if (buf && napi_set_instance_data(env, buf, free_buffer, NULL) != napi_ok) {
    free(buf);
    buf = NULL;
  }
  return buf;
}

static out_reader *reader_of(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "not an output reader");
    return NULL;
  }
  out_reader *r = (out_reader *)p;
  if (r->closed) {
    napi_throw_error(env, "ECLOSED", "output reader is closed");
    return NULL;
  }
  return r;
}

/* The call's `want` arguments (into argv), the first of them a reader that is still open; NULL (thrown) otherwise. */
static out_reader *reader_call(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < want) {
    napi_throw_type_error(env, NULL, "too few arguments");
    return NULL;
  }
  return reader_of(env, argv[0]);
}

/* Sends the frame (header + data) on a non-blocking socket: bytes written, 0 if it would block, -1 on error. */
static int32_t send_frame(int sock, unsigned char *hdr, size_t hl, unsigned char *data, size_t n) {
  struct iovec iov[2] = {{hdr, hl}, {data, n}};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  ssize_t w;
  do w = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (w < 0 && errno == EINTR);
  if (w < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  return (int32_t)w;
}

static void free_if_done(out_reader *r) {
  if (r->handle_closed && r->finalized) free(r);
}

static void on_closed(uv_handle_t *h) {
  out_reader *r = (out_reader *)h->data;
  r->handle_closed = 1;
  /* The environment (a worker's, the main thread's at its end) may go now: this code is not called any more. */
  if (r->cleanup) napi_remove_async_cleanup_hook(r->cleanup);
  r->cleanup = NULL;
  free_if_done(r);
}

/* JavaScript's handle is gone. A reader is always closed first (its callback holds the handle until then). */
static void on_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  out_reader *r = (out_reader *)data;
  r->finalized = 1;
  free_if_done(r);
}

static void on_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg);

/* The last step of closing: JavaScript's references go, the handle is closed and then freed. Not while onData runs. */
static void release(out_reader *r) {
  r->released = 1;
  napi_delete_reference(r->env, r->written_ref);
  napi_delete_reference(r->env, r->on_data);
  napi_async_destroy(r->env, r->ctx);
  uv_close((uv_handle_t *)&r->poll, on_closed);
}

/* Calls onData(arg); false if JavaScript closed the reader meanwhile (it is released then: do not touch it again). */
static int out_call(out_reader *r, napi_value arg) {
  napi_value cb, global, result;
  napi_get_reference_value(r->env, r->on_data, &cb);
  napi_get_global(r->env, &global);
  r->in_call = 1;
  napi_status status = napi_make_callback(r->env, r->ctx, global, cb, 1, &arg, &result);
  if (status == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(r->env, &err);
    /* Still "in the call": an 'uncaughtException' handler that closes the reader must not release it twice. */
    napi_fatal_exception(r->env, err);
  }
  r->in_call = 0;
  if (!r->closed) return 1;
  release(r);
  return 0;
}

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  out_reader *r = (out_reader *)h->data;
  if (r->closed) return;
  ssize_t n = -1;
  int err = 0;
  if (status < 0) err = EIO;
  else {
    do n = read(r->fd, r->buf, OUT_READ_BYTES);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      err = errno;
    } else if (n == 0) {
      err = EIO;
    }
  }
  napi_env env = r->env; /* the reader may be released inside onData: after it, only this is used */
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  if (err) {
    /* The terminal hung up or failed: stop, and tell JavaScript (its own reader takes over). */
    uv_poll_stop(&r->poll);
    r->polling = 0;
    napi_value code;
    napi_create_string_utf8(r->env, err == EIO ? "EIO" : strerror(err), NAPI_AUTO_LENGTH, &code);
    out_call(r, code);
    napi_close_handle_scope(env, scope);
    return;
  }
  unsigned char hdr[10];
  size_t hl;
  hdr[0] = 0x82; /* FIN, binary */
  if (n < 126) {
    hdr[1] = (unsigned char)n;
    hl = 2;
  } else if (n <= 0xffff) {
    hdr[1] = 126;
    hdr[2] = (unsigned char)(n >> 8);
    hdr[3] = (unsigned char)n;
    hl = 4;
  } else {
    hdr[1] = 127;
    for (int i = 0; i < 8; i++) hdr[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
    hl = 10;
  }
  for (int s = 0; s < OUT_SLOTS; s++) r->written[s] = r->socks[s] >= 0 ? send_frame(r->socks[s], hdr, hl, r->buf, (size_t)n) : -1;
  napi_value chunk;
  void *data;
  napi_create_buffer_copy(r->env, (size_t)n, r->buf, &data, &chunk);
  /* Chunks read elsewhere (the reader thread) must not look sent. (A closed reader's array may be gone: left alone.) */
  if (out_call(r, chunk))
    for (int s = 0; s < OUT_SLOTS; s++) r->written[s] = -1;
  napi_close_handle_scope(env, scope);
}

/* outOpen(fd, written: Int32Array(OUT_SLOTS), onData(chunk | errorCode)): takes ownership of fd. */
static napi_value OutOpen(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd = -1;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  napi_valuetype cbType = napi_undefined;
  if (argc == 3) napi_typeof(env, argv[2], &cbType);
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_get_typedarray_info(env, argv[1], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_int32_array ||
      length < OUT_SLOTS || cbType != napi_function) {
    napi_throw_type_error(env, NULL, "outOpen(fd, Int32Array(8), onData)");
    return NULL;
  }
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  out_reader *r = calloc(1, sizeof *r);
  unsigned char *buf = read_buffer(env);
  if (!r || !buf) {
    free(r);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  r->buf = buf;
  r->env = env;
  r->fd = fd;
  r->written = (int32_t *)data;
  for (int s = 0; s < OUT_SLOTS; s++) r->socks[s] = -1, r->written[s] = -1;
  int rc = uv_poll_init(loop, &r->poll, fd);
  if (rc != 0) {
    free(r);
    napi_throw_error(env, uv_err_name(rc), uv_strerror(rc));
    return NULL;
  }
  r->poll.data = r;
  napi_create_reference(env, argv[1], 1, &r->written_ref);
  napi_create_reference(env, argv[2], 1, &r->on_data);
  napi_value name;
  napi_create_string_utf8(env, "agentd.outputReader", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &r->ctx);
  napi_value ext;
  napi_create_external(env, r, on_finalize, NULL, &ext);
  napi_add_async_cleanup_hook(env, on_env_cleanup, r, &r->cleanup);
  return ext;
}

static napi_value OutStart(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  out_reader *r = reader_call(env, info, 1, argv);
  if (!r) return NULL;
  if (!r->polling) {
    int rc = uv_poll_start(&r->poll, UV_READABLE, on_readable);
    if (rc != 0) {
      napi_throw_error(env, uv_err_name(rc), uv_strerror(rc));
      return NULL;
    }
    r->polling = 1;
  }
  return NULL;
}

static napi_value OutStop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  out_reader *r = reader_call(env, info, 1, argv);
  if (!r) return NULL;
  if (r->polling) uv_poll_stop(&r->poll);
  r->polling = 0;
  return NULL;
}

static void disarm(out_reader *r, int slot) {
  if (r->socks[slot] >= 0) close(r->socks[slot]);
  r->socks[slot] = -1;
  r->written[slot] = -1; /* nothing of the current chunk went there, as far as anyone asks from now on */
}

/* outArm(reader, slot, socketFd): later chunks are also sent to that socket (through our own duplicate of it). */
static napi_value OutArm(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t slot = -1, sock = -1;
  out_reader *r = reader_call(env, info, 3, argv);
  if (!r) return NULL;
  if (napi_get_value_int32(env, argv[1], &slot) != napi_ok || slot < 0 || slot >= OUT_SLOTS ||
      napi_get_value_int32(env, argv[2], &sock) != napi_ok || sock < 0) {
    napi_throw_type_error(env, NULL, "outArm(reader, slot 0..7, socketFd)");
    return NULL;
  }
  disarm(r, slot);
  int copy = fcntl(sock, F_DUPFD_CLOEXEC, 3);
  napi_value ok;
  r->socks[slot] = copy;
  napi_get_boolean(env, copy >= 0, &ok);
  return ok;
}

static napi_value OutDisarm(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t slot = -1;
  out_reader *r = reader_call(env, info, 2, argv);
  if (!r) return NULL;
  if (napi_get_value_int32(env, argv[1], &slot) != napi_ok || slot < 0 || slot >= OUT_SLOTS) {
    napi_throw_type_error(env, NULL, "outDisarm(reader, slot 0..7)");
    return NULL;
  }
  disarm(r, slot);
  return NULL;
}

/* Stops for good and closes the descriptors (the terminal's and the sockets' duplicates). */
static void shut(out_reader *r) {
  r->closed = 1;
  if (r->polling) uv_poll_stop(&r->poll);
  r->polling = 0;
  for (int s = 0; s < OUT_SLOTS; s++) disarm(r, s);
  close(r->fd);
  r->fd = -1;
}

/* The thread's JavaScript environment goes (a worker's end, the main thread's exit) with the reader still open:
 * no JavaScript runs any more, so it is closed and released now (else libuv's loop ends with our handle open, and
 * a read after the environment went would use its freed buffer). */
static void on_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  out_reader *r = (out_reader *)arg;
  if (r->released) return; /* closing already: on_closed lets the environment go */
  if (!r->closed) shut(r);
  release(r);
}

/* outClose(reader): stops, closes the terminal's and the sockets' duplicates; no more calls. */
static napi_value OutClose(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *p = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_external(env, argv[0], &p) != napi_ok || p == NULL) return NULL;
  out_reader *r = (out_reader *)p;
  if (r->closed) return NULL;
  shut(r);
  if (!r->in_call) release(r);
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "trim", NAPI_AUTO_LENGTH, Trim, NULL, &fn);
  napi_set_named_property(env, exports, "trim", fn);
  napi_create_function(env, "supported", NAPI_AUTO_LENGTH, Supported, NULL, &fn);
  napi_set_named_property(env, exports, "supported", fn);
  napi_create_function(env, "dup", NAPI_AUTO_LENGTH, Dup, NULL, &fn);
  napi_set_named_property(env, exports, "dup", fn);
  static const struct { const char *name; napi_callback cb; } out[] = {
      {"outOpen", OutOpen}, {"outStart", OutStart}, {"outStop", OutStop},
      {"outArm", OutArm},   {"outDisarm", OutDisarm}, {"outClose", OutClose},
  };
  for (size_t i = 0; i < sizeof out / sizeof out[0]; i++) {
    napi_create_function(env, out[i].name, NAPI_AUTO_LENGTH, out[i].cb, NULL, &fn);
    napi_set_named_property(env, exports, out[i].name, fn);
  }
  return exports;
}
