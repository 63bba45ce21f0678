/* Entry points for other threads: a mutex-protected list of calls behind a
 * uv_async_t. The async callback only moves the calls onto the ready queue;
 * they run from the drain like everything else. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct uva__tscall {
  struct uva__tscall *next;
  void (*fn)(void *arg);
  void (*drop)(void *arg); /* instead of fn when the loop closes first */
  void *arg;
  uva__cb_t cb;
} uva__tscall_t;

struct uva_tsfuture {
  uv_mutex_t mu;
  uv_cond_t cond;
  int refs;
  int done;
  int status;
  void *value;
  uva_free_fn free_fn;
  uva_loop_t *loop;
  uva_task_fn fn;
  void *arg;
  uva_future_t *task; /* loop thread only */
};

static void run_tscall(uva_future_t *f, void *data) {
  UVA_UNUSED(f);
  uva__tscall_t *c = data;
  c->fn(c->arg);
  uva__free(c);
}

static void on_async(uv_async_t *h) {
  uva_loop_t *loop = h->data;
  uv_mutex_lock(loop->ts_mutex);
  uva__tscall_t *c = loop->ts_head;
  loop->ts_head = loop->ts_tail = NULL;
  uv_mutex_unlock(loop->ts_mutex);
  while (c) {
    uva__tscall_t *next = c->next;
    c->cb.embedded = true;
    c->cb.fn = run_tscall;
    c->cb.data = c;
    c->cb.fut = NULL;
    uva__ready_push(loop, &c->cb);
    c = next;
  }
}

int uva__ts_init(uva_loop_t *loop) {
  loop->ts_mutex = uva__malloc(sizeof(uv_mutex_t));
  if (loop->ts_mutex == NULL) return UV_ENOMEM;
  int rc = uv_mutex_init(loop->ts_mutex);
  if (rc != 0) {
    uva__free(loop->ts_mutex);
    return rc;
  }
  rc = uv_async_init(loop->uv, &loop->async, on_async);
  if (rc != 0) {
    uv_mutex_destroy(loop->ts_mutex);
    uva__free(loop->ts_mutex);
    return rc;
  }
  loop->async.data = loop;
  uv_unref((uv_handle_t *)&loop->async);
  return 0;
}

/* After the last task ended: refuse new calls, drop queued ones. */
void uva__ts_close(uva_loop_t *loop) {
  uv_mutex_lock(loop->ts_mutex);
  uva__tscall_t *c = loop->ts_head;
  loop->ts_head = loop->ts_tail = NULL;
  loop->ts_closed = true;
  uv_mutex_unlock(loop->ts_mutex);
  while (c) {
    uva__tscall_t *next = c->next;
    if (c->drop) c->drop(c->arg);
    uva__free(c);
    c = next;
  }
  uv_mutex_destroy(loop->ts_mutex);
  uva__free(loop->ts_mutex);
  loop->ts_mutex = NULL;
}

static int post(uva_loop_t *loop, void (*fn)(void *), void (*drop)(void *), void *arg) {
  if (loop == NULL || fn == NULL) return UV_EINVAL;
  uva__tscall_t *c = uva__malloc(sizeof *c);
  if (c == NULL) return UV_ENOMEM;
  c->next = NULL;
  c->fn = fn;
  c->drop = drop;
  c->arg = arg;
  uv_mutex_lock(loop->ts_mutex);
  if (loop->ts_closed) {
    uv_mutex_unlock(loop->ts_mutex);
    uva__free(c);
    return UVA_ECLOSED;
  }
  if (loop->ts_tail) loop->ts_tail->next = c; else loop->ts_head = c;
  loop->ts_tail = c;
  uv_async_send(&loop->async);
  uv_mutex_unlock(loop->ts_mutex);
  return 0;
}

int uva_call_threadsafe(uva_loop_t *loop, void (*fn)(void *arg), void *arg) {
  return post(loop, fn, NULL, arg);
}

/* ------------------------------------------------------------ tsfuture */

