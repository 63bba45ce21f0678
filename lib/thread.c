/* Crossing threads: calls and tasks submitted from other threads, and
 * blocking jobs sent to other threads (to_thread, executors).
 *
 * Other threads reach the loop through a list of calls behind a
 * uv_async_t. The async callback only moves the calls onto the ready queue;
 * they run from the drain like everything else.
 *
 * A thread that calls in holds nothing but the loop's address, and cannot
 * know whether the loop thread has closed (and freed) it meanwhile. So the
 * list is not guarded by a lock inside the loop: every live loop is entered
 * in a process-wide registry, and a call first finds its loop there under
 * the registry's lock, which also guards the loop's list. uva_loop_close
 * takes the loop out under that lock; from then on a call with its address
 * finds nothing and fails with UVA_ECLOSED, and the calls accepted before
 * run before close returns. (Before: a lock owned by the loop, freed by
 * close while other threads were still taking it: 12 of 16 runs of 8
 * threads calling during close crashed under TSan, and 57 calls accepted
 * in them never ran.)
 *
 * The registry is striped: a loop's address picks one of 64 locks, each
 * with the (short) chain of live loops that hash to it. One thread calling
 * one loop pays one lock/unlock, as before; loops of different threads
 * rarely share a stripe, so they do not contend the way one global lock
 * would make them. */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct uva__tscall {
  struct uva__tscall *next;
  void (*fn)(void *arg);
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
  uva_loop_t *loop;   /* compared, never dereferenced, off the loop */
  uva_task_fn fn;
  void *arg;
  uva_future_t *task; /* loop thread only */
};

/* ------------------------------------------------------------ registry */

enum { NSTRIPES = 64 };

typedef struct stripe {
  _Alignas(64) uv_mutex_t mu; /* a cache line each: no false sharing */
  uva_loop_t *head;           /* live loops hashing here, by loop->ts_next */
} stripe_t;

static stripe_t stripes[NSTRIPES];
static uv_once_t stripes_once = UV_ONCE_INIT;

static void stripes_init(void) {
  for (int i = 0; i < NSTRIPES; i++)
    if (uv_mutex_init(&stripes[i].mu) != 0) abort(); /* as libuv on a lock error */
}

static stripe_t *stripe_of(const uva_loop_t *loop) {
  uintptr_t a = (uintptr_t)loop;
  a ^= a >> 17;
  a ^= a >> 9;
  return &stripes[(a >> 4) % NSTRIPES]; /* loops are ~1 KiB apart: skip the low bits */
}

/* With s locked: is loop live? Only registered loops are dereferenced. */
static bool stripe_has(const stripe_t *s, const uva_loop_t *loop) {
  for (const uva_loop_t *l = s->head; l; l = l->ts_next)
    if (l == loop) return true;
  return false;
}

static void run_tscall(uva_future_t *f, void *data) {
  UVA_UNUSED(f);
  uva__tscall_t *c = data;
  bool owned = c->owned;
  uva_loop_t *loop = uva__loop_tls;
  if (loop->debug) uva__debug_step(loop, NULL, (void (*)(void))c->fn);
  c->fn(c->arg); /* may free an owned node */
  if (!owned) uva__free(c);
}

