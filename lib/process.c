/* Subprocesses: uv_spawn with stdio pipes as uvasync streams, and the exit
 * as futures (one per wait, so cancelling one wait touches neither the
 * others nor the process). The process block outlives uva_process_free
 * until uv_close calls back (loop->jobs counts it). */
#include "internal.h"

#include <string.h>

/* From net.c: a stream around a fresh uv_pipe_t, for uv_spawn's stdio. */
uva_stream_t *uva__stream_new_pipe(uva_loop_t *loop);
uv_stream_t *uva__stream_handle(uva_stream_t *s);

struct uva_process {
  uv_process_t handle;
  uva_loop_t *loop;
  uva_stream_t *stdio[3];
  uva__link_t waiters;
  bool exited;
  int status;
};

static const uva__fops_t waiter_fops = {"process", uva__waiter_cancel, uva__waiter_destroy,
                                        sizeof(uva__small_future_t), NULL};

static void complete_waiters(uva_process_t *p, int status) {
  uva__link_t *l;
  while ((l = uva__list_shift(&p->waiters)) != NULL)
    uva__future_complete(UVA_CONTAINER_OF(l, uva_future_t, link), status, NULL, NULL);
}

static void on_exit_cb(uv_process_t *h, int64_t exit_status, int term_signal) {
  uva_process_t *p = h->data;
  p->exited = true;
  /* The shell's convention: a signal shows as 128 + its number. */
  p->status = term_signal ? 128 + term_signal : (int)exit_status;
  complete_waiters(p, p->status);
}

static void on_closed(uv_handle_t *h) {
  uva_process_t *p = h->data;
  p->loop->jobs--;
  uva__free(p);
}

static void process_close(uva_process_t *p) {
  for (int i = 0; i < 3; i++) uva_stream_close(p->stdio[i]);
  complete_waiters(p, UVA_ECLOSED);
  p->loop->jobs++;
  uv_close((uv_handle_t *)&p->handle, on_closed);
}

int uva_process_spawn(uva_process_t **out, const uva_process_opts_t *opts) {
  if (out == NULL) return UV_EINVAL;
  *out = NULL;
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return UVA_ENOLOOP;
  if (opts == NULL || opts->file == NULL) return UV_EINVAL;
  uva_process_t *p = uva__calloc(1, sizeof *p);
  if (p == NULL) return UV_ENOMEM;
  p->loop = loop;
  uva__list_init(&p->waiters);
  uv_stdio_container_t stdio[3];
  for (int i = 0; i < 3; i++) {
    switch (opts->stdio[i]) {
      case UVA_STDIO_PIPE:
        if ((p->stdio[i] = uva__stream_new_pipe(loop)) == NULL) {
          for (int k = 0; k < i; k++) uva_stream_close(p->stdio[k]);
          uva__free(p);
          return UV_ENOMEM;
        }
        stdio[i].flags = UV_CREATE_PIPE | (i == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE);
        stdio[i].data.stream = uva__stream_handle(p->stdio[i]);
        break;
      case UVA_STDIO_IGNORE:
        stdio[i].flags = UV_IGNORE;
        break;
      default:
        stdio[i].flags = UV_INHERIT_FD;
        stdio[i].data.fd = i;
        break;
    }
  }
  char *default_args[] = {(char *)opts->file, NULL};
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.exit_cb = on_exit_cb;
  o.file = opts->file;
  o.args = opts->args ? opts->args : default_args;
  o.env = opts->env;
  o.cwd = opts->cwd;
  o.stdio_count = 3;
  o.stdio = stdio;
  p->handle.data = p;
  int rc = uv_spawn(loop->uv, &p->handle, &o);
  if (rc != 0) {
    process_close(p); /* libuv wants even a failed spawn's handle closed */
    return rc;
  }
  if (loop->debug) uva__debug_open(loop, p, "process", NULL);
  *out = p;
  return 0;
}

uva_stream_t *uva_process_stdio(uva_process_t *p, int fd) {
  return p && fd >= 0 && fd < 3 ? p->stdio[fd] : NULL;
}

int uva_process_pid(const uva_process_t *p) { return p ? p->handle.pid : 0; }

uva_future_t *uva_process_wait(uva_process_t *p) {
  if (p == NULL) return uva__future_done(NULL, UV_EINVAL);
  if (p->exited) return uva__future_done(p->loop, p->status);
  uva_future_t *f = uva__future_alloc(p->loop, &waiter_fops);
  if (f) uva__list_push(&p->waiters, &f->link);
  return f;
}

int uva_process_kill(uva_process_t *p, int signum) {
  if (p == NULL) return UV_EINVAL;
  if (p->exited) return UV_ESRCH;
  return uv_process_kill(&p->handle, signum);
}

void uva_process_free(uva_process_t *p) {
  if (p && p->loop->debug) uva__debug_close(p->loop, p);
  if (p) process_close(p);
}