static void ts_unref(uva_tsfuture_t *t) {
  uv_mutex_lock(&t->mu);
  int left = --t->refs;
  uv_mutex_unlock(&t->mu);
  if (left) return;
  if (t->value && t->free_fn) t->free_fn(t->value);
  uv_cond_destroy(&t->cond);
  uv_mutex_destroy(&t->mu);
  uva__free(t);
}

static void ts_complete(uva_tsfuture_t *t, int status, void *value, uva_free_fn free_fn) {
  uv_mutex_lock(&t->mu);
  t->status = status;
  t->value = value;
  t->free_fn = free_fn;
  t->done = 1;
  uv_cond_broadcast(&t->cond);
  uv_mutex_unlock(&t->mu);
  ts_unref(t); /* the loop side's reference */
}

static void ts_task_done(uva_future_t *f, void *data) {
  uva_tsfuture_t *t = data;
  t->task = NULL;
  ts_complete(t, f->status, uva_future_take(f), f->free_fn);
  uva_release(f);
}

static void ts_start(void *arg) {
  uva_tsfuture_t *t = arg;
  uva_loop_t *loop = t->loop;
  uva_future_t *task = loop->closing ? NULL : uva__spawn(loop, NULL, t->fn, t->arg);
  if (task == NULL || uva_future_on_done(task, ts_task_done, t) != 0) {
    if (task) {
      uva_cancel(task);
      uva_release(task);
    }
    ts_complete(t, loop->closing ? UVA_ECLOSED : UV_ENOMEM, NULL, NULL);
    return;
  }
  t->task = task;
}

static void ts_drop(void *arg) { ts_complete(arg, UVA_ECLOSED, NULL, NULL); }

uva_tsfuture_t *uva_submit_threadsafe(uva_loop_t *loop, uva_task_fn fn, void *arg) {
  if (loop == NULL || fn == NULL) return NULL;
  uva_tsfuture_t *t = uva__calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  if (uv_mutex_init(&t->mu) != 0) {
    uva__free(t);
    return NULL;
  }
  if (uv_cond_init(&t->cond) != 0) {
    uv_mutex_destroy(&t->mu);
    uva__free(t);
    return NULL;
  }
  t->refs = 2; /* the caller's handle and the loop side */
  t->loop = loop;
  t->fn = fn;
  t->arg = arg;
  int rc = post(loop, ts_start, ts_drop, t);
  if (rc != 0) {
    t->refs = 1;
    t->done = 1;
    t->status = rc;
  }
  return t;
}

int uva_tsfuture_wait(uva_tsfuture_t *t, int64_t timeout_ms, void **out) {
  if (out) *out = NULL;
  if (t == NULL) return UV_EINVAL;
  if (uva__loop_tls == t->loop) return UV_EBUSY;
  uv_mutex_lock(&t->mu);
  if (timeout_ms < 0) {
    while (!t->done) uv_cond_wait(&t->cond, &t->mu);
  } else {
    uint64_t end = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
    while (!t->done) {
      uint64_t now = uv_hrtime();
      if (now >= end || uv_cond_timedwait(&t->cond, &t->mu, end - now) == UV_ETIMEDOUT) {
        if (!t->done) break;
      }
    }
  }
  int st = t->done ? t->status : UV_ETIMEDOUT;
  if (t->done && out && st >= 0) {
    *out = t->value;
    t->value = NULL;
  }
  uv_mutex_unlock(&t->mu);
  return st;
}

static void ts_cancel(void *arg) {
  uva_tsfuture_t *t = arg;
  if (t->task) uva_cancel(t->task);
  ts_unref(t);
}

static void ts_cancel_drop(void *arg) { ts_unref(arg); }

void uva_tsfuture_cancel(uva_tsfuture_t *t) {
  if (t == NULL) return;
  uv_mutex_lock(&t->mu);
  int done = t->done;
  if (!done) t->refs++;
  uv_mutex_unlock(&t->mu);
  if (done) return;
  if (post(t->loop, ts_cancel, ts_cancel_drop, t) != 0) ts_unref(t);
}

void uva_tsfuture_free(uva_tsfuture_t *t) {
  if (t) ts_unref(t);
}
