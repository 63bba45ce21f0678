/* Entry points from other threads. */
#include "helpers.h"

#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static atomic_int calls_seen;
static uva_event_t *calls_ev;
static void on_loop(void *arg) {
  ck_assert_ptr_nonnull(uva_loop_current()); /* runs on the loop's thread */
  if (atomic_fetch_add(&calls_seen, (int)(intptr_t)arg) + 1 == 400) uva_event_set(calls_ev);
}

static void poster(void *arg) {
  uva_loop_t *loop = arg;
  for (int i = 0; i < 100; i++) ck_assert_int_eq(uva_call_threadsafe(loop, on_loop, (void *)1), 0);
}

static int call_from_threads(void *arg) {
  (void)arg;
  atomic_store(&calls_seen, 0);
  calls_ev = uva_event_new();
  uv_thread_t th[4];
  for (int i = 0; i < 4; i++) uv_thread_create(&th[i], poster, uva_loop_current());
  ck_assert_int_eq(uva_await(uva_event_wait(calls_ev), NULL), 0); /* the 400th ran */
  for (int i = 0; i < 4; i++) uv_thread_join(&th[i]);
  ck_assert_int_eq(atomic_load(&calls_seen), 400);
  uva_event_free(calls_ev);
  return 0;
}
START_TEST(test_call_threadsafe_runs_on_loop_thread) {
  ck_assert_int_eq(RUN_MAIN(call_from_threads, NULL), 0);
}
END_TEST

static int doubler(void *arg) {
  uva_await(uva_sleep(5), NULL);
  return 2 * (int)(intptr_t)arg;
}
static int never_done(void *arg) {
  (void)arg;
  return uva_await(uva_future_new(), NULL); /* nobody completes it: until cancelled */
}

typedef struct {
  uva_loop_t *loop;
  uva_event_t *done; /* set (on the loop) when the thread has its results */
  int result, timed_out, cancelled, huge;
} sub_t;
static void set_event(void *arg) { uva_event_set(arg); }

static void submitter(void *arg) {
  sub_t *s = arg;
  uva_tsfuture_t *t = uva_submit_threadsafe(s->loop, doubler, (void *)21);
  s->result = uva_tsfuture_wait(t, -1, NULL);
  uva_tsfuture_free(t);
  /* A timeout too long to count in nanoseconds waits, it does not wrap
   * round to one that has passed. */
  t = uva_submit_threadsafe(s->loop, doubler, (void *)4);
  s->huge = uva_tsfuture_wait(t, INT64_MAX, NULL);
  uva_tsfuture_free(t);
  t = uva_submit_threadsafe(s->loop, never_done, NULL);
  s->timed_out = uva_tsfuture_wait(t, 20, NULL);
  uva_tsfuture_cancel(t);
  s->cancelled = uva_tsfuture_wait(t, -1, NULL);
  uva_tsfuture_free(t);
  if (uva_call_threadsafe(s->loop, set_event, s->done) != 0) abort();
}

static int submit_from_thread(void *arg) {
  (void)arg;
  sub_t s = {uva_loop_current(), uva_event_new(), 0, 0, 0, 0};
  uv_thread_t th;
  uv_thread_create(&th, submitter, &s);
  /* Keep the loop turning while the other thread works. */
  ck_assert_int_eq(uva_await(uva_event_wait(s.done), NULL), 0);
  uv_thread_join(&th);
  uva_event_free(s.done);
  ck_assert_int_eq(s.result, 42);
  ck_assert_int_eq(s.huge, 8);
  ck_assert_int_eq(s.timed_out, UV_ETIMEDOUT);
  ck_assert_int_eq(s.cancelled, UV_ECANCELED);
  uva_tsfuture_t *self = uva_submit_threadsafe(uva_loop_current(), doubler, (void *)1);
  ck_assert_int_eq(uva_tsfuture_wait(self, -1, NULL), UV_EBUSY); /* would deadlock */
  uva_tsfuture_free(self);
  return 0;
}
START_TEST(test_submit_threadsafe_and_wait_for_result) {
  ck_assert_int_eq(RUN_MAIN(submit_from_thread, NULL), 0);
}
END_TEST

