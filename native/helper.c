/*
 * agentd's native helper, small things Node cannot do itself:
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
 * - in*(): a client socket's input reader on the event loop's own thread that
 *   takes whole binary WebSocket frames off the socket and writes their
 *   payloads to the terminal, before JavaScript sees them; anything else is
 *   left on the socket for `ws` (server/pty/FastInput.ts says when).
 *
 * Optional: built at install (native/build.js); without it agentd runs the
 * same, returning memory less eagerly and reading terminals on the event loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
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

/* A close-on-exec duplicate of fd at 3 or above (never a standard stream, closed in every program the daemon
 * starts); -1, with the errno's code thrown, if there is none. */
static int dup_or_throw(napi_env env, int fd) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) napi_throw_error(env, errno == EBADF ? "EBADF" : "EDUP", strerror(errno));
  return copy;
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
  int copy = dup_or_throw(env, fd);
  if (copy < 0) return NULL;
  napi_value result;
  napi_create_int32(env, copy, &result);
  return result;
}


/* ---- pollers: the output reader and the input reader share their lifetime ---- */

#define OUT_SLOTS 8
#define OUT_READ_BYTES 65536
/* Client bytes looked at per wake-up; the per-thread buffer holds this twice (the peek, then the discarded frames). */
#define IN_PEEK_BYTES 65536

enum { KIND_OUTPUT = 0x4f555452, KIND_INPUT = 0x494e5054 }; /* "OUTR", "INPT": a handle of one kind is refused by the other's calls */

/* What both kinds of poller share: a uv_poll on a descriptor of their own, a JavaScript callback, and the rules by
 * which the struct is freed (only when libuv is done with the handle and JavaScript's handle was collected). */
typedef struct poller {
  uv_poll_t poll;
  uint32_t kind;
  napi_env env;
  int fd;                  /* our own duplicate (the terminal's master, or the client's socket): closed here */
  napi_ref on_event, keep; /* the callback; an array shared with JavaScript while we use it (NULL if none) */
  napi_async_context ctx;
  int polling, closed;
  int in_call;             /* JavaScript's callback runs: a close from in there is finished when it returns */
  int handle_closed;       /* libuv is done with the handle */
  int finalized;           /* JavaScript's handle to it was collected: the struct may go once both are done */
  int released;            /* release() ran: the handle is closing */
  napi_async_cleanup_hook_handle cleanup; /* holds the environment's teardown until the handle is closed */
  unsigned char *buf;      /* the thread's buffer (shared by its pollers: one runs at a time) */
  void (*shut)(struct poller *); /* the kind's own descriptors, closed when it stops for good */
} poller;

typedef struct {
  poller p;                /* first: a poller* is an out_reader* */
  int socks[OUT_SLOTS];    /* our own duplicates of armed clients' sockets, -1 if none */
  int32_t *written;        /* shared with JavaScript: bytes of the last chunk's frame written per slot, -1 if none */
} out_reader;

typedef struct {
  poller p;                /* first; p.fd is our duplicate of the client's socket */
  int pty;                 /* our duplicate of the terminal's master while started, -1 if none */
  int32_t *held;           /* the terminal's writer's flag (p.keep holds it): non-zero while it holds input back */
  double untold;           /* runs of keystrokes written and not yet told to JavaScript (inTake, or the next report) */
} in_reader;

static void free_buffer(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* One buffer per JavaScript thread (its pollers run one at a time), not one per terminal or socket:
 * OUT_READ_BYTES for output reads, then 2 x IN_PEEK_BYTES for input. */
static unsigned char *thread_buffer(napi_env env) {
  void *buf = NULL;
  if (napi_get_instance_data(env, &buf) == napi_ok && buf) return buf;
  buf = malloc(OUT_READ_BYTES + 2 * IN_PEEK_BYTES);
  if (buf && napi_set_instance_data(env, buf, free_buffer, NULL) != napi_ok) {
    free(buf);
    buf = NULL;
  }
  return buf;
}

static poller *poller_of(napi_env env, napi_value v, uint32_t kind) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL || ((poller *)p)->kind != kind) {
    napi_throw_type_error(env, NULL, kind == KIND_OUTPUT ? "not an output reader" : "not an input reader");
    return NULL;
  }
  poller *r = (poller *)p;
  if (r->closed) {
    napi_throw_error(env, "ECLOSED", kind == KIND_OUTPUT ? "output reader is closed" : "input reader is closed");
    return NULL;
  }
  return r;
}

