/* Entry points from other threads. */
#include "helpers.h"

#include <stdatomic.h>

static atomic_int calls_seen;
static void on_loop(void *arg) {
  ck_assert_ptr_nonnull(uva_loop_current()); /* runs on the loop's thread */
  atomic_fetch_add(&calls_seen, (int)(intptr_t)arg);
}

static void poster(void *arg) {
  uva_loop_t *loop = arg;
  for (int i = 0; i < 100; i++) ck_assert_int_eq(uva_call_threadsafe(loop, on_loop, (void *)1), 0);
}

static int call_from_threads(void *arg) {
  (void)arg;
  atomic_store(&calls_seen, 0);
  uv_thread_t th[4];
  for (int i = 0; i < 4; i++) uv_thread_create(&th[i], poster, uva_loop_current());
  while (atomic_load(&calls_seen) < 400) uva_await(uva_sleep(1), NULL);
  for (int i = 0; i < 4; i++) uv_thread_join(&th[i]);
  ck_assert_int_eq(atomic_load(&calls_seen), 400);
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
static int slow(void *arg) {
  (void)arg;
  return uva_await(uva_sleep(100000), NULL);
}

typedef struct {
  uva_loop_t *loop;
  int result, timed_out, cancelled;
} sub_t;

static void submitter(void *arg) {
  sub_t *s = arg;
  uva_tsfuture_t *t = uva_submit_threadsafe(s->loop, doubler, (void *)21);
  s->result = uva_tsfuture_wait(t, -1, NULL);
  uva_tsfuture_free(t);
  t = uva_submit_threadsafe(s->loop, slow, NULL);
  s->timed_out = uva_tsfuture_wait(t, 20, NULL);
  uva_tsfuture_cancel(t);
  s->cancelled = uva_tsfuture_wait(t, -1, NULL);
  uva_tsfuture_free(t);
}

static int submit_from_thread(void *arg) {
  (void)arg;
  sub_t s = {uva_loop_current(), 0, 0, 0};
  uv_thread_t th;
  uv_thread_create(&th, submitter, &s);
  /* Keep the loop turning while the other thread works. */
  while (s.cancelled == 0) uva_await(uva_sleep(2), NULL);
  uv_thread_join(&th);
  ck_assert_int_eq(s.result, 42);
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

static uva_event_t *stop_ev;
static atomic_int stopper_done;
static int set_stop(void *arg) {
  (void)arg;
  uva_event_set(stop_ev);
  return 0;
}
static void stopper(void *arg) {
  uv_sleep(30); /* let the loop go idle first */
  uva_tsfuture_t *t = uva_submit_threadsafe(arg, set_stop, NULL);
  uva_tsfuture_wait(t, -1, NULL);
  uva_tsfuture_free(t);
  atomic_store(&stopper_done, 1);
}
static int idle_loop_waits_for_threads(void *arg) {
  (void)arg;
  stop_ev = uva_event_new();
  uv_thread_t b;
  uv_thread_create(&b, stopper, uva_loop_current());
  /* Nothing local keeps the loop alive now: it must still wake up for the
   * other thread's submission instead of returning or spinning. */
  int rc = uva_await(uva_event_wait(stop_ev), NULL);
  /* The thread still waits for its result, which this loop delivers. */
  while (!atomic_load(&stopper_done)) uva_await(uva_sleep(1), NULL);
  uv_thread_join(&b);
  uva_event_free(stop_ev);
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

/* Cancel while running: the await ends at once; the late value is freed
 * when the job returns. Cancel while queued: the job never runs. */
static int cancel_jobs(uva_executor_t *ex) {
  atomic_store(&late_frees, 0);
  uva_future_t *running = uva_to_thread(ex, sleepy_job, (void *)200, counted_free);
  uva_await(uva_sleep(50), NULL); /* it is running now */
  uint64_t t0 = uva_now();
  ck_assert_int_eq(uva_cancel(running), 1);
  ck_assert_int_eq(uva_await(running, NULL), UV_ECANCELED);
  ck_assert(uva_now() - t0 < 150); /* did not wait for the job */
  while (atomic_load(&late_frees) == 0) uva_await(uva_sleep(5), NULL);
  return 0;
}
static int cancel_on_pool(void *arg) {
  (void)arg;
  return cancel_jobs(NULL);
}
static int cancel_on_executor(void *arg) {
  (void)arg;
  uva_executor_t *ex;
  ck_assert_int_eq(uva_executor_new(&ex, 1), 0);
  cancel_jobs(ex);
  /* one thread: the second job waits in line and is cancelled there */
  atomic_store(&late_frees, 0);
  uva_future_t *busy = uva_to_thread(ex, sleepy_job, (void *)100, counted_free);
  uva_future_t *queued = uva_to_thread(ex, sleepy_job, (void *)1, counted_free);
  uva_cancel(queued);
  ck_assert_int_eq(uva_await(queued, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(busy, NULL), 1);
  uva_await(uva_sleep(20), NULL);
  ck_assert_int_eq(atomic_load(&late_frees), 1); /* busy's value; queued never ran */
  /* freeing the executor cancels what has not started */
  uva_future_t *a = uva_to_thread(ex, sleepy_job, (void *)50, counted_free);
  uva_future_t *b = uva_to_thread(ex, sleepy_job, (void *)50, counted_free);
  uva_executor_free(ex);
  ck_assert_int_eq(uva_await(b, NULL), UV_ECANCELED); /* behind a: never started */
  int ra = uva_await(a, NULL); /* ran to the end, or had not started yet */
  ck_assert(ra == 1 || ra == UV_ECANCELED);
  return 0;
}
START_TEST(test_to_thread_cancel_running_and_queued_jobs) {
  ck_assert_int_eq(RUN_MAIN(cancel_on_pool, NULL), 0);
  ck_assert_int_eq(RUN_MAIN(cancel_on_executor, NULL), 0);
}
END_TEST

/* Blocking jobs on an executor leave libuv's pool free: a pool job
 * submitted after them finishes first. The same jobs on the pool itself
 * (4 threads) would hold it up. Ordering, not timing, is asserted. */
static int order_log2[8];
static atomic_int order_n2;
static int mark_job(void *arg, void **value) {
  (void)value;
  int id = (int)(intptr_t)arg;
  if (id < 4) uv_sleep(150);
  order_log2[atomic_fetch_add(&order_n2, 1)] = id;
  return 0;
}
static int executor_does_not_starve_pool(void *arg) {
  (void)arg;
  uva_executor_t *ex;
  ck_assert_int_eq(uva_executor_new(&ex, 4), 0);
  atomic_store(&order_n2, 0);
  uva_future_t *fs[5];
  for (int i = 0; i < 4; i++) fs[i] = uva_to_thread(ex, mark_job, (void *)(intptr_t)i, NULL);
  uva_await(uva_sleep(20), NULL); /* all four are blocking now */
  fs[4] = uva_to_thread(NULL, mark_job, (void *)4, NULL);
  ck_assert_int_eq(uva_await(fs[4], NULL), 0);
  ck_assert_int_eq(atomic_load(&order_n2), 1);
  ck_assert_int_eq(order_log2[0], 4); /* the pool job did not wait */
  for (int i = 0; i < 4; i++) ck_assert_int_eq(uva_await(fs[i], NULL), 0);
  uva_executor_free(ex);
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
  ck_assert_ptr_null(uva_to_thread(NULL, square, NULL, NULL)); /* no loop */
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
  tcase_add_test(tc, test_to_thread_cancel_running_and_queued_jobs);
  tcase_add_test(tc, test_executor_jobs_do_not_starve_libuv_pool);
  tcase_add_test(tc, test_loop_close_waits_for_jobs_in_flight);
  tcase_add_test(tc, test_executor_bad_arguments);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