static uva_event_t *stop_ev, *stopper_done;
static int set_stop(void *arg) {
  (void)arg;
  uva_event_set(stop_ev);
  return 0;
}
static void stopper(void *arg) {
  /* Most likely the loop is idle by now; if not, the test passes without
   * having tested much (it asserts nothing about time). */
  uv_sleep(30);
  uva_tsfuture_t *t = uva_submit_threadsafe(arg, set_stop, NULL);
  uva_tsfuture_wait(t, -1, NULL);
  uva_tsfuture_free(t);
  if (uva_call_threadsafe(arg, set_event, stopper_done) != 0) abort();
}
static int idle_loop_waits_for_threads(void *arg) {
  (void)arg;
  stop_ev = uva_event_new();
  stopper_done = uva_event_new();
  uv_thread_t b;
  uv_thread_create(&b, stopper, uva_loop_current());
  /* Nothing local keeps the loop alive now: it must still wake up for the
   * other thread's submission instead of returning or spinning. */
  int rc = uva_await(uva_event_wait(stop_ev), NULL);
  /* The thread still waits for its result, which this loop delivers. */
  ck_assert_int_eq(uva_await(uva_event_wait(stopper_done), NULL), 0);
  uv_thread_join(&b);
  uva_event_free(stop_ev);
  uva_event_free(stopper_done);
  return rc;
}
START_TEST(test_idle_loop_wakes_for_other_threads) {
  ck_assert_int_eq(RUN_MAIN(idle_loop_waits_for_threads, NULL), 0);
}
END_TEST

START_TEST(test_submit_to_closed_loop_fails_cleanly) {
  long live = uva_test_alloc_live();
  uva_loop_t *loop;
  ck_assert_int_eq(uva_loop_new(&loop), 0);
  uva_tsfuture_t *t = uva_submit_threadsafe(loop, doubler, (void *)1);
  ck_assert_int_eq(uva_loop_close(loop), 0); /* refused while closing: never ran */
  ck_assert_int_eq(uva_tsfuture_wait(t, 0, NULL), UVA_ECLOSED);
  uva_tsfuture_free(t);
  ck_assert_int_eq(uva_call_threadsafe(NULL, on_loop, NULL), UV_EINVAL);
  ck_assert_int_eq(uva_test_alloc_live(), live);
}
END_TEST


/* Eight threads call in without pause while the loop thread closes the
 * loop, and go on calling after it is freed. Every call that returned 0
 * must have run exactly once; every other call fails with UVA_ECLOSED.
 * The close starts while the calls stream in (after 64 per thread ran), and
 * the threads only stop when refused, so each round crosses the close. */
enum { HAMMER_THREADS = 8, HAMMER_ROUNDS = 8, HAMMER_WARM = 64 * HAMMER_THREADS };

typedef struct {
  uva_loop_t *loop;
  uva_event_t *warm;       /* set when HAMMER_WARM calls have run */
  long ran;                /* calls run (loop thread) */
  long tasks_ran;          /* submitted tasks that ran (loop thread) */
  atomic_long accepted;    /* calls that returned 0 */
  atomic_long tasks_ok;    /* submissions whose result came back */
  atomic_int unexpected;   /* any other return code */
  uv_mutex_t mu;
  uv_cond_t cond;
  int closed;              /* uva_loop_close has returned */
} hammer_t;

