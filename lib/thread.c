/* Crossing threads: calls and tasks submitted from other threads, and
 * blocking jobs sent to other threads (to_thread, executors).
 *
 * Other threads reach the loop through one mutex-protected list of calls
 * behind a uv_async_t. The async callback only moves the calls onto the
 * ready queue; they run from the drain like everything else. */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct uva__tscall {
  struct uva__tscall *next;
  void (*fn)(void *arg);
  void (*drop)(void *arg); /* instead of fn when the loop closes first */
  void *arg;
  bool owned;              /* part of a larger struct: not freed here */
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
  bool owned = c->owned;
  uva_loop_t *loop = uva__loop_tls;
  if (loop->debug) uva__debug_step(loop, NULL, (void (*)(void))c->fn);
  c->fn(c->arg); /* may free an owned node */
  if (!owned) uva__free(c);
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
    bool owned = c->owned;
    if (c->drop) c->drop(c->arg);
    if (!owned) uva__free(c);
    c = next;
  }
  uv_mutex_destroy(loop->ts_mutex);
  uva__free(loop->ts_mutex);
  loop->ts_mutex = NULL;
}

/* Queue node c (fn, drop, arg, owned set) for the loop. */
static int post_node(uva_loop_t *loop, uva__tscall_t *c) {
  c->next = NULL;
  uv_mutex_lock(loop->ts_mutex);
  if (loop->ts_closed) {
    uv_mutex_unlock(loop->ts_mutex);
    return UVA_ECLOSED;
  }
  if (loop->ts_tail) loop->ts_tail->next = c; else loop->ts_head = c;
  loop->ts_tail = c;
  uv_async_send(&loop->async);
  uv_mutex_unlock(loop->ts_mutex);
  return 0;
}