/* The call's `want` arguments (into argv), the first of them an open poller of `kind`; NULL (thrown) otherwise. */
static poller *poller_call(napi_env env, napi_callback_info info, size_t want, napi_value *argv, uint32_t kind) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < want) {
    napi_throw_type_error(env, NULL, "too few arguments");
    return NULL;
  }
  return poller_of(env, argv[0], kind);
}

static void free_if_done(poller *r) {
  if (r->handle_closed && r->finalized) free(r);
}

static void on_closed(uv_handle_t *h) {
  poller *r = (poller *)h->data;
  r->handle_closed = 1;
  /* The environment (a worker's, the main thread's at its end) may go now: this code is not called any more. */
  if (r->cleanup) napi_remove_async_cleanup_hook(r->cleanup);
  r->cleanup = NULL;
  free_if_done(r);
}

/* JavaScript's handle is gone. A poller is always closed first (its callback holds the handle until then). */
static void on_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  poller *r = (poller *)data;
  r->finalized = 1;
  free_if_done(r);
}

/* The last step of closing: JavaScript's references go, the handle is closed and then freed. Not while a callback runs. */
static void release(poller *r) {
  r->released = 1;
  if (r->keep) napi_delete_reference(r->env, r->keep);
  r->keep = NULL;
  napi_delete_reference(r->env, r->on_event);
  napi_async_destroy(r->env, r->ctx);
  uv_close((uv_handle_t *)&r->poll, on_closed);
}

/* Calls the callback; false if JavaScript closed the poller meanwhile (it is released then: do not touch it again). */
static int poller_call_js(poller *r, size_t argc, napi_value *argv) {
  napi_value cb, global, result;
  napi_get_reference_value(r->env, r->on_event, &cb);
  napi_get_global(r->env, &global);
  r->in_call = 1;
  napi_status status = napi_make_callback(r->env, r->ctx, global, cb, argc, argv, &result);
  if (status == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(r->env, &err);
    /* Still "in the call": an 'uncaughtException' handler that closes the poller must not release it twice. */
    napi_fatal_exception(r->env, err);
  }
  r->in_call = 0;
  if (!r->closed) return 1;
  release(r);
  return 0;
}

static void poller_stop(poller *r) {
  if (r->polling) uv_poll_stop(&r->poll);
  r->polling = 0;
}

/* Stops for good and closes the descriptors (its own and the kind's). */
static void shut(poller *r) {
  r->closed = 1;
  poller_stop(r);
  r->shut(r);
  close(r->fd);
  r->fd = -1;
}

/* The thread's JavaScript environment goes (a worker's end, the main thread's exit) with the poller still open:
 * no JavaScript runs any more, so it is closed and released now (else libuv's loop ends with our handle open, and
 * a read after the environment went would use its freed buffer). */
static void on_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  poller *r = (poller *)arg;
  if (r->released) return; /* closing already: on_closed lets the environment go */
  if (!r->closed) shut(r);
  release(r);
}