static void hammer_call(void *arg) {
  hammer_t *h = arg;
  if (++h->ran == HAMMER_WARM) uva_event_set(h->warm);
}
static int hammer_task(void *arg) {
  hammer_t *h = arg;
  h->tasks_ran++;
  return 7;
}
static void hammer_thread(void *arg) {
  hammer_t *h = arg;
  long accepted = 0;
  for (unsigned i = 0;; i++) {
    if (i % 8 == 7) { /* a task now and then, every other one cancelled */
      uva_tsfuture_t *t = uva_submit_threadsafe(h->loop, hammer_task, h);
      if (t == NULL) {
        atomic_fetch_add(&h->unexpected, 1);
        break;
      }
      if (i % 16 == 15) uva_tsfuture_cancel(t);
      int rc = uva_tsfuture_wait(t, -1, NULL);
      uva_tsfuture_free(t);
      if (rc == 7) atomic_fetch_add(&h->tasks_ok, 1);
      else if (rc != UVA_ECLOSED && rc != UV_ECANCELED) atomic_fetch_add(&h->unexpected, 1);
      if (rc == UVA_ECLOSED) break;
      continue;
    }
    int rc = uva_call_threadsafe(h->loop, hammer_call, h);
    if (rc == 0) {
      accepted++;
    } else {
      if (rc != UVA_ECLOSED) atomic_fetch_add(&h->unexpected, 1);
      break;
    }
  }
  atomic_fetch_add(&h->accepted, accepted);
  /* Once close has returned (the loop is freed), every entry point still
   * refuses cleanly. */
  uv_mutex_lock(&h->mu);
  while (!h->closed) uv_cond_wait(&h->cond, &h->mu);
  uv_mutex_unlock(&h->mu);
  if (uva_call_threadsafe(h->loop, hammer_call, h) != UVA_ECLOSED) atomic_fetch_add(&h->unexpected, 1);
  uva_tsfuture_t *t = uva_submit_threadsafe(h->loop, hammer_task, h);
  uva_tsfuture_cancel(t);
  if (uva_tsfuture_wait(t, -1, NULL) != UVA_ECLOSED) atomic_fetch_add(&h->unexpected, 1);
  uva_tsfuture_free(t);
}
static int hammer_main(void *arg) {
  hammer_t *h = arg;
  return uva_await(uva_event_wait(h->warm), NULL);
}
START_TEST(test_threadsafe_calls_race_loop_close) {
  long live = uva_test_alloc_live();
  for (int round = 0; round < HAMMER_ROUNDS; round++) {
    hammer_t h = {0};
    uv_mutex_init(&h.mu);
    uv_cond_init(&h.cond);
    ck_assert_int_eq(uva_loop_new(&h.loop), 0);
    h.warm = uva_event_new();
    uv_thread_t th[HAMMER_THREADS];
    for (int i = 0; i < HAMMER_THREADS; i++) uv_thread_create(&th[i], hammer_thread, &h);
    uva_future_t *m = uva_spawn(hammer_main, &h);
    ck_assert_int_eq(uva_loop_run_until(h.loop, m), 0);
    uva_release(m);
    uva_event_free(h.warm);
    ck_assert_int_eq(uva_loop_close(h.loop), 0); /* the threads are still calling */
    uv_mutex_lock(&h.mu);
    h.closed = 1;
    uv_cond_broadcast(&h.cond);
    uv_mutex_unlock(&h.mu);
    for (int i = 0; i < HAMMER_THREADS; i++) uv_thread_join(&th[i]);
    ck_assert_int_eq(atomic_load(&h.unexpected), 0);
    ck_assert_int_eq(atomic_load(&h.accepted), h.ran); /* none dropped, none twice */
    ck_assert_int_eq(atomic_load(&h.tasks_ok), h.tasks_ran);
    ck_assert_int_ge(h.ran, HAMMER_WARM);
    uv_cond_destroy(&h.cond);
    uv_mutex_destroy(&h.mu);
  }
  ck_assert_int_eq(uva_test_alloc_live(), live);
}
END_TEST

/* ------------------------------------------------- to_thread, executors */

/* Jobs report to the loop through a tally: a counter on the loop's thread
 * that jobs bump with uva_call_threadsafe and tasks wait on. Jobs wait for
 * the test on a semaphore. Nothing here waits on time. */
typedef struct {
  uva_loop_t *loop;
  int n;
  uva_event_t *ev;
} tally_t;
static void tally_init(tally_t *t) {
  t->loop = uva_loop_current();
  t->n = 0;
  t->ev = uva_event_new();
}
static void tally_bump(void *arg) {
  tally_t *t = arg;
  t->n++;
  uva_event_set(t->ev);
}
static void tally_post(tally_t *t) { /* from a job */
  if (uva_call_threadsafe(t->loop, tally_bump, t) != 0) abort();
}
static void tally_wait(tally_t *t, int n) {
  while (t->n < n) {
    uva_event_clear(t->ev);
    ck_assert_int_eq(uva_await(uva_event_wait(t->ev), NULL), 0);
  }
}
static void tally_free(tally_t *t) { uva_event_free(t->ev); }

/* libuv's pool size, as libuv 1.44 reads it. */
static int pool_size(void) {
  const char *v = getenv("UV_THREADPOOL_SIZE");
  int n = v ? atoi(v) : 4;
  return n < 1 ? 1 : n > 1024 ? 1024 : n;
}

static int square(void *arg, void **value) {
  int *out = malloc(sizeof *out);
  if (out == NULL) return UV_ENOMEM;
  *out = (int)(intptr_t)arg * (int)(intptr_t)arg;
  *value = out;
  return 0;
}
static int fails(void *arg, void **value) {
  (void)arg;
  *value = malloc(8); /* a value with an error: must be freed, not leaked */
  return UV_EIO;
}
static atomic_int late_frees;
static void counted_free(void *p) {
  atomic_fetch_add(&late_frees, 1);
  free(p);
}
static int sleepy_job(void *arg, void **value) {
  uv_sleep((unsigned)(intptr_t)arg);
  *value = malloc(16);
  return 1;
}