static int post(uva_loop_t *loop, void (*fn)(void *), void (*drop)(void *), void *arg) {
  if (loop == NULL || fn == NULL) return UV_EINVAL;
  uva__tscall_t *c = uva__malloc(sizeof *c);
  if (c == NULL) return UV_ENOMEM;
  c->fn = fn;
  c->drop = drop;
  c->arg = arg;
  c->owned = false;
  int rc = post_node(loop, c);
  if (rc != 0) uva__free(c);
  return rc;
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

/* ------------------------------------------------- to_thread, executors */
/* A job is a future with one extra reference held while the job is in
 * flight; the loop drops it when the job's completion comes back, so a
 * cancelled (abandoned) job's memory and late value outlive the future's
 * other owners. loop->jobs counts jobs in flight: a loop does not close
 * under them. */

enum { JOB_QUEUED, JOB_RUNNING, JOB_FINISHED, JOB_CANCELLED };

typedef struct job {
  uva_future_t base;
  uva_work_fn fn;
  void *arg;
  uva_free_fn free_fn;
  int status;           /* written by the worker */
  void *value;
  uv_work_t req;        /* libuv's pool */
  uva_executor_t *ex;   /* or an executor */
  struct job *next;     /* executor queue */
  _Atomic int state;    /* executor jobs: QUEUED -> RUNNING | CANCELLED */
  uva__tscall_t done;   /* executor jobs: the completion, posted back */
} job_t;

struct uva_executor {
  uva_loop_t *loop;
  uv_mutex_t mu;
  uv_cond_t cond;
  job_t *head, *tail;
  bool stopping;
  unsigned nthreads;
  uv_thread_t *threads;
};

/* Back on the loop: hand over the result, or free it if nobody waits. */
static void job_finish(job_t *j) {
  uva_loop_t *loop = j->base.loop;
  if (j->base.state == UVA__PENDING) {
    if (j->status >= 0) {
      uva__future_complete(&j->base, j->status, j->value, j->free_fn);
    } else {
      if (j->value && j->free_fn) j->free_fn(j->value);
      uva__future_complete(&j->base, j->status, NULL, NULL);
    }
  } else if (j->value && j->free_fn) {
    j->free_fn(j->value); /* the late result of an abandoned job */
  }
  j->value = NULL;
  loop->jobs--;
  uva_release(&j->base);
}

static int job_cancel(uva_future_t *f) {
  job_t *j = (job_t *)f;
  if (j->ex == NULL) {
    /* Queued: uv_cancel takes it out and after_work sees UV_ECANCELED.
     * Running: it cannot be stopped; the future ends now, the result is
     * freed when it comes. */
    uv_cancel((uv_req_t *)&j->req);
  } else {
    int queued = JOB_QUEUED;
    atomic_compare_exchange_strong(&j->state, &queued, JOB_CANCELLED);
  }
  return uva__future_cancel_now(f);
}

static const uva__fops_t job_fops = {"to_thread", job_cancel, NULL, sizeof(job_t)};

static void pool_work(uv_work_t *req) {
  job_t *j = UVA_CONTAINER_OF(req, job_t, req);
  j->value = NULL;
  j->status = j->fn(j->arg, &j->value);
}

static void pool_after(uv_work_t *req, int status) {
  job_t *j = UVA_CONTAINER_OF(req, job_t, req);
  if (status == UV_ECANCELED) j->status = UV_ECANCELED; /* never ran */
  job_finish(j);
}

static void job_posted(void *arg) { job_finish(arg); }

static void worker(void *arg) {
  uva_executor_t *ex = arg;
  uv_mutex_lock(&ex->mu);
  for (;;) {
    while (ex->head == NULL && !ex->stopping) uv_cond_wait(&ex->cond, &ex->mu);
    job_t *j = ex->head;
    if (j == NULL) break; /* stopping and drained */
    ex->head = j->next;
    if (ex->head == NULL) ex->tail = NULL;
    uv_mutex_unlock(&ex->mu);
    int queued = JOB_QUEUED;
    if (atomic_compare_exchange_strong(&j->state, &queued, JOB_RUNNING)) {
      j->value = NULL;
      j->status = j->fn(j->arg, &j->value);
      atomic_store(&j->state, JOB_FINISHED);
    }
    /* Cancelled jobs come back too: the loop drops their reference. The
     * node is preallocated, so this cannot fail for memory; the loop only
     * refuses once it is closed, which uva_executor_free's contract rules
     * out. */
    post_node(j->base.loop, &j->done);
    uv_mutex_lock(&ex->mu);
  }
  uv_mutex_unlock(&ex->mu);
}

int uva_executor_new(uva_executor_t **out, unsigned threads) {
  if (out == NULL) return UV_EINVAL;
  *out = NULL;
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return UVA_ENOLOOP;
  if (threads == 0 || threads > 1024) return UV_EINVAL;
  uva_executor_t *ex = uva__calloc(1, sizeof *ex);
  if (ex == NULL) return UV_ENOMEM;
  ex->loop = loop;
  ex->threads = uva__calloc(threads, sizeof *ex->threads);
  int rc = ex->threads ? uv_mutex_init(&ex->mu) : UV_ENOMEM;
  if (rc != 0) {
    uva__free(ex->threads);
    uva__free(ex);
    return rc;
  }
  if ((rc = uv_cond_init(&ex->cond)) != 0) {
    uv_mutex_destroy(&ex->mu);
    uva__free(ex->threads);
    uva__free(ex);
    return rc;
  }
  for (unsigned i = 0; i < threads; i++) {
    if ((rc = uv_thread_create(&ex->threads[i], worker, ex)) != 0) break;
    ex->nthreads++;
  }
  if (rc != 0) {
    uva_executor_free(ex);
    return rc;
  }
  if (loop->debug) uva__debug_open(loop, ex, "executor", NULL);
  *out = ex;
  return 0;
}

void uva_executor_free(uva_executor_t *ex) {
  if (ex == NULL) return;
  /* (documented to come before loop close; do not touch a closed loop) */
  if (uva__loop_tls == ex->loop && ex->loop->debug) uva__debug_close(ex->loop, ex);
  uv_mutex_lock(&ex->mu);
  ex->stopping = true;
  job_t *queued = ex->head;
  ex->head = ex->tail = NULL;
  uv_cond_broadcast(&ex->cond);
  uv_mutex_unlock(&ex->mu);
  /* Jobs that never started end cancelled; we are on the loop's thread. */
  while (queued) {
    job_t *next = queued->next;
    atomic_store(&queued->state, JOB_CANCELLED);
    queued->status = UV_ECANCELED;
    job_finish(queued);
    queued = next;
  }
  for (unsigned i = 0; i < ex->nthreads; i++) uv_thread_join(&ex->threads[i]);
  uv_cond_destroy(&ex->cond);
  uv_mutex_destroy(&ex->mu);
  uva__free(ex->threads);
  uva__free(ex);
}

uva_future_t *uva_to_thread(uva_executor_t *ex, uva_work_fn fn, void *arg,
                            uva_free_fn free_fn) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return NULL;
  if (fn == NULL || (ex && ex->loop != loop)) return uva__future_done(loop, UV_EINVAL);
  job_t *j = (job_t *)uva__future_alloc(loop, &job_fops);
  if (j == NULL) return NULL;
  j->fn = fn;
  j->arg = arg;
  j->free_fn = free_fn;
  j->ex = ex;
  j->base.refs++; /* the job's own, while in flight */
  if (ex == NULL) {
    int rc = uv_queue_work(loop->uv, &j->req, pool_work, pool_after);
    if (rc != 0) {
      j->base.refs--;
      uva__future_complete(&j->base, rc, NULL, NULL);
      return &j->base;
    }
  } else {
    atomic_init(&j->state, JOB_QUEUED);
    j->done.fn = job_posted;
    j->done.drop = job_posted;
    j->done.arg = j;
    j->done.owned = true;
    uv_mutex_lock(&ex->mu);
    if (ex->stopping) {
      uv_mutex_unlock(&ex->mu);
      j->base.refs--;
      uva__future_complete(&j->base, UVA_ECLOSED, NULL, NULL);
      return &j->base;
    }
    j->next = NULL;
    if (ex->tail) ex->tail->next = j; else ex->head = j;
    ex->tail = j;
    uv_cond_signal(&ex->cond);
    uv_mutex_unlock(&ex->mu);
  }
  loop->jobs++;
  return &j->base;
}