/* A poller of `size` bytes on `fd` (taken over), with its callback and shared array; NULL (thrown) if it cannot be. */
static poller *poller_open(napi_env env, size_t size, uint32_t kind, int fd, napi_value keep, napi_value cb, const char *name,
                           void (*shut_kind)(poller *)) {
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  poller *r = calloc(1, size);
  unsigned char *buf = thread_buffer(env);
  if (!r || !buf) {
    free(r);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  int rc = uv_poll_init(loop, &r->poll, fd);
  if (rc != 0) {
    free(r);
    napi_throw_error(env, uv_err_name(rc), uv_strerror(rc));
    return NULL;
  }
  r->kind = kind;
  r->buf = buf;
  r->env = env;
  r->fd = fd;
  r->shut = shut_kind;
  r->poll.data = r;
  if (keep) napi_create_reference(env, keep, 1, &r->keep);
  napi_create_reference(env, cb, 1, &r->on_event);
  napi_value resource;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource);
  napi_async_init(env, NULL, resource, &r->ctx);
  return r;
}

/* JavaScript's handle to a poller that poller_open made: the poller is freed once it and libuv are both done. */
static napi_value poller_handle(napi_env env, poller *r) {
  napi_value ext;
  napi_create_external(env, r, on_finalize, NULL, &ext);
  napi_add_async_cleanup_hook(env, on_env_cleanup, r, &r->cleanup);
  return ext;
}

static napi_value poller_start(napi_env env, poller *r, uv_poll_cb cb) {
  if (!r->polling) {
    int rc = uv_poll_start(&r->poll, UV_READABLE, cb);
    if (rc != 0) {
      napi_throw_error(env, uv_err_name(rc), uv_strerror(rc));
      return NULL;
    }
    r->polling = 1;
  }
  return NULL;
}

/* closeX(handle): stops, closes its descriptors; no more calls. Finished after the callback if called from in there. */
static napi_value poller_close(napi_env env, napi_callback_info info, uint32_t kind) {
  size_t argc = 1;
  napi_value argv[1];
  void *p = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_external(env, argv[0], &p) != napi_ok || p == NULL || ((poller *)p)->kind != kind) return NULL;
  poller *r = (poller *)p;
  if (r->closed) return NULL;
  shut(r);
  if (!r->in_call) release(r);
  return NULL;
}

/* Arguments: (int fd >= 0, typed array of `type` with at least `min` elements, function); false (thrown) otherwise. */
static int open_args(napi_env env, napi_callback_info info, napi_value *argv, int32_t *fd, napi_typedarray_type want,
                     size_t min, void **data, const char *usage) {
  size_t argc = 3;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_typedarray_type type;
  size_t length = 0;
  napi_valuetype cbType = napi_undefined;
  if (argc == 3) napi_typeof(env, argv[2], &cbType);
  if (argc < 3 || napi_get_value_int32(env, argv[0], fd) != napi_ok || *fd < 0 ||
      napi_get_typedarray_info(env, argv[1], &type, &length, data, NULL, NULL) != napi_ok || type != want ||
      length < min || cbType != napi_function) {
    napi_throw_type_error(env, NULL, usage);
    return 0;
  }
  return 1;
}

/* ---- the output reader ---- */

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

static void out_disarm(out_reader *r, int slot) {
  if (r->socks[slot] >= 0) close(r->socks[slot]);
  r->socks[slot] = -1;
  r->written[slot] = -1; /* nothing of the current chunk went there, as far as anyone asks from now on */
}

static void out_shut(poller *p) {
  for (int s = 0; s < OUT_SLOTS; s++) out_disarm((out_reader *)p, s);
}