static int to_thread_results(uva_executor_t *ex) {
  void *v;
  ck_assert_int_eq(uva_await(uva_to_thread(ex, square, (void *)7, free), &v), 0);
  ck_assert_int_eq(*(int *)v, 49);
  free(v);
  ck_assert_int_eq(uva_await(uva_to_thread(ex, square, (void *)3, free), NULL), 0); /* freed */
  ck_assert_int_eq(uva_await(uva_to_thread(ex, fails, NULL, free), &v), UV_EIO);
  ck_assert_ptr_null(v);
  ck_assert_int_eq(uva_await(uva_to_thread(ex, NULL, NULL, NULL), NULL), UV_EINVAL);
  /* many at once */
  enum { N = 200 };
  uva_future_t *fs[N];
  for (int i = 0; i < N; i++) fs[i] = uva_to_thread(ex, square, (void *)(intptr_t)i, free);
  long sum = 0;
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(uva_await(fs[i], &v), 0);
    sum += *(int *)v;
    free(v);
  }
  ck_assert_int_eq(sum, (long)(N - 1) * N * (2 * N - 1) / 6);
  return 0;
}
static int to_thread_on_pool(void *arg) {
  (void)arg;
  return to_thread_results(NULL);
}
static int to_thread_on_executor(void *arg) {
  (void)arg;
  uva_executor_t *ex;
  ck_assert_int_eq(uva_executor_new(&ex, 3), 0);
  int rc = to_thread_results(ex);
  uva_executor_free(ex);
  return rc;
}
START_TEST(test_to_thread_returns_status_and_value) {
  ck_assert_int_eq(RUN_MAIN(to_thread_on_pool, NULL), 0);
  ck_assert_int_eq(RUN_MAIN(to_thread_on_executor, NULL), 0);
}
END_TEST

/* A job that says it started, waits for the test's go, then writes into
 * its argument and returns 5 with a value. */
static tally_t started;
static uv_sem_t go;
typedef struct {
  char data[64];
} jobarg_t;
static int gated_job(void *arg, void **value) {
  tally_post(&started);
  uv_sem_wait(&go);
  if (arg) memset(((jobarg_t *)arg)->data, 'x', sizeof ((jobarg_t *)arg)->data);
  *value = malloc(16);
  return 5;
}
static void gates_init(void) {
  tally_init(&started);
  uv_sem_init(&go, 0);
  atomic_store(&late_frees, 0);
}
static void gates_free(void) {
  tally_free(&started);
  uv_sem_destroy(&go);
}

/* The natural code: free the argument once the await has returned. A
 * cancel while the job runs must not make that a use-after-free (ASan):
 * the await returns when the job has returned, with its real outcome, and
 * the task's cancel comes at its next await (here: none, and the task
 * returns the job's outcome: the cancel came too late to undo it). */
static int natural_status;
static int natural_child(void *arg) {
  jobarg_t *a = malloc(sizeof *a);
  void *v = NULL;
  natural_status = uva_await(uva_to_thread(arg, gated_job, a, counted_free), &v);
  free(a);
  if (v) counted_free(v);
  return natural_status;
}
static int natural_cancel(uva_executor_t *ex) {
  gates_init();
  uva_future_t *child = uva_spawn(natural_child, ex);
  tally_wait(&started, 1); /* the job runs */
  ck_assert_int_eq(uva_cancel(child), 1);
  settle(); /* were the await over now, the child would free a here... */
  int done_early = uva_future_is_done(child);
  uv_sem_post(&go); /* ...and the job would write to it now */
  ck_assert_int_eq(uva_await(child, NULL), 5);
  ck_assert(!done_early);
  ck_assert_int_eq(natural_status, 5); /* the job's outcome, not lost */
  ck_assert_int_eq(atomic_load(&late_frees), 1); /* its value reached the child */
  gates_free();
  return 0;
}
static int natural_on_pool(void *arg) {
  (void)arg;
  return natural_cancel(NULL);
}
static int natural_on_executor(void *arg) {
  (void)arg;
  uva_executor_t *ex;
  ck_assert_int_eq(uva_executor_new(&ex, 1), 0);
  natural_cancel(ex);
  uva_executor_free(ex);
  return 0;
}
START_TEST(test_to_thread_cancel_while_running_waits_for_the_job) {
  ck_assert_int_eq(RUN_MAIN(natural_on_pool, NULL), 0);
  ck_assert_int_eq(RUN_MAIN(natural_on_executor, NULL), 0);
}
END_TEST

/* Cancel while queued: out of the queue, done at once, fn never runs, and
 * the argument is the caller's again. Every worker is held by a gated job
 * first, so the job is surely queued. */