static void ready_calls(uva_loop_t *loop, uva__tscall_t *c) {
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

static void on_async(uv_async_t *h) {
  uva_loop_t *loop = h->data;
  stripe_t *s = stripe_of(loop);
  uv_mutex_lock(&s->mu);
  uva__tscall_t *c = loop->ts_head;
  loop->ts_head = loop->ts_tail = NULL;
  uv_mutex_unlock(&s->mu);
  ready_calls(loop, c);
}

int uva__ts_init(uva_loop_t *loop) {
  uv_once(&stripes_once, stripes_init);
  int rc = uv_async_init(loop->uv, &loop->async, on_async);
  if (rc != 0) return rc;
  loop->async.data = loop;
  uv_unref((uv_handle_t *)&loop->async);
  stripe_t *s = stripe_of(loop);
  uv_mutex_lock(&s->mu);
  loop->ts_next = s->head;
  s->head = loop;
  uv_mutex_unlock(&s->mu);
  return 0;
}

/* After the last task ended: leave the registry (new calls are refused)
 * and queue the calls accepted until now; uva_loop_close runs them. */
void uva__ts_close(uva_loop_t *loop) {
  stripe_t *s = stripe_of(loop);
  uv_mutex_lock(&s->mu);
  for (uva_loop_t **p = &s->head; *p; p = &(*p)->ts_next) {
    if (*p == loop) {
      *p = loop->ts_next;
      break;
    }
  }
  uva__tscall_t *c = loop->ts_head;
  loop->ts_head = loop->ts_tail = NULL;
  uv_mutex_unlock(&s->mu);
  ready_calls(loop, c);
}

/* Queue node c (fn, arg, owned set) for the loop. */
static int post_node(uva_loop_t *loop, uva__tscall_t *c) {
  c->next = NULL;
  stripe_t *s = stripe_of(loop);
  uv_mutex_lock(&s->mu);
  if (!stripe_has(s, loop)) {
    uv_mutex_unlock(&s->mu);
    return UVA_ECLOSED;
  }
  /* A non-empty list has a wake-up on the way that has not taken the list
   * yet (the callback takes it under this lock): no second send. */
  bool first = loop->ts_head == NULL;
  if (loop->ts_tail) loop->ts_tail->next = c; else loop->ts_head = c;
  loop->ts_tail = c;
  if (first) uv_async_send(&loop->async); /* under the lock: close waits for it */
  uv_mutex_unlock(&s->mu);
  return 0;
}

static int post(uva_loop_t *loop, void (*fn)(void *), void *arg) {
  if (loop == NULL || fn == NULL) return UV_EINVAL;
  uva__tscall_t *c = uva__malloc(sizeof *c);
  if (c == NULL) return UV_ENOMEM;
  c->fn = fn;
  c->arg = arg;
  c->owned = false;
  int rc = post_node(loop, c);
  if (rc != 0) uva__free(c);
  return rc;
}

int uva_call_threadsafe(uva_loop_t *loop, void (*fn)(void *arg), void *arg) {
  return post(loop, fn, arg);
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
  int rc = post(loop, ts_start, t);
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
  uv_mutex_lock(&t->mu);
  /* Not done: then the loop is live (close completes every submission), so
   * the address compared is that loop's. */
  if (!t->done && uva__loop_tls == t->loop) {
    uv_mutex_unlock(&t->mu);
    return UV_EBUSY;
  }
  if (timeout_ms < 0) {
    while (!t->done) uv_cond_wait(&t->cond, &t->mu);
  } else {
    /* A timeout too long to count in ns (292 years) is no deadline: the
     * product would wrap round to one that has passed. And each wait is a
     * day at most: uv_cond_timedwait adds it to the clock, and a sum that
     * wraps times out at once. */
    uint64_t now0 = uv_hrtime();
    uint64_t end = (uint64_t)timeout_ms > (UINT64_MAX - now0) / 1000000u
                       ? UINT64_MAX
                       : now0 + (uint64_t)timeout_ms * 1000000u;
    const uint64_t day = 86400ull * 1000000000u;
    while (!t->done) {
      uint64_t now = uv_hrtime();
      if (now >= end) break;
      uv_cond_timedwait(&t->cond, &t->mu, end - now < day ? end - now : day);
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

void uva_tsfuture_cancel(uva_tsfuture_t *t) {
  if (t == NULL) return;
  uv_mutex_lock(&t->mu);
  int done = t->done;
  if (!done) t->refs++;
  uv_mutex_unlock(&t->mu);
  if (done) return;
  if (post(t->loop, ts_cancel, t) != 0) ts_unref(t); /* done or closed */
}

void uva_tsfuture_free(uva_tsfuture_t *t) {
  if (t) ts_unref(t);
}

/* ------------------------------------------------- to_thread, executors */
/* A job is a future with one extra reference held while the job is in
 * flight (queued or running); the loop drops it when the job comes back,
 * so the job's memory and late value outlive the future's other owners.
 * loop->jobs counts jobs in flight: a loop does not close under them.
 *
 * Cancelling follows the header's rule (to_thread section). A job taken out
 * of its queue completes UV_ECANCELED at once. A running job cannot be
 * stopped: it sees uva_job_cancelled() == 1, and its future completes when
 * it returns, with its real outcome (uva_to_thread: the caller lent arg, so
 * telling it "over" before the job let go of arg made the natural
 * free-after-await a use-after-free), or at once with UV_ECANCELED for
 * uva_to_thread_owned, whose arg the library frees after the job. */

enum { JOB_QUEUED, JOB_RUNNING, JOB_FINISHED };

typedef struct job {
  uva_future_t base;
  uva_work_fn fn;
  void *arg;
  uva_free_fn arg_free; /* owned jobs: frees arg once the job is over */
  bool owned;
  uva_free_fn free_fn;
  int status;           /* written by the worker */
  void *value;
  atomic_int cancel;    /* a cancel was requested: uva_job_cancelled() */
  uv_work_t req;        /* libuv's pool */
  uva_executor_t *ex;   /* or an executor */
  uva__link_t qlink;    /* executor queue, under ex->mu */
  atomic_int state;     /* executor jobs: QUEUED -> RUNNING -> FINISHED */
  uva__tscall_t done;   /* executor jobs: the completion, posted back */
} job_t;

struct uva_executor {
  uva_loop_t *loop;
  uv_mutex_t mu;
  uv_cond_t cond;
  uva__link_t queue;
  bool stopping;
  unsigned nthreads;
  uv_thread_t *threads;
};

/* The job running on this (worker) thread. */
static _Thread_local job_t *current_job;

int uva_job_cancelled(void) {
  job_t *j = current_job;
  return j != NULL && atomic_load_explicit(&j->cancel, memory_order_relaxed);
}

static void run_job(job_t *j) {
  current_job = j;
  j->value = NULL;
  j->status = j->fn(j->arg, &j->value);
  current_job = NULL;
}

static void free_arg(bool owned, uva_free_fn arg_free, void *arg) {
  if (owned && arg_free) arg_free(arg);
}

/* Back on the loop, the job over (ran, or dropped unstarted): free an owned
 * arg, hand over the result, or free it if the future is done already. */
static void job_finish(job_t *j) {
  uva_loop_t *loop = j->base.loop;
  free_arg(j->owned, j->arg_free, j->arg);
  j->arg = NULL;
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
  atomic_store_explicit(&j->cancel, 1, memory_order_relaxed);
  if (j->ex == NULL) {
    /* Queued: uv_cancel takes it out and pool_after follows with
     * UV_ECANCELED (and drops the job's reference). */
    if (uv_cancel((uv_req_t *)&j->req) == 0) return uva__future_cancel_now(f);
  } else if (atomic_load(&j->state) != JOB_FINISHED) {
    /* Not finished: uva_executor_free (this thread) has not run, so ex is
     * alive. Workers take jobs under ex->mu, so QUEUED here is final. */
    uva_executor_t *ex = j->ex;
    uv_mutex_lock(&ex->mu);
    bool queued = atomic_load(&j->state) == JOB_QUEUED;
    if (queued) uva__list_unlink(&j->qlink);
    uv_mutex_unlock(&ex->mu);
    if (queued) {
      j->status = UV_ECANCELED;
      job_finish(j); /* completes f now; the caller still holds it */
      return 1;
    }
  }
  /* Started. */
  return j->owned ? uva__future_cancel_now(f) : 1;
}

static const uva__fops_t job_fops = {"to_thread", job_cancel, NULL, sizeof(job_t), NULL};

static void pool_work(uv_work_t *req) { run_job(UVA_CONTAINER_OF(req, job_t, req)); }

static void pool_after(uv_work_t *req, int status) {
  job_t *j = UVA_CONTAINER_OF(req, job_t, req);
  if (status == UV_ECANCELED) { /* never ran */
    j->status = UV_ECANCELED;
    j->value = NULL;
  }
  job_finish(j);
}

static void job_posted(void *arg) { job_finish(arg); }

static void worker(void *arg) {
  uva_executor_t *ex = arg;
  uv_mutex_lock(&ex->mu);
  for (;;) {
    while (uva__list_empty(&ex->queue) && !ex->stopping) uv_cond_wait(&ex->cond, &ex->mu);
    uva__link_t *l = uva__list_shift(&ex->queue);
    if (l == NULL) break; /* stopping (uva_executor_free took the queue) */
    job_t *j = UVA_CONTAINER_OF(l, job_t, qlink);
    atomic_store(&j->state, JOB_RUNNING);
    uv_mutex_unlock(&ex->mu);
    run_job(j);
    atomic_store(&j->state, JOB_FINISHED);
    /* The node is preallocated, so this cannot fail for memory; the loop
     * only refuses once it is closed, and it does not close while jobs
     * are in flight. */
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
  uva__list_init(&ex->queue);
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
  uva__link_t queued;
  uva__list_init(&queued);
  uv_mutex_lock(&ex->mu);
  ex->stopping = true;
  for (uva__link_t *l; (l = uva__list_shift(&ex->queue)) != NULL;) uva__list_push(&queued, l);
  uv_cond_broadcast(&ex->cond);
  uv_mutex_unlock(&ex->mu);
  /* Jobs that never started end cancelled; we are on the loop's thread. */
  for (uva__link_t *l; (l = uva__list_shift(&queued)) != NULL;) {
    job_t *j = UVA_CONTAINER_OF(l, job_t, qlink);
    atomic_store(&j->state, JOB_FINISHED);
    j->status = UV_ECANCELED;
    job_finish(j);
  }
  for (unsigned i = 0; i < ex->nthreads; i++) uv_thread_join(&ex->threads[i]);
  uv_cond_destroy(&ex->cond);
  uv_mutex_destroy(&ex->mu);
  uva__free(ex->threads);
  uva__free(ex);
}

static uva_future_t *submit(uva_executor_t *ex, uva_work_fn fn, void *arg, bool owned,
                            uva_free_fn arg_free, uva_free_fn free_fn) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) {
    free_arg(owned, arg_free, arg);
    return uva__noloop();
  }
  if (fn == NULL || (ex && ex->loop != loop)) {
    free_arg(owned, arg_free, arg);
    return uva__future_done(loop, UV_EINVAL);
  }
  job_t *j = (job_t *)uva__future_alloc(loop, &job_fops);
  if (j == NULL) {
    free_arg(owned, arg_free, arg);
    return NULL;
  }
  j->fn = fn;
  j->arg = arg;
  j->owned = owned;
  j->arg_free = arg_free;
  j->free_fn = free_fn;
  j->ex = ex;
  atomic_init(&j->cancel, 0);
  atomic_init(&j->state, JOB_QUEUED);
  int rc = 0;
  if (ex == NULL) {
    rc = uv_queue_work(loop->uv, &j->req, pool_work, pool_after);
  } else {
    j->done.fn = job_posted;
    j->done.arg = j;
    j->done.owned = true;
    uv_mutex_lock(&ex->mu);
    if (ex->stopping) {
      rc = UVA_ECLOSED;
    } else {
      uva__list_push(&ex->queue, &j->qlink);
      uv_cond_signal(&ex->cond);
    }
    uv_mutex_unlock(&ex->mu);
  }
  if (rc != 0) {
    free_arg(owned, arg_free, arg);
    uva__future_complete(&j->base, rc, NULL, NULL);
    return &j->base;
  }
  j->base.refs++; /* the job's own, while in flight */
  loop->jobs++;
  return &j->base;
}

uva_future_t *uva_to_thread(uva_executor_t *ex, uva_work_fn fn, void *arg,
                            uva_free_fn free_fn) {
  return submit(ex, fn, arg, false, NULL, free_fn);
}

uva_future_t *uva_to_thread_owned(uva_executor_t *ex, uva_work_fn fn, void *arg,
                                  uva_free_fn arg_free, uva_free_fn free_fn) {
  return submit(ex, fn, arg, true, arg_free, free_fn);
}