static void on_output(uv_poll_t *h, int status, int events) {
  (void)events;
  out_reader *r = (out_reader *)h->data;
  poller *p = &r->p;
  if (p->closed) return;
  ssize_t n = -1;
  int err = 0;
  if (status < 0) err = EIO;
  else {
    do n = read(p->fd, p->buf, OUT_READ_BYTES);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      err = errno;
    } else if (n == 0) {
      err = EIO;
    }
  }
  napi_env env = p->env; /* the reader may be released inside onData: after it, only this is used */
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  if (err) {
    /* The terminal hung up or failed: stop, and tell JavaScript (its own reader takes over). */
    poller_stop(p);
    napi_value code;
    napi_create_string_utf8(env, err == EIO ? "EIO" : strerror(err), NAPI_AUTO_LENGTH, &code);
    poller_call_js(p, 1, &code);
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
  for (int s = 0; s < OUT_SLOTS; s++) r->written[s] = r->socks[s] >= 0 ? send_frame(r->socks[s], hdr, hl, p->buf, (size_t)n) : -1;
  napi_value chunk;
  void *data;
  napi_create_buffer_copy(env, (size_t)n, p->buf, &data, &chunk);
  /* Chunks read elsewhere (the reader thread) must not look sent. (A closed reader's array may be gone: left alone.) */
  if (poller_call_js(p, 1, &chunk))
    for (int s = 0; s < OUT_SLOTS; s++) r->written[s] = -1;
  napi_close_handle_scope(env, scope);
}

/* outOpen(fd, written: Int32Array(OUT_SLOTS), onData(chunk | errorCode)): takes ownership of fd. */
static napi_value OutOpen(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd = -1;
  void *data = NULL;
  if (!open_args(env, info, argv, &fd, napi_int32_array, OUT_SLOTS, &data, "outOpen(fd, Int32Array(8), onData)")) return NULL;
  out_reader *r = (out_reader *)poller_open(env, sizeof(out_reader), KIND_OUTPUT, fd, argv[1], argv[2], "agentd.outputReader", out_shut);
  if (!r) return NULL;
  r->written = (int32_t *)data;
  for (int s = 0; s < OUT_SLOTS; s++) r->socks[s] = -1, r->written[s] = -1;
  return poller_handle(env, &r->p);
}

static napi_value OutStart(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  poller *r = poller_call(env, info, 1, argv, KIND_OUTPUT);
  return r ? poller_start(env, r, on_output) : NULL;
}

static napi_value OutStop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  poller *r = poller_call(env, info, 1, argv, KIND_OUTPUT);
  if (r) poller_stop(r);
  return NULL;
}

/* outArm(reader, slot, socketFd): later chunks are also sent to that socket (through our own duplicate of it). */
static napi_value OutArm(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t slot = -1, sock = -1;
  out_reader *r = (out_reader *)poller_call(env, info, 3, argv, KIND_OUTPUT);
  if (!r) return NULL;
  if (napi_get_value_int32(env, argv[1], &slot) != napi_ok || slot < 0 || slot >= OUT_SLOTS ||
      napi_get_value_int32(env, argv[2], &sock) != napi_ok || sock < 0) {
    napi_throw_type_error(env, NULL, "outArm(reader, slot 0..7, socketFd)");
    return NULL;
  }
  out_disarm(r, slot);
  int copy = fcntl(sock, F_DUPFD_CLOEXEC, 3);
  napi_value ok;
  r->socks[slot] = copy;
  napi_get_boolean(env, copy >= 0, &ok);
  return ok;
}

static napi_value OutDisarm(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t slot = -1;
  out_reader *r = (out_reader *)poller_call(env, info, 2, argv, KIND_OUTPUT);
  if (!r) return NULL;
  if (napi_get_value_int32(env, argv[1], &slot) != napi_ok || slot < 0 || slot >= OUT_SLOTS) {
    napi_throw_type_error(env, NULL, "outDisarm(reader, slot 0..7)");
    return NULL;
  }
  out_disarm(r, slot);
  return NULL;
}

static napi_value OutClose(napi_env env, napi_callback_info info) {
  return poller_close(env, info, KIND_OUTPUT);
}

/* ---- the input reader ---- */

/* Lets go of the terminal (our duplicate of its master) and of the writer's flag. */
static void in_unbind(in_reader *r) {
  if (r->pty >= 0) close(r->pty);
  r->pty = -1;
  r->held = NULL;
  if (r->p.keep) napi_delete_reference(r->p.env, r->p.keep);
  r->p.keep = NULL;
}