static atomic_int never_ran;
static int must_not_run(void *arg, void **value) {
  (void)arg;
  (void)value;
  atomic_store(&never_ran, 0);
  return 0;
}
static int cancel_queued(uva_executor_t *ex) {
  gates_init();
  int workers = ex ? 1 : pool_size();
  uva_future_t *busy[1024];
  for (int i = 0; i < workers; i++) busy[i] = uva_to_thread(ex, gated_job, NULL, counted_free);
  tally_wait(&started, workers);
  atomic_store(&never_ran, 1);
  jobarg_t *a = malloc(sizeof *a);
  uva_future_t *q = uva_to_thread(ex, must_not_run, a, NULL);
  ck_assert_int_eq(uva_cancel(q), 1);
  ck_assert_int_eq(uva_future_status(q), UV_ECANCELED); /* at once */
  ck_assert_int_eq(uva_await(q, NULL), UV_ECANCELED);
  memset(a, 0, sizeof *a); /* ours again */
  free(a);
  for (int i = 0; i < workers; i++) uv_sem_post(&go);
  for (int i = 0; i < workers; i++) ck_assert_int_eq(uva_await(busy[i], NULL), 5);
  /* One thread, in order: had q stayed queued, it would run before this. */
  if (ex) ck_assert_int_eq(uva_await(uva_to_thread(ex, square, (void *)2, free), NULL), 0);
  ck_assert_int_eq(atomic_load(&never_ran), 1);
  ck_assert_int_eq(atomic_load(&late_frees), workers);
  gates_free();
  return 0;
}
static int cancel_queued_on_pool(void *arg) {
  (void)arg;
  return cancel_queued(NULL);
}
static int cancel_queued_on_executor(void *arg) {
  (void)arg;
  uva_executor_t *ex;
  ck_assert_int_eq(uva_executor_new(&ex, 1), 0);
  cancel_queued(ex);
  uva_executor_free(ex);
  return 0;
}
START_TEST(test_to_thread_cancel_while_queued_never_runs) {
  ck_assert_int_eq(RUN_MAIN(cancel_queued_on_pool, NULL), 0);
  ck_assert_int_eq(RUN_MAIN(cancel_queued_on_executor, NULL), 0);
}
END_TEST

/* A running job sees the cancel and stops early; its outcome is the
 * future's. The flag belongs to that job only. */
static int until_cancelled(void *arg, void **value) {
  (void)arg;
  (void)value;
  tally_post(&started);
  while (!uva_job_cancelled()) uv_sleep(1); /* a long job's checkpoint */
  return 3;
}
static int report_cancelled(void *arg, void **value) {
  (void)arg;
  (void)value;
  return uva_job_cancelled();
}
static int job_sees_cancel(uva_executor_t *ex) {
  gates_init();
  ck_assert_int_eq(uva_job_cancelled(), 0); /* not in a job */
  uva_future_t *f = uva_to_thread(ex, until_cancelled, NULL, NULL);
  tally_wait(&started, 1);
  ck_assert_int_eq(uva_cancel(f), 1);
  ck_assert(!uva_future_is_done(f)); /* it runs until it notices */
  ck_assert_int_eq(uva_await(f, NULL), 3);
  ck_assert_int_eq(uva_await(uva_to_thread(ex, report_cancelled, NULL, NULL), NULL), 0);
  gates_free();
  return 0;
}
static int job_sees_cancel_on_pool(void *arg) {
  (void)arg;
  return job_sees_cancel(NULL);
}
static int job_sees_cancel_on_executor(void *arg) {
  (void)arg;
  uva_executor_t *ex;
  ck_assert_int_eq(uva_executor_new(&ex, 1), 0); /* the same thread runs both jobs */
  job_sees_cancel(ex);
  uva_executor_free(ex);
  return 0;
}
START_TEST(test_job_cancelled_seen_by_running_job) {
  ck_assert_int_eq(RUN_MAIN(job_sees_cancel_on_pool, NULL), 0);
  ck_assert_int_eq(RUN_MAIN(job_sees_cancel_on_executor, NULL), 0);
}
END_TEST

/* uva_to_thread_owned: arg freed exactly once, on the loop's thread, on
 * every path. */
static int arg_frees;
static uva_event_t *arg_freed_ev;
static int post_go_on_free; /* uva_executor_free path: the free releases the blocker */
static void owned_free(void *p) {
  ck_assert_ptr_nonnull(uva_loop_current()); /* the loop's thread */
  arg_frees++;
  free(p);
  if (arg_freed_ev) uva_event_set(arg_freed_ev);
  if (post_go_on_free) uv_sem_post(&go);
}
static void wait_arg_frees(int n) {
  while (arg_frees < n) {
    uva_event_clear(arg_freed_ev);
    ck_assert_int_eq(uva_await(uva_event_wait(arg_freed_ev), NULL), 0);
  }
}
static int owned_job(void *arg, void **value) {
  *(int *)arg += 1; /* uses arg to the end */
  return square((void *)(intptr_t)*(int *)arg, value);
}
static int *new_arg(int v) { /* big enough for gated_job too */
  int *p = malloc(sizeof(jobarg_t));
  *p = v;
  return p;
}
static int owned_paths(uva_executor_t *ex) {
  gates_init();
  arg_frees = 0;
  arg_freed_ev = uva_event_new();
  void *v;
  /* finished: the value is the caller's, arg freed by the time it is done */
  ck_assert_int_eq(uva_await(uva_to_thread_owned(ex, owned_job, new_arg(6), owned_free, free), &v), 0);
  ck_assert_int_eq(*(int *)v, 49);
  free(v);
  ck_assert_int_eq(arg_frees, 1);
  /* submission refused: freed now */
  ck_assert_int_eq(uva_await(uva_to_thread_owned(ex, NULL, new_arg(0), owned_free, free), NULL), UV_EINVAL);
  ck_assert_int_eq(arg_frees, 2);
  uva_test_alloc_fail_after(0);
  ck_assert_ptr_null(uva_to_thread_owned(ex, owned_job, new_arg(0), owned_free, free));
  uva_test_alloc_fail_after(-1);
  ck_assert_int_eq(arg_frees, 3);
  /* cancelled while running: done at once; arg and late value freed when
   * the job returns */
  uva_future_t *f = uva_to_thread_owned(ex, gated_job, new_arg(0), owned_free, counted_free);
  tally_wait(&started, 1);
  ck_assert_int_eq(uva_cancel(f), 1);
  ck_assert_int_eq(uva_future_status(f), UV_ECANCELED);
  ck_assert_int_eq(uva_await(f, NULL), UV_ECANCELED);
  ck_assert_int_eq(arg_frees, 3); /* the job still has it */
  uv_sem_post(&go);
  wait_arg_frees(4);
  ck_assert_int_eq(atomic_load(&late_frees), 1);
  /* cancelled while queued, behind a job holding every worker */
  int workers = ex ? 1 : pool_size();
  uva_future_t *busy[1024];
  for (int i = 0; i < workers; i++) busy[i] = uva_to_thread(ex, gated_job, NULL, counted_free);
  tally_wait(&started, 1 + workers);
  atomic_store(&never_ran, 1);
  uva_future_t *q = uva_to_thread_owned(ex, must_not_run, new_arg(0), owned_free, NULL);
  ck_assert_int_eq(uva_cancel(q), 1);
  ck_assert_int_eq(uva_await(q, NULL), UV_ECANCELED);
  for (int i = 0; i < workers; i++) uv_sem_post(&go);
  for (int i = 0; i < workers; i++) ck_assert_int_eq(uva_await(busy[i], NULL), 5);
  wait_arg_frees(5); /* the pool drops it with a callback: a little later */
  ck_assert_int_eq(atomic_load(&never_ran), 1);
  ck_assert_int_eq(arg_frees, 5);
  uva_event_free(arg_freed_ev);
  arg_freed_ev = NULL;
  gates_free();
  return 0;
}
static int owned_on_pool(void *arg) {
  (void)arg;
  return owned_paths(NULL);
}
static int owned_on_executor(void *arg) {
  (void)arg;
  uva_executor_t *ex;
  ck_assert_int_eq(uva_executor_new(&ex, 1), 0);
  owned_paths(ex);
  /* executor freed with an owned job queued behind a running one: the
   * queued one is cancelled and its arg freed, which lets the running one
   * finish, so uva_executor_free returns */
  gates_init();
  arg_frees = 0;
  post_go_on_free = 1;
  uva_future_t *running = uva_to_thread(ex, gated_job, NULL, counted_free);
  tally_wait(&started, 1);
  atomic_store(&never_ran, 1);
  uva_future_t *queued = uva_to_thread_owned(ex, must_not_run, new_arg(0), owned_free, NULL);
  uva_future_t *queued2 = uva_to_thread(ex, must_not_run, NULL, NULL);
  uva_executor_free(ex);
  post_go_on_free = 0;
  ck_assert_int_eq(arg_frees, 1);
  ck_assert_int_eq(atomic_load(&never_ran), 1);
  ck_assert_int_eq(uva_await(queued, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(queued2, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(running, NULL), 5); /* waited for, ran to the end */
  gates_free();
  return 0;
}
START_TEST(test_to_thread_owned_frees_arg_once_on_every_path) {
  ck_assert_int_eq(RUN_MAIN(owned_on_pool, NULL), 0);
  ck_assert_int_eq(RUN_MAIN(owned_on_executor, NULL), 0);
}
END_TEST

/* Abandoning: wait_for around an owned job that hangs times out (the
 * cancel completes it at once); the loop waits for the job before it
 * closes, and then frees arg. */
static int owned_wait_for(void *arg) {
  (void)arg;
  gates_init();
  arg_frees = 0;
  uva_future_t *f = uva_to_thread_owned(NULL, gated_job, new_arg(0), owned_free, counted_free);
  tally_wait(&started, 1); /* it runs, and will not return before go */
  tally_free(&started);
  ck_assert_int_eq(uva_await(uva_wait_for(f, 10), NULL), UV_ETIMEDOUT);
  ck_assert_int_eq(arg_frees, 0);
  uv_sem_post(&go); /* the job may end now: after main returned, the loop waits for it */
  return 0;
}
START_TEST(test_to_thread_owned_can_be_abandoned) {
  ck_assert_int_eq(RUN_MAIN(owned_wait_for, NULL), 0);
  ck_assert_int_eq(arg_frees, 1);
  ck_assert_int_eq(atomic_load(&late_frees), 1);
  uv_sem_destroy(&go);
}
END_TEST

static int no_loop_frees;
static void no_loop_free(void *p) {
  no_loop_frees++;
  free(p);
}
START_TEST(test_to_thread_owned_without_loop_frees_arg) {
  no_loop_frees = 0;
  uva_future_t *f = uva_to_thread_owned(NULL, owned_job, new_arg(1), no_loop_free, NULL);
  ck_assert_int_eq(uva_future_status(f), UVA_ENOLOOP);
  ck_assert_int_eq(no_loop_frees, 1); /* on this thread: there is no loop */
  uva_release(f);
}
END_TEST

/* The API called on threads with no loop: every future constructor gives
 * a future failed with UVA_ENOLOOP (it read as UV_ENOMEM: a NULL), which
 * can be awaited, read and released safely, from several threads at once
 * (one static future: TSan checks nobody writes it). */
static void no_loop_calls(void *arg) {
  (void)arg;
  for (int i = 0; i < 1000; i++) {
    uva_future_t *fs[] = {
        uva_sleep(10), uva_spawn(NULL, NULL), uva_future_new(),
        uva_future_done_with(3), uva_to_thread(NULL, square, NULL, NULL),
        uva_fs_open("/", 0, 0), uva_getaddrinfo("localhost", NULL, NULL),
        uva_gather(NULL, 0, 0), uva_wait_for(uva_sleep(1), 5), uva_shield(uva_sleep(1)),
        uva_lock_acquire(NULL), uva_signal_wait(SIGUSR1), uva_tcp_connect("127.0.0.1", 1),
        uva_stream_read(NULL, NULL, 1), uva_http_get(NULL, "http://127.0.0.1:1/")};
    for (size_t k = 0; k < sizeof fs / sizeof fs[0]; k++) {
      ck_assert_ptr_nonnull(fs[k]);
      ck_assert_int_eq(uva_future_status(fs[k]), UVA_ENOLOOP);
      uva_ref(fs[k]);
      uva_release(fs[k]);
      ck_assert_int_eq(uva_cancel(fs[k]), 0);
      ck_assert_int_eq(uva_future_on_done(fs[k], NULL, NULL), UV_EINVAL);
      ck_assert_ptr_null(uva_future_value(fs[k]));
      ck_assert_ptr_null(uva_future_take(fs[k]));
      ck_assert_int_eq(uva_future_off_done(fs[k], NULL, NULL), 0);
    }
    ck_assert_int_eq(uva_await(fs[0], NULL), UVA_ENOLOOP);
    for (size_t k = 1; k < sizeof fs / sizeof fs[0]; k++) uva_release(fs[k]);
  }
  ck_assert_str_eq(uva_strerror(UVA_ENOLOOP), "no uvasync loop on this thread");
}
START_TEST(test_api_on_a_thread_without_loop_fails_enoloop) {
  uv_thread_t th[2];
  for (int i = 0; i < 2; i++) ck_assert_int_eq(uv_thread_create(&th[i], no_loop_calls, NULL), 0);
  for (int i = 0; i < 2; i++) uv_thread_join(&th[i]);
}
END_TEST

/* Ctrl-C while main awaits a running job: main's await returns when the
 * job has returned (with its outcome), main frees the job's argument and
 * sees the cancel request (uva_cancelling); returning right away, it keeps
 * its own status, as any task whose cancel came after its work. */
static int ctrlc_status, ctrlc_cancelling;
static int ctrlc_job(void *arg, void **value) {
  (void)value;
  kill(getpid(), SIGINT); /* as if from the terminal: uva_run cancels main */
  while (!uva_job_cancelled()) uv_sleep(1);
  memset(((jobarg_t *)arg)->data, 'x', sizeof ((jobarg_t *)arg)->data);
  return 9;
}
static int ctrlc_main(void *arg) {
  (void)arg;
  jobarg_t *a = malloc(sizeof *a);
  ctrlc_status = uva_await(uva_to_thread(NULL, ctrlc_job, a, NULL), NULL);
  free(a);
  ctrlc_cancelling = uva_cancelling();
  return 0;
}
START_TEST(test_ctrl_c_while_awaiting_a_running_job) {
  ck_assert_int_eq(RUN_MAIN(ctrlc_main, NULL), 0);
  ck_assert_int_eq(ctrlc_status, 9);
  ck_assert_int_eq(ctrlc_cancelling, 1);
}
END_TEST

/* Blocking jobs on an executor leave libuv's pool free: a pool job
 * submitted while the executor's four threads are all held finishes. */
static int executor_does_not_starve_pool(void *arg) {
  (void)arg;
  gates_init();
  uva_executor_t *ex;
  ck_assert_int_eq(uva_executor_new(&ex, 4), 0);
  uva_future_t *fs[4];
  for (int i = 0; i < 4; i++) fs[i] = uva_to_thread(ex, gated_job, NULL, counted_free);
  tally_wait(&started, 4); /* all four are blocking now */
  ck_assert_int_eq(uva_await(uva_to_thread(NULL, square, (void *)3, free), NULL), 0);
  for (int i = 0; i < 4; i++) uv_sem_post(&go);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(uva_await(fs[i], NULL), 5);
  uva_executor_free(ex);
  gates_free();
  return 0;
}
START_TEST(test_executor_jobs_do_not_starve_libuv_pool) {
  ck_assert_int_eq(RUN_MAIN(executor_does_not_starve_pool, NULL), 0);
}
END_TEST

/* A job still running when main returns: the loop waits for it to come
 * back before it closes, and frees its value. */
static int abandons_job(void *arg) {
  (void)arg;
  atomic_store(&late_frees, 0);
  uva_release(uva_to_thread(NULL, sleepy_job, (void *)50, counted_free));
  return 0;
}
START_TEST(test_loop_close_waits_for_jobs_in_flight) {
  ck_assert_int_eq(RUN_MAIN(abandons_job, NULL), 0);
  ck_assert_int_eq(atomic_load(&late_frees), 1);
}
END_TEST

START_TEST(test_executor_bad_arguments) {
  uva_executor_t *ex = (void *)1;
  ck_assert_int_eq(uva_executor_new(&ex, 2), UVA_ENOLOOP);
  ck_assert_ptr_null(ex);
  ck_assert_int_eq(uva_executor_new(NULL, 2), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_to_thread(NULL, square, NULL, NULL), NULL), UVA_ENOLOOP);
  uva_loop_t *loop;
  long live = uva_test_alloc_live();
  ck_assert_int_eq(uva_loop_new(&loop), 0);
  ck_assert_int_eq(uva_executor_new(&ex, 0), UV_EINVAL);
  ck_assert_int_eq(uva_executor_new(&ex, 5000), UV_EINVAL);
  uva_executor_free(NULL);
  ck_assert_int_eq(uva_loop_close(loop), 0);
  ck_assert_int_eq(uva_test_alloc_live(), live);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("thread");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_call_threadsafe_runs_on_loop_thread);
  tcase_add_test(tc, test_submit_threadsafe_and_wait_for_result);
  tcase_add_test(tc, test_idle_loop_wakes_for_other_threads);
  tcase_add_test(tc, test_submit_to_closed_loop_fails_cleanly);
  tcase_add_test(tc, test_threadsafe_calls_race_loop_close);
  tcase_add_test(tc, test_to_thread_returns_status_and_value);
  tcase_add_test(tc, test_to_thread_cancel_while_running_waits_for_the_job);
  tcase_add_test(tc, test_to_thread_cancel_while_queued_never_runs);
  tcase_add_test(tc, test_job_cancelled_seen_by_running_job);
  tcase_add_test(tc, test_to_thread_owned_frees_arg_once_on_every_path);
  tcase_add_test(tc, test_to_thread_owned_can_be_abandoned);
  tcase_add_test(tc, test_to_thread_owned_without_loop_frees_arg);
  tcase_add_test(tc, test_api_on_a_thread_without_loop_fails_enoloop);
  tcase_add_test(tc, test_ctrl_c_while_awaiting_a_running_job);
  tcase_add_test(tc, test_executor_jobs_do_not_starve_libuv_pool);
  tcase_add_test(tc, test_loop_close_waits_for_jobs_in_flight);
  tcase_add_test(tc, test_executor_bad_arguments);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