static void in_shut(poller *p) {
  in_unbind((in_reader *)p);
}

/* Stops taking frames and lets go of the terminal: it is started again only with a terminal (inStart), and may never
 * be (the session ended), so the master's duplicate must not wait for that. */
static void in_stop(in_reader *r) {
  poller_stop(&r->p);
  in_unbind(r);
}

/*
 * The length of the longest run of whole client frames at the start of buf[0..n) that the reader may take itself:
 * FIN binary frames (0x82: no fragments, no extension bits), masked, with at most 65535 bytes of payload. Their
 * payloads are unmasked into buf[0..*payload). Anything else (text, control, fragments, a frame not all here yet,
 * a malformed one) ends the run: it, and everything after it, is left to `ws`.
 */
static size_t take_frames(unsigned char *buf, size_t n, size_t *payload) {
  size_t i = 0, out = 0;
  while (i + 2 <= n) {
    if (buf[i] != 0x82 || !(buf[i + 1] & 0x80)) break;
    size_t len = buf[i + 1] & 0x7f, hl = 2;
    if (len == 127) break;
    if (len == 126) {
      if (i + 4 > n) break;
      len = (size_t)buf[i + 2] << 8 | buf[i + 3];
      hl = 4;
    }
    if (i + hl + 4 + len > n) break;
    unsigned char mask[4];
    memcpy(mask, buf + i + hl, 4);
    const unsigned char *src = buf + i + hl + 4;
    for (size_t k = 0; k < len; k++) buf[out + k] = src[k] ^ mask[k & 3]; /* out <= the payload's start: in place */
    out += len;
    i += hl + 4 + len;
  }
  *payload = out;
  return i;
}

/* Tells JavaScript: (runs written to the terminal since it was last told, or -1: the socket's stream is broken; the
 * payload bytes the terminal did not take, or undefined; stopped). */
static void in_report(in_reader *r, double runs, const unsigned char *rest, size_t restLen, int stopped) {
  poller *p = &r->p;
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value argv[3];
  if (runs >= 0) { /* (a broken stream leaves them for inTake: JavaScript still counts them as activity) */
    runs += r->untold;
    r->untold = 0;
  }
  napi_create_double(env, runs, &argv[0]);
  if (restLen) {
    void *data;
    napi_create_buffer_copy(env, restLen, rest, &data, &argv[1]);
  } else {
    napi_get_undefined(env, &argv[1]);
  }
  napi_get_boolean(env, stopped, &argv[2]);
  poller_call_js(p, 3, argv);
  napi_close_handle_scope(env, scope);
}

static void on_input(uv_poll_t *h, int status, int events) {
  (void)events;
  in_reader *r = (in_reader *)h->data;
  poller *p = &r->p;
  if (p->closed || !p->polling) return;
  unsigned char *buf = p->buf + OUT_READ_BYTES;
  ssize_t n = -1;
  if (status == 0 && r->held && !*r->held && r->pty >= 0) {
    /* A look first: only whole frames of our kind are taken off the socket; the rest stays there for `ws`. */
    do n = recv(p->fd, buf, IN_PEEK_BYTES, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  }
  size_t payload = 0, take = n > 0 ? take_frames(buf, (size_t)n, &payload) : 0;
  if (take == 0) {
    /* Not ours (or the end of the stream, an error, the terminal's writer holding input back): JavaScript reads from here. */
    in_stop(r);
    in_report(r, 0, NULL, 0, 1);
    return;
  }
  /* Off the socket: exactly the frames taken (they are there, and nothing else reads this socket meanwhile). */
  ssize_t got;
  do got = recv(p->fd, buf + payload, take, MSG_DONTWAIT);
  while (got < 0 && errno == EINTR);
  if (got != (ssize_t)take) {
    /* Cannot happen while JavaScript keeps its side (it does not read while we are armed); if it does, the stream is
     * no longer whole: JavaScript gets -1 and ends the connection. */
    in_stop(r);
    in_report(r, -1, NULL, 0, 1);
    return;
  }
  ssize_t w = 0;
  if (payload) {
    do w = write(r->pty, buf, payload);
    while (w < 0 && errno == EINTR);
    if (w < 0) w = 0; /* EAGAIN (the program is not reading), or the terminal failed: JavaScript's writer decides */
  }
  /* Whatever JavaScript must do itself (the rest of a payload, a frame not ours after these) makes it read from here. */
  int stopped = (size_t)w < payload || take < (size_t)n;
  double runs = w > 0 ? 1 : 0;
  if (!stopped) {
    /* Nothing for JavaScript to do now: its bookkeeping (activity, keep-alive) asks later (inTake), so that no
     * JavaScript runs between the keystroke and its echo. */
    r->untold += runs;
    return;
  }
  in_stop(r);
  in_report(r, runs, buf + w, payload - (size_t)w, stopped);
}

/* inOpen(socketFd, onInput(runs, rest, stopped)): takes ownership of socketFd. Not polling until inStart. */
static napi_value InOpen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_valuetype cbType = napi_undefined;
  if (argc >= 2) napi_typeof(env, argv[1], &cbType);
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 || cbType != napi_function) {
    napi_throw_type_error(env, NULL, "inOpen(socketFd, onInput)");
    return NULL;
  }
  in_reader *r = (in_reader *)poller_open(env, sizeof(in_reader), KIND_INPUT, fd, NULL, argv[1], "agentd.inputReader", in_shut);
  if (!r) return NULL;
  r->pty = -1;
  return poller_handle(env, &r->p);
}

/* inStart(reader, ptyFd, held: Int32Array(1)): takes client frames off the socket and writes their payloads to (our
 * duplicate of) ptyFd, while held[0] is 0 (JavaScript's writer of that terminal has nothing waiting). */
static napi_value InStart(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t pty = -1;
  in_reader *r = (in_reader *)poller_call(env, info, 3, argv, KIND_INPUT);
  if (!r) return NULL;
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (napi_get_value_int32(env, argv[1], &pty) != napi_ok || pty < 0 ||
      napi_get_typedarray_info(env, argv[2], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_int32_array || length < 1) {
    napi_throw_type_error(env, NULL, "inStart(reader, ptyFd, Int32Array(1))");
    return NULL;
  }
  int copy = dup_or_throw(env, pty);
  if (copy < 0) return NULL;
  in_unbind(r);
  r->pty = copy;
  napi_create_reference(env, argv[2], 1, &r->p.keep);
  r->held = (int32_t *)data;
  poller_start(env, &r->p, on_input);
  if (!r->p.polling) in_unbind(r); /* it threw */
  return NULL;
}

/* inStop(reader): stops taking frames and lets go of the terminal; JavaScript reads the socket again. */
static napi_value InStop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  in_reader *r = (in_reader *)poller_call(env, info, 1, argv, KIND_INPUT);
  if (r) in_stop(r);
  return NULL;
}

/* inTake(reader): the runs of keystrokes written since JavaScript was last told (and it is told now). */
static napi_value InTake(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  in_reader *r = (in_reader *)poller_call(env, info, 1, argv, KIND_INPUT);
  if (!r) return NULL;
  napi_create_double(env, r->untold, &result);
  r->untold = 0;
  return result;
}

static napi_value InClose(napi_env env, napi_callback_info info) {
  return poller_close(env, info, KIND_INPUT);
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
      {"inOpen", InOpen},   {"inStart", InStart},   {"inStop", InStop},
      {"inTake", InTake},   {"inClose", InClose},
  };
  for (size_t i = 0; i < sizeof out / sizeof out[0]; i++) {
    napi_create_function(env, out[i].name, NAPI_AUTO_LENGTH, out[i].cb, NULL, &fn);
    napi_set_named_property(env, exports, out[i].name, fn);
  }
  return exports;
}
