/* Combinators: gather, wait, wait_for, shield, as_completed, timeout scopes,
 * task groups. Every test runs under RUN_MAIN, which fails it if a library
 * allocation is still live after uva_run; result values are counted too. */
#include "helpers.h"

#include <stdint.h>

/* ------------------------------------------------------------ helpers */

static int values_live; /* result values allocated and not yet freed */

static void *new_value(int v) {
  int *p = malloc(sizeof *p);
  *p = v;
  values_live++;
  return p;
}
static void value_free(void *p) {
  values_live--;
  free(p);
}
static int value_of(void *p) { return p ? *(int *)p : -1; }

/* A queue whose items are counted values. */
static uva_queue_t *counted_queue(void) {
  uva_queue_opts_t o = {UVA_QUEUE_FIFO, 0, NULL, value_free};
  uva_queue_t *q = uva_queue_new(&o);
  ck_assert_ptr_nonnull(q);
  return q;
}

/* A task that sleeps ms, then returns ret (with a value if value != 0). */
typedef struct job {
  int ms;            /* or HOLD */
  int ret;
  int value;
  int cleanup_ms;    /* on cancel: await this long (or HOLD) before ending */
  int ignore_cancel; /* on cancel: still return ret (and value) */
  int go;            /* set by the test: ends a HOLD */
  int started;       /* set as the job starts its wait */
  int saw_cancel;
  int cleaned;
  int ended;
} job_t;

/* ms or cleanup_ms HOLD: that wait ends only when the test sets go (the
 * first one also on a cancel, the cleanup on a second cancel, as a sleep
 * would). What a test must outlast, or see still running, is held by an
 * event it controls, not by a duration a slow machine could use up. */
#define HOLD (-1)

static int job_pause(job_t *j, int ms) {
  if (ms != HOLD) return uva_await(uva_sleep((uint64_t)ms), NULL);
  while (!j->go) {
    int rc = uva_await(uva_sleep(1), NULL);
    if (rc < 0) return rc;
  }
  return 0;
}

static int job_run(void *arg) {
  job_t *j = arg;
  j->started = 1;
  int rc = job_pause(j, j->ms);
  if (rc == UV_ECANCELED) {
    j->saw_cancel = 1;
    if (j->cleanup_ms) job_pause(j, j->cleanup_ms);
    j->cleaned = 1;
    if (!j->ignore_cancel) {
      j->ended = 1;
      return rc;
    }
  }
  if (j->value) uva_task_return(new_value(j->value), value_free);
  j->ended = 1;
  return j->ret;
}

static uva_future_t *job_spawn(job_t *j) { return uva_spawn(job_run, j); }

/* Sleep (intptr_t)arg ms and return it: needs no state outside the task. */
static int sleep_ms_task(void *arg) {
  int ms = (int)(intptr_t)arg;
  int rc = uva_await(uva_sleep((uint64_t)ms), NULL);
  return rc < 0 ? rc : ms;
}
#define MS(x) ((void *)(intptr_t)(x))

static int run_test_arg(uva_task_fn fn, void *arg) {
  values_live = 0;
  int rc = RUN_MAIN(fn, arg);
  ck_assert_int_eq(values_live, 0);
  return rc;
}
static int run_test(uva_task_fn fn) { return run_test_arg(fn, NULL); }

/* ------------------------------------------------------------- gather */

static int gather_order_main(void *arg) {
  (void)arg;
  job_t a = {.ms = 30, .ret = 1, .value = 10};
  job_t b = {.ms = 10, .ret = 2, .value = 20};
  job_t c = {.ms = 20, .ret = 3};
  uva_future_t *fs[3] = {job_spawn(&a), job_spawn(&b), job_spawn(&c)};
  void *v;
  int rc = uva_await(uva_gather(fs, 3, 0), &v);
  ck_assert_int_eq(rc, 0);
  uva_results_t *r = v;
  ck_assert_uint_eq(r->n, 3);
  ck_assert_int_eq(r->item[0].status, 1);
  ck_assert_int_eq(r->item[1].status, 2);
  ck_assert_int_eq(r->item[2].status, 3);
  ck_assert_int_eq(value_of(r->item[0].value), 10);
  ck_assert_int_eq(value_of(r->item[1].value), 20);
  ck_assert_ptr_null(r->item[2].value);
  ck_assert_int_eq(values_live, 2); /* moved into the list, not copied */
  uva_results_free(r);
  ck_assert_int_eq(values_live, 0);
  return 0;
}

START_TEST(test_gather_results_in_given_order) {
  ck_assert_int_eq(run_test(gather_order_main), 0);
}
END_TEST

static int gather_steal_main(void *arg) {
  (void)arg;
  job_t a = {.ms = 1, .ret = 0, .value = 7};
  uva_future_t *fs[1] = {job_spawn(&a)};
  void *v;
  ck_assert_int_eq(uva_await(uva_gather(fs, 1, 0), &v), 0);
  uva_results_t *r = v;
  void *stolen = r->item[0].value;
  r->item[0].free_fn = NULL; /* documented way to keep a value */
  uva_results_free(r);
  ck_assert_int_eq(values_live, 1);
  value_free(stolen);
  return 0;
}

START_TEST(test_gather_value_can_be_stolen_from_results) {
  ck_assert_int_eq(run_test(gather_steal_main), 0);
}
END_TEST

static int gather_empty_main(void *arg) {
  (void)arg;
  uva_future_t *g = uva_gather(NULL, 0, 0);
  ck_assert_ptr_nonnull(g);
  ck_assert(uva_future_is_done(g));
  void *v;
  ck_assert_int_eq(uva_await(g, &v), 0);
  ck_assert_ptr_nonnull(v);
  ck_assert_uint_eq(((uva_results_t *)v)->n, 0);
  uva_results_free(v);
  return 0;
}

START_TEST(test_gather_empty_completes_at_once) {
  ck_assert_int_eq(run_test(gather_empty_main), 0);
}
END_TEST

static int gather_first_error_main(void *arg) {
  (void)arg;
  job_t a = {.ms = 10, .ret = UV_EIO};
  job_t b = {.ms = HOLD, .ret = 5, .value = 5};
  uva_future_t *fs[2] = {job_spawn(&a), job_spawn(&b)};
  void *v = (void *)1;
  int rc = uva_await(uva_gather(fs, 2, 0), &v);
  ck_assert_int_eq(rc, UV_EIO); /* at once: b cannot end before we let it */
  ck_assert_ptr_null(v);
  ck_assert(!b.ended);
  /* b keeps running (not cancelled) and its value is freed when it ends */
  b.go = 1;
  WAIT_UNTIL(b.ended);
  settle();
  ck_assert(!b.saw_cancel);
  ck_assert_int_eq(values_live, 0);
  return 0;
}

START_TEST(test_gather_first_error_fails_at_once) {
  ck_assert_int_eq(run_test(gather_first_error_main), 0);
}
END_TEST

static int gather_return_exceptions_main(void *arg) {
  (void)arg;
  job_t a = {.ms = 10, .ret = UV_EIO};
  job_t b = {.ms = 20, .ret = 7, .value = 3};
  uva_future_t *fs[4] = {job_spawn(&a), job_spawn(&b), NULL, uva_future_done_with(UV_EPIPE)};
  void *v;
  int rc = uva_await(uva_gather(fs, 4, UVA_RETURN_EXCEPTIONS), &v);
  ck_assert_int_eq(rc, 0);
  uva_results_t *r = v;
  ck_assert_uint_eq(r->n, 4);
  ck_assert_int_eq(r->item[0].status, UV_EIO);
  ck_assert_int_eq(r->item[1].status, 7);
  ck_assert_int_eq(value_of(r->item[1].value), 3);
  ck_assert_int_eq(r->item[2].status, UV_ENOMEM); /* NULL child */
  ck_assert_int_eq(r->item[3].status, UV_EPIPE);
  uva_results_free(r);
  return 0;
}

START_TEST(test_gather_return_exceptions_collects_errors) {
  ck_assert_int_eq(run_test(gather_return_exceptions_main), 0);
}
END_TEST

static int gather_null_child_main(void *arg) {
  (void)arg;
  job_t a = {.ms = 10, .ret = 1, .value = 1};
  uva_future_t *fs[2] = {job_spawn(&a), NULL};
  ck_assert_int_eq(uva_await(uva_gather(fs, 2, 0), NULL), UV_ENOMEM);
  WAIT_UNTIL(a.ended); /* a runs on to its end */
  return 0;
}

START_TEST(test_gather_null_child_fails_with_enomem) {
  ck_assert_int_eq(run_test(gather_null_child_main), 0);
}
END_TEST

static int gather_cancel_main(void *arg) {
  (void)arg;
  job_t j[3] = {{.ms = HOLD, .cleanup_ms = 10},
                {.ms = HOLD, .cleanup_ms = 20},
                {.ms = HOLD, .cleanup_ms = 5}};
  uva_future_t *fs[3] = {job_spawn(&j[0]), job_spawn(&j[1]), job_spawn(&j[2])};
  uva_future_t *g = uva_gather(fs, 3, UVA_RETURN_EXCEPTIONS);
  uva_ref(g);
  WAIT_UNTIL(j[0].started && j[1].started && j[2].started);
  ck_assert_int_eq(uva_cancel(g), 1);
  ck_assert(!uva_future_is_done(g)); /* waits for the children's cleanup */
  ck_assert_int_eq(uva_await(g, NULL), UV_ECANCELED); /* not for their HOLD */
  ck_assert(uva_future_is_cancelled(g));
  uva_release(g);
  for (int i = 0; i < 3; i++) {
    ck_assert(j[i].saw_cancel);
    ck_assert(j[i].cleaned);
    ck_assert(j[i].ended);
  }
  return 0;
}

START_TEST(test_gather_cancel_cancels_children) {
  ck_assert_int_eq(run_test(gather_cancel_main), 0);
}
END_TEST

static job_t awaiter_jobs[2];

static int gather_awaiter(void *arg) {
  (void)arg;
  uva_future_t *fs[2] = {job_spawn(&awaiter_jobs[0]), job_spawn(&awaiter_jobs[1])};
  return uva_await(uva_gather(fs, 2, 0), NULL);
}

static int gather_task_cancel_main(void *arg) {
  (void)arg;
  awaiter_jobs[0] = (job_t){.ms = HOLD};
  awaiter_jobs[1] = (job_t){.ms = HOLD, .cleanup_ms = 10};
  uva_future_t *t = uva_spawn(gather_awaiter, NULL);
  WAIT_UNTIL(awaiter_jobs[0].started && awaiter_jobs[1].started);
  uva_cancel(t);
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  ck_assert(awaiter_jobs[0].saw_cancel && awaiter_jobs[0].ended);
  ck_assert(awaiter_jobs[1].saw_cancel && awaiter_jobs[1].ended);
  return 0;
}

START_TEST(test_gather_awaiting_task_cancel_cancels_children) {
  ck_assert_int_eq(run_test(gather_task_cancel_main), 0);
}
END_TEST

static int yield_and_return(void *arg) {
  int rc = uva_yield();
  return rc < 0 ? rc : (int)(intptr_t)arg;
}

#define NTASKS 10000
static int gather_many_tasks_main(void *arg) {
  (void)arg;
  uva_future_t **fs = malloc(NTASKS * sizeof *fs);
  for (int i = 0; i < NTASKS; i++) fs[i] = uva_spawn(yield_and_return, MS(i));
  void *v;
  int rc = uva_await(uva_gather(fs, NTASKS, 0), &v);
  free(fs);
  ck_assert_int_eq(rc, 0);
  uva_results_t *r = v;
  ck_assert_uint_eq(r->n, NTASKS);
  int bad = 0; /* one assertion, not 10,000: each costs Check a write() */
  for (int i = 0; i < NTASKS; i++) bad += r->item[i].status != i;
  ck_assert_int_eq(bad, 0);
  uva_results_free(r);
  return 0;
}

START_TEST(test_gather_10000_tasks) {
  ck_assert_int_eq(run_test(gather_many_tasks_main), 0);
}
END_TEST

/* 200,000 children: anything quadratic would not finish in the timeout. */
#define NFUTS 200000
static int gather_many_futures_main(void *arg) {
  (void)arg;
  uva_future_t **fs = malloc(NFUTS * sizeof *fs);
  uva_future_t **mine = malloc(NFUTS * sizeof *mine);
  for (int i = 0; i < NFUTS; i++) fs[i] = mine[i] = uva_ref(uva_future_new());
  uva_future_t *g = uva_gather(fs, NFUTS, 0);
  int bad = 0;
  for (int i = NFUTS - 1; i >= 0; i--) {
    bad += uva_future_resolve(mine[i], i, NULL, NULL) != 0;
    uva_release(mine[i]);
  }
  void *v;
  ck_assert_int_eq(uva_await(g, &v), 0);
  uva_results_t *r = v;
  for (int i = 0; i < NFUTS; i++) bad += r->item[i].status != i;
  ck_assert_int_eq(bad, 0);
  uva_results_free(r);

  /* Again, but drop the gather half way: half done (callbacks queued),
   * half pending that nobody can complete any more. */
  for (int i = 0; i < NFUTS; i++) fs[i] = mine[i] = uva_ref(uva_future_new());
  g = uva_gather(fs, NFUTS, UVA_RETURN_EXCEPTIONS);
  for (int i = 0; i < NFUTS; i++) {
    if (i % 2) uva_future_resolve(mine[i], 0, new_value(i), value_free);
    uva_release(mine[i]);
  }
  uva_release(g);
  ck_assert_int_eq(uva_yield(), 0);
  ck_assert_int_eq(values_live, 0);
  free(fs);
  free(mine);
  return 0;
}

START_TEST(test_gather_200000_futures_linear) {
  ck_assert_int_eq(run_test(gather_many_futures_main), 0);
}
END_TEST

static int gather_release_pending_main(void *arg) {
  (void)arg;
  job_t a = {.ms = HOLD, .ret = 1, .value = 1};
  job_t b = {.ms = 1, .ret = 2, .value = 2};
  uva_future_t *fs[3] = {job_spawn(&a), job_spawn(&b), uva_future_new()};
  uva_future_t *g = uva_gather(fs, 3, 0);
  WAIT_UNTIL(b.ended);
  settle(); /* the gather has b's result */
  uva_release(g); /* b done, a running, the plain future orphaned */
  ck_assert(!a.ended);
  a.go = 1;
  WAIT_UNTIL(a.ended);
  settle();
  ck_assert_int_eq(values_live, 0);
  return 0;
}

START_TEST(test_gather_release_while_pending_frees_everything) {
  ck_assert_int_eq(run_test(gather_release_pending_main), 0);
}
END_TEST

static int gather_bad_flags_main(void *arg) {
  (void)arg;
  uva_future_t *fs[2] = {uva_future_new(), uva_future_done_with(1)};
  ck_assert_int_eq(uva_await(uva_gather(fs, 2, 0x100), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_gather(NULL, 3, 0), NULL), UV_EINVAL);
  return 0;
}

START_TEST(test_gather_bad_arguments_consume_and_fail_einval) {
  ck_assert_int_eq(run_test(gather_bad_flags_main), 0);
}
END_TEST

static int gather_cancel_done_main(void *arg) {
  (void)arg;
  /* Children finished, callbacks not run yet: the cancel is refused and
   * the results stand (asyncio: gather().cancel() returns False). */
  uva_future_t *fs[2] = {uva_future_done_with(1), uva_future_done_with(2)};
  uva_future_t *g = uva_ref(uva_gather(fs, 2, 0));
  ck_assert_int_eq(uva_cancel(g), 0);
  void *v;
  ck_assert_int_eq(uva_await(g, &v), 0);
  uva_results_free(v);
  ck_assert_int_eq(uva_cancel(g), 0); /* done */
  uva_release(g);
  return 0;
}

START_TEST(test_gather_cancel_after_children_done_is_refused) {
  ck_assert_int_eq(run_test(gather_cancel_done_main), 0);
}
END_TEST

static int gather_two_gets_task(void *arg) {
  uva_queue_t **q = arg;
  uva_future_t *fs[2] = {uva_queue_get(q[0]), uva_queue_get(q[1])};
  void *v = NULL;
  int rc = uva_await(uva_gather(fs, 2, 0), &v);
  uva_results_free(v);
  return rc;
}

/* A gather of two gets, the first served, is cancelled (through its task)
 * before the gather's callback on that get ran: the first get gives its
 * item back (it is not collected yet), the second takes the cancel, and
 * the gather ends cancelled with nothing consumed. (It froze the item
 * with the results before.) */
static int gather_served_then_cancelled_main(void *arg) {
  (void)arg;
  uva_queue_t *q[2] = {counted_queue(), counted_queue()};
  uva_future_t *t = uva_spawn(gather_two_gets_task, q);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(q[0], new_value(5)), 0); /* to the first get */
  ck_assert_int_eq(uva_cancel(t), 1);
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  ck_assert_msg(uva_queue_size(q[0]) == 1, "the first get's item was consumed and freed");
  uva_queue_free(q[0]);
  uva_queue_free(q[1]);
  return 0;
}

/* The first get's item was collected on an earlier turn: it cannot be
 * given back, so the gather's results win over the cancel (the gather
 * succeeds; the get it cancelled reads UV_ECANCELED) and the item reaches
 * the caller instead of being freed. */
static int gather_two_gets_keeps(void *arg) {
  uva_queue_t **q = arg;
  uva_future_t *fs[2] = {uva_queue_get(q[0]), uva_queue_get(q[1])};
  void *v = NULL;
  int rc = uva_await(uva_gather(fs, 2, 0), &v);
  ck_assert_int_eq(rc, 0);
  uva_results_t *res = v;
  ck_assert_int_eq(res->item[0].status, 0);
  ck_assert_ptr_nonnull(res->item[0].value);
  ck_assert_int_eq(res->item[1].status, UV_ECANCELED);
  uva_results_free(res);
  return 7;
}
static int gather_collected_then_cancelled_main(void *arg) {
  (void)arg;
  uva_queue_t *q[2] = {counted_queue(), counted_queue()};
  uva_future_t *t = uva_spawn(gather_two_gets_keeps, q);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(q[0], new_value(5)), 0);
  settle(); /* the gather has collected it */
  ck_assert_int_eq(uva_cancel(t), 1);
  ck_assert_int_eq(uva_await(t, NULL), 7);
  uva_queue_free(q[0]);
  uva_queue_free(q[1]);
  return 0;
}
START_TEST(test_gather_cancelled_after_collecting_a_value_keeps_it) {
  ck_assert_int_eq(run_test(gather_collected_then_cancelled_main), 0);
}
END_TEST

START_TEST(test_gather_cancelled_after_a_child_got_an_item_loses_nothing) {
  ck_assert_int_eq(run_test(gather_served_then_cancelled_main), 0);
}
END_TEST

/* --------------------------------------------------------------- wait */

static int wait_all_main(void *arg) {
  (void)arg;
  uva_future_t *fs[2] = {uva_spawn(sleep_ms_task, MS(10)), uva_spawn(sleep_ms_task, MS(30))};
  uint64_t t0 = uva_now();
  ck_assert_int_eq(uva_await(uva_wait(fs, 2, UVA_ALL_COMPLETED, -1), NULL), 2);
  ck_assert_uint_ge(uva_now() - t0, 25);
  ck_assert_int_eq(uva_future_status(fs[0]), 10);
  ck_assert_int_eq(uva_future_status(fs[1]), 30);
  uva_release(fs[0]); /* borrowed: still ours */
  uva_release(fs[1]);
  return 0;
}

START_TEST(test_wait_all_completed) { ck_assert_int_eq(run_test(wait_all_main), 0); }
END_TEST

static int wait_first_completed_main(void *arg) {
  (void)arg;
  uva_future_t *fs[2] = {uva_spawn(sleep_ms_task, MS(10)),
                         uva_spawn(sleep_ms_task, MS(FOREVER_MS))};
  /* returns on the first: the second never ends by itself */
  ck_assert_int_eq(uva_await(uva_wait(fs, 2, UVA_FIRST_COMPLETED, -1), NULL), 1);
  ck_assert(uva_future_is_done(fs[0]));
  ck_assert(!uva_future_is_done(fs[1]));
  uva_cancel(fs[1]);
  ck_assert_int_eq(uva_await(fs[1], NULL), UV_ECANCELED);
  uva_release(fs[0]);
  return 0;
}

START_TEST(test_wait_first_completed) { ck_assert_int_eq(run_test(wait_first_completed_main), 0); }
END_TEST

static int fail_after(void *arg) {
  int rc = uva_await(uva_sleep((uint64_t)(intptr_t)arg), NULL);
  return rc < 0 ? rc : UV_EIO;
}

static int wait_first_exception_main(void *arg) {
  (void)arg;
  uva_future_t *fs[3] = {uva_spawn(sleep_ms_task, MS(5)), uva_spawn(fail_after, MS(30)),
                         uva_spawn(sleep_ms_task, MS(FOREVER_MS))};
  ck_assert_int_eq(uva_await(uva_wait(fs, 3, UVA_FIRST_EXCEPTION, -1), NULL), 2);
  ck_assert_int_eq(uva_future_status(fs[1]), UV_EIO);
  ck_assert(!uva_future_is_done(fs[2]));
  uva_cancel(fs[2]);
  ck_assert_int_eq(uva_await(fs[2], NULL), UV_ECANCELED);
  uva_release(fs[0]);
  uva_release(fs[1]);

  /* A cancelled future is not an exception; without one it is ALL. */
  uva_future_t *c = uva_future_new();
  uva_cancel(c);
  uva_future_t *gs[2] = {c, uva_spawn(sleep_ms_task, MS(20))};
  ck_assert_int_eq(uva_await(uva_wait(gs, 2, UVA_FIRST_EXCEPTION, -1), NULL), 2);
  ck_assert_int_eq(uva_future_status(gs[1]), 20);
  uva_release(gs[0]);
  uva_release(gs[1]);
  return 0;
}

START_TEST(test_wait_first_exception) { ck_assert_int_eq(run_test(wait_first_exception_main), 0); }
END_TEST

static int wait_timeout_main(void *arg) {
  (void)arg;
  uva_future_t *fs[3] = {uva_spawn(sleep_ms_task, MS(10)),
                         uva_spawn(sleep_ms_task, MS(FOREVER_MS)), uva_future_new()};
  uint64_t t0 = uva_now();
  /* only the timeout can end this wait */
  ck_assert_int_eq(uva_await(uva_wait(fs, 3, UVA_ALL_COMPLETED, 50), NULL), 1);
  ck_assert_uint_ge(uva_now() - t0, 45);
  ck_assert(uva_future_is_done(fs[0]));
  ck_assert(!uva_future_is_done(fs[1])); /* pending, and not cancelled */
  ck_assert(!uva_future_is_done(fs[2]));
  ck_assert_int_eq(uva_await(uva_sleep(10), NULL), 0);
  ck_assert(!uva_future_is_done(fs[1]));
  uva_cancel(fs[1]);
  ck_assert_int_eq(uva_await(fs[1], NULL), UV_ECANCELED);
  uva_release(fs[0]);
  uva_release(fs[2]);
  return 0;
}

START_TEST(test_wait_timeout_reports_done_and_leaves_pending) {
  ck_assert_int_eq(run_test(wait_timeout_main), 0);
}
END_TEST

static int wait_cancel_main(void *arg) {
  (void)arg;
  uva_future_t *fs[1] = {uva_spawn(sleep_ms_task, MS(FOREVER_MS))};
  uva_future_t *w = uva_ref(uva_wait(fs, 1, UVA_ALL_COMPLETED, -1));
  ck_assert_int_eq(uva_cancel(w), 1);
  ck_assert(uva_future_is_cancelled(w));
  ck_assert_int_eq(uva_await(w, NULL), UV_ECANCELED);
  uva_release(w);
  ck_assert_int_eq(uva_await(uva_sleep(5), NULL), 0);
  ck_assert(!uva_future_is_done(fs[0]));
  uva_cancel(fs[0]);
  ck_assert_int_eq(uva_await(fs[0], NULL), UV_ECANCELED);
  return 0;
}

START_TEST(test_wait_cancel_cancels_only_the_wait) {
  ck_assert_int_eq(run_test(wait_cancel_main), 0);
}
END_TEST

static int wait_done_main(void *arg) {
  (void)arg;
  uva_future_t *fs[2] = {uva_future_done_with(3), uva_future_new()};
  ck_assert_int_eq(uva_await(uva_wait(fs, 2, UVA_FIRST_COMPLETED, -1), NULL), 1);
  ck_assert_int_eq(uva_await(uva_wait(fs, 2, UVA_ALL_COMPLETED, 0), NULL), 1);
  uva_future_t *w = uva_wait(fs, 2, UVA_ALL_COMPLETED, -1);
  uva_release(w); /* dropped while pending: unhooks both */
  uva_release(fs[0]);
  uva_release(fs[1]);
  return 0;
}

START_TEST(test_wait_on_done_futures_and_release_pending_wait) {
  ck_assert_int_eq(run_test(wait_done_main), 0);
}
END_TEST

static int wait_bad_args_main(void *arg) {
  (void)arg;
  uva_future_t *fs[2] = {uva_future_done_with(0), NULL};
  ck_assert_int_eq(uva_await(uva_wait(fs, 1, 0, -1), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_wait(fs, 1, 4, -1), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_wait(fs, 2, UVA_ALL_COMPLETED, -1), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_wait(fs, 0, UVA_ALL_COMPLETED, -1), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_wait(NULL, 1, UVA_ALL_COMPLETED, -1), NULL), UV_EINVAL);
  ck_assert(uva_future_is_done(fs[0])); /* borrowed even on error */
  uva_release(fs[0]);
  return 0;
}

START_TEST(test_wait_bad_arguments_einval) { ck_assert_int_eq(run_test(wait_bad_args_main), 0); }
END_TEST

/* ----------------------------------------------------------- wait_for */

static int wait_for_success_main(void *arg) {
  (void)arg;
  job_t j = {.ms = 10, .ret = 5, .value = 42};
  void *v;
  ck_assert_int_eq(uva_await(uva_wait_for(job_spawn(&j), 1000), &v), 5);
  ck_assert_int_eq(value_of(v), 42);
  value_free(v);
  ck_assert(!j.saw_cancel);
  /* no timeout at all */
  ck_assert_int_eq(uva_await(uva_wait_for(uva_sleep(10), -1), NULL), 0);
  return 0;
}

START_TEST(test_wait_for_success_passes_result_and_value) {
  ck_assert_int_eq(run_test(wait_for_success_main), 0);
}
END_TEST

static int wait_for_timeout_main(void *arg) {
  (void)arg;
  job_t j = {.ms = HOLD, .cleanup_ms = 30};
  uint64_t t0 = uva_now();
  ck_assert_int_eq(uva_await(uva_wait_for(job_spawn(&j), 20), NULL), UV_ETIMEDOUT);
  /* returned only once the inner task had really ended */
  ck_assert(j.saw_cancel);
  ck_assert(j.cleaned);
  ck_assert(j.ended);
  ck_assert_uint_ge(uva_now() - t0, 45);
  return 0;
}

START_TEST(test_wait_for_timeout_cancels_and_awaits_inner) {
  ck_assert_int_eq(run_test(wait_for_timeout_main), 0);
}
END_TEST

static int wait_for_late_result_main(void *arg) {
  (void)arg;
  job_t j = {.ms = HOLD, .cleanup_ms = 10, .ignore_cancel = 1, .ret = 3, .value = 9};
  void *v;
  ck_assert_int_eq(uva_await(uva_wait_for(job_spawn(&j), 20), &v), 3);
  ck_assert(j.saw_cancel);
  ck_assert_int_eq(value_of(v), 9);
  value_free(v);
  return 0;
}

START_TEST(test_wait_for_result_arriving_during_cancel_is_not_lost) {
  ck_assert_int_eq(run_test(wait_for_late_result_main), 0);
}
END_TEST

static job_t outer_job;
static int wait_for_outer_task(void *arg) {
  return uva_await(uva_wait_for(job_spawn(&outer_job), (int64_t)(intptr_t)arg), NULL);
}

static int wait_for_outer_cancel_main(void *arg) {
  (void)arg;
  /* cancelled before the deadline (a day away) */
  outer_job = (job_t){.ms = HOLD};
  uva_future_t *t = uva_spawn(wait_for_outer_task, MS(FOREVER_MS));
  WAIT_UNTIL(outer_job.started);
  uva_cancel(t);
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  ck_assert(outer_job.saw_cancel && outer_job.ended);

  /* cancelled after the deadline, while the inner task still cleans up
   * (until we let it): still a cancel, not a timeout */
  outer_job = (job_t){.ms = HOLD, .cleanup_ms = HOLD};
  t = uva_spawn(wait_for_outer_task, MS(10));
  WAIT_UNTIL(outer_job.saw_cancel);
  ck_assert(!outer_job.ended);
  uva_cancel(t);
  outer_job.go = 1; /* whether or not that cancel reached the cleanup */
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  ck_assert(outer_job.ended);
  return 0;
}

static int late_rc[2];
static int wait_for_late_task(void *arg) {
  (void)arg;
  void *v = NULL;
  late_rc[0] = uva_await(uva_wait_for(job_spawn(&outer_job), FOREVER_MS), &v);
  if (v) value_free(v);
  late_rc[1] = uva_await(uva_sleep(1), NULL); /* the cancel lands here */
  return late_rc[0];
}

static int wait_for_outer_cancel_late_result_main(void *arg) {
  (void)arg;
  /* The inner task catches the cancel and returns a value: the value wins
   * (nothing is lost) and the awaiting task gets its cancel at the next
   * await, as for any future that finished before a cancel took effect. */
  outer_job = (job_t){.ms = HOLD, .cleanup_ms = 5, .ignore_cancel = 1, .ret = 3, .value = 1};
  uva_future_t *t = uva_spawn(wait_for_late_task, NULL);
  WAIT_UNTIL(outer_job.started);
  uva_cancel(t);
  ck_assert_int_eq(uva_await(t, NULL), 3); /* the cancel was delivered, then it returned */
  ck_assert_int_eq(late_rc[0], 3);
  ck_assert_int_eq(late_rc[1], UV_ECANCELED);
  return 0;
}

START_TEST(test_wait_for_outer_cancel_result_from_inner_wins) {
  ck_assert_int_eq(run_test(wait_for_outer_cancel_late_result_main), 0);
}
END_TEST

START_TEST(test_wait_for_outer_cancel_stays_cancelled) {
  ck_assert_int_eq(run_test(wait_for_outer_cancel_main), 0);
}
END_TEST

static int wait_for_zero_main(void *arg) {
  (void)arg;
  ck_assert_int_eq(uva_await(uva_wait_for(uva_future_done_with(4), 0), NULL), 4);
  /* at once: the sleep never ends by itself */
  ck_assert_int_eq(uva_await(uva_wait_for(uva_sleep(FOREVER_MS), 0), NULL), UV_ETIMEDOUT);
  ck_assert_int_eq(uva_await(uva_wait_for(NULL, 10), NULL), UV_ENOMEM);
  /* a plain future cancelled by someone else is a cancel, not a timeout */
  uva_future_t *f = uva_future_new();
  uva_future_t *w = uva_wait_for(uva_ref(f), 1000);
  uva_cancel(f);
  uva_release(f);
  ck_assert_int_eq(uva_await(w, NULL), UV_ECANCELED);
  /* and released while pending */
  uva_release(uva_wait_for(uva_future_new(), 10));
  uva_release(uva_wait_for(uva_sleep(10), 10));
  return 0;
}

START_TEST(test_wait_for_zero_timeout_and_edge_cases) {
  ck_assert_int_eq(run_test(wait_for_zero_main), 0);
}
END_TEST

/* ------------------------------------------------------------- shield */

static int shield_result_main(void *arg) {
  (void)arg;
  job_t j = {.ms = 10, .ret = 8, .value = 6};
  void *v;
  ck_assert_int_eq(uva_await(uva_shield(job_spawn(&j)), &v), 8);
  ck_assert_int_eq(value_of(v), 6);
  value_free(v);
  ck_assert_int_eq(uva_await(uva_shield(uva_future_done_with(UV_EIO)), NULL), UV_EIO);
  ck_assert_int_eq(uva_await(uva_shield(NULL), NULL), UV_ENOMEM);
  return 0;
}

START_TEST(test_shield_mirrors_result) { ck_assert_int_eq(run_test(shield_result_main), 0); }
END_TEST

static job_t shielded_job;
static int shield_awaiter(void *arg) {
  (void)arg;
  return uva_await(uva_shield(job_spawn(&shielded_job)), NULL);
}

static int shield_cancel_main(void *arg) {
  (void)arg;
  job_t j = {.ms = 30, .ret = 2, .value = 4};
  uva_future_t *inner = job_spawn(&j);
  uva_future_t *s = uva_ref(uva_shield(uva_ref(inner)));
  ck_assert_int_eq(uva_cancel(s), 1);
  ck_assert(uva_future_is_cancelled(s)); /* at once */
  ck_assert_int_eq(uva_await(s, NULL), UV_ECANCELED);
  uva_release(s);
  ck_assert_int_eq(uva_await(inner, NULL), 2); /* f ran on */
  ck_assert(!j.saw_cancel);
  ck_assert_int_eq(values_live, 0);

  /* a task awaiting the shield is cancelled; the shielded task is not, and
   * its result is freed when it arrives */
  shielded_job = (job_t){.ms = HOLD, .ret = 1, .value = 1};
  uva_future_t *t = uva_spawn(shield_awaiter, NULL);
  WAIT_UNTIL(shielded_job.started);
  uva_cancel(t);
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  ck_assert(!shielded_job.ended);
  shielded_job.go = 1;
  WAIT_UNTIL(shielded_job.ended);
  settle();
  ck_assert(!shielded_job.saw_cancel);
  ck_assert_int_eq(values_live, 0);
  return 0;
}

START_TEST(test_shield_cancel_leaves_inner_running) {
  ck_assert_int_eq(run_test(shield_cancel_main), 0);
}
END_TEST

static int shield_get_task(void *arg) {
  void *v = NULL;
  int rc = uva_await(uva_shield(uva_queue_get(arg)), &v);
  if (rc < 0) return rc;
  rc = value_of(v);
  value_free(v);
  return rc;
}

/* The shielded get is served, and the task awaiting the shield is
 * cancelled before the shield's callback ran: the item left the queue, so
 * the task must get it (the cancel comes late), or the item must be back.
 * Before the fix the shield completed cancelled at once and the item was
 * freed with the get's future: consumed, and lost. */
static int shield_served_then_cancelled_main(void *arg) {
  (void)arg;
  uva_queue_t *q = counted_queue();
  uva_future_t *t = uva_spawn(shield_get_task, q);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(q, new_value(5)), 0);
  ck_assert_int_eq(uva_cancel(t), 1);
  int rc = uva_await(t, NULL);
  ck_assert_msg(rc == 5 || (rc == UV_ECANCELED && uva_queue_size(q) == 1),
                "rc %d, %zu in the queue: the item was consumed and lost", rc,
                uva_queue_size(q));
  uva_queue_free(q);
  return 0;
}

/* The same race through wait_for, which does pass the cancel on: its
 * get was served but wait_for has not seen it yet, so the get gives its
 * item back and the wait_for ends cancelled, nothing consumed. */
static int wait_for_get_task(void *arg) {
  void *v = NULL;
  int rc = uva_await(uva_wait_for(uva_queue_get(arg), FOREVER_MS), &v);
  if (rc < 0) return rc;
  rc = value_of(v);
  value_free(v);
  return rc;
}
static int wait_for_served_then_cancelled_main(void *arg) {
  (void)arg;
  uva_queue_t *q = counted_queue();
  uva_future_t *t = uva_spawn(wait_for_get_task, q);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(q, new_value(5)), 0);
  ck_assert_int_eq(uva_cancel(t), 1);
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  ck_assert_uint_eq(uva_queue_size(q), 1); /* given back */
  uva_queue_free(q);
  return 0;
}
START_TEST(test_wait_for_cancelled_after_inner_hand_off_gives_it_back) {
  ck_assert_int_eq(run_test(wait_for_served_then_cancelled_main), 0);
}
END_TEST

START_TEST(test_shield_cancelled_after_inner_result_loses_nothing) {
  ck_assert_int_eq(run_test(shield_served_then_cancelled_main), 0);
}
END_TEST

/* ------------------------------------------------------- as_completed */

static int as_completed_order_main(void *arg) {
  (void)arg;
  uva_future_t *fs[3] = {uva_spawn(sleep_ms_task, MS(30)), uva_spawn(sleep_ms_task, MS(10)),
                         uva_spawn(sleep_ms_task, MS(20))};
  uva_as_completed_t *it = uva_as_completed(fs, 3, -1);
  ck_assert_ptr_nonnull(it);
  int want[3] = {10, 20, 30};
  for (int i = 0; i < 3; i++) {
    void *next;
    ck_assert_int_eq(uva_await(uva_as_completed_next(it), &next), 0);
    ck_assert_int_eq(uva_await(next, NULL), want[i]);
  }
  ck_assert_int_eq(uva_await(uva_as_completed_next(it), NULL), UV_EOF);
  ck_assert_int_eq(uva_await(uva_as_completed_next(it), NULL), UV_EOF);
  uva_as_completed_free(it);
  return 0;
}

START_TEST(test_as_completed_yields_in_completion_order) {
  ck_assert_int_eq(run_test(as_completed_order_main), 0);
}
END_TEST

static int as_completed_ahead_main(void *arg) {
  (void)arg;
  uva_future_t *fs[3] = {uva_spawn(sleep_ms_task, MS(30)), uva_spawn(sleep_ms_task, MS(10)),
                         uva_spawn(sleep_ms_task, MS(20))};
  uva_as_completed_t *it = uva_as_completed(fs, 3, -1);
  uva_future_t *n[5];
  for (int i = 0; i < 5; i++) n[i] = uva_as_completed_next(it);
  uva_cancel(n[1]); /* leaves the line without taking a result */
  int want[3] = {10, 20, 30};
  int k = 0;
  for (int i = 0; i < 5; i++) {
    void *f;
    int rc = uva_await(n[i], &f);
    if (i == 1) {
      ck_assert_int_eq(rc, UV_ECANCELED);
    } else if (k < 3) {
      ck_assert_int_eq(rc, 0);
      ck_assert_int_eq(uva_await(f, NULL), want[k++]);
    } else {
      ck_assert_int_eq(rc, UV_EOF);
    }
  }
  ck_assert_int_eq(k, 3);
  uva_as_completed_free(it);
  return 0;
}

START_TEST(test_as_completed_next_called_ahead_of_time) {
  ck_assert_int_eq(run_test(as_completed_ahead_main), 0);
}
END_TEST

static int as_completed_timeout_main(void *arg) {
  (void)arg;
  uva_future_t *slow = uva_spawn(sleep_ms_task, MS(FOREVER_MS));
  uva_future_t *fs[3] = {uva_spawn(sleep_ms_task, MS(1)), uva_ref(slow),
                         uva_spawn(sleep_ms_task, MS(FOREVER_MS))};
  uint64_t t0 = uva_now();
  uva_as_completed_t *it = uva_as_completed(fs, 3, 100);
  void *f;
  ck_assert_int_eq(uva_await(uva_as_completed_next(it), &f), 0);
  ck_assert_int_eq(uva_await(f, NULL), 1);
  uva_future_t *n1 = uva_as_completed_next(it), *n2 = uva_as_completed_next(it);
  ck_assert_int_eq(uva_await(n1, NULL), UV_ETIMEDOUT);
  ck_assert_uint_ge(uva_now() - t0, 95);
  ck_assert_int_eq(uva_await(n2, NULL), UV_ETIMEDOUT);
  ck_assert_int_eq(uva_await(uva_as_completed_next(it), NULL), UV_EOF);
  uva_as_completed_free(it);
  ck_assert(!uva_future_is_done(slow)); /* timed out, not cancelled */
  uva_cancel(slow);
  ck_assert_int_eq(uva_await(slow, NULL), UV_ECANCELED);
  return 0;
}

START_TEST(test_as_completed_timeout) {
  ck_assert_int_eq(run_test(as_completed_timeout_main), 0);
}
END_TEST

static int as_completed_free_main(void *arg) {
  (void)arg;
  job_t a = {.ms = 1, .ret = 1, .value = 1};
  job_t b = {.ms = 2, .ret = 2, .value = 2};
  job_t c = {.ms = HOLD, .ret = 3, .value = 3};
  uva_future_t *fs[5] = {job_spawn(&a), job_spawn(&b), job_spawn(&c), uva_future_new(), NULL};
  uva_as_completed_t *it = uva_as_completed(fs, 5, -1);
  void *f;
  /* the NULL child is an item that failed with UV_ENOMEM */
  ck_assert_int_eq(uva_await(uva_as_completed_next(it), &f), UV_ENOMEM);
  ck_assert_int_eq(uva_await(uva_as_completed_next(it), &f), 0);
  uva_release(f); /* a: its value goes with it */
  WAIT_UNTIL(b.ended);
  settle(); /* the iterator has b */
  uva_as_completed_free(it); /* b done, not handed out; c running */
  ck_assert(!c.ended);
  c.go = 1;
  WAIT_UNTIL(c.ended);
  settle();
  ck_assert(!c.saw_cancel);
  ck_assert_int_eq(values_live, 0);

  /* a next() still waiting when the iterator goes fails */
  uva_future_t *gs[1] = {uva_future_new()};
  it = uva_as_completed(gs, 1, -1);
  uva_future_t *pending = uva_as_completed_next(it);
  uva_as_completed_free(it);
  ck_assert_int_eq(uva_await(pending, NULL), UVA_ECLOSED);
  ck_assert_ptr_null(uva_as_completed_next(NULL));
  uva_as_completed_free(NULL);
  return 0;
}

START_TEST(test_as_completed_free_releases_what_was_not_handed_out) {
  ck_assert_int_eq(run_test(as_completed_free_main), 0);
}
END_TEST

/* ----------------------------------------------------------- timeouts */

static int timeout_expires_main(void *arg) {
  (void)arg;
  uva_timeout_t to;
  ck_assert_int_eq(uva_timeout_enter(&to, 20), 0);
  int rc = uva_await(uva_sleep(FOREVER_MS), NULL); /* only the deadline ends it */
  ck_assert_int_eq(rc, UV_ECANCELED);
  ck_assert(uva_timeout_expired(&to));
  ck_assert_int_eq(uva_timeout_exit(&to, rc), UV_ETIMEDOUT);
  ck_assert_int_eq(uva_cancelling(), 0); /* uncancelled */
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0);
  ck_assert_int_eq(uva_timeout_reschedule(&to, 10), UV_EINVAL);
  return 0;
}

START_TEST(test_timeout_expiry_gives_etimedout) {
  ck_assert_int_eq(run_test(timeout_expires_main), 0);
}
END_TEST

static int timeout_not_expiring_main(void *arg) {
  (void)arg;
  uva_timeout_t to;
  ck_assert_int_eq(uva_timeout_enter(&to, 1000), 0);
  ck_assert_int_eq(uva_timeout_enter(&to, 10), UV_EINVAL); /* active already */
  int rc = uva_await(uva_sleep(10), NULL);
  ck_assert_int_eq(uva_timeout_exit(&to, rc), 0);
  ck_assert(!uva_timeout_expired(&to));
  ck_assert_int_eq(uva_timeout_exit(&to, 5), 5); /* exited: passes rc */
  /* a block that fails on its own keeps its error */
  ck_assert_int_eq(uva_timeout_enter(&to, 1000), 0);
  ck_assert_int_eq(uva_timeout_exit(&to, UV_EIO), UV_EIO);
  /* no deadline at all */
  ck_assert_int_eq(uva_timeout_enter(&to, -1), 0);
  ck_assert_int_eq(uva_await(uva_sleep(10), NULL), 0);
  ck_assert_int_eq(uva_timeout_exit(&to, 0), 0);
  return 0;
}

START_TEST(test_timeout_not_expiring_passes_result) {
  ck_assert_int_eq(run_test(timeout_not_expiring_main), 0);
}
END_TEST

static int timeout_nested_inner_main(void *arg) {
  (void)arg;
  uva_timeout_t outer, inner;
  ck_assert_int_eq(uva_timeout_enter(&outer, 1000), 0);
  ck_assert_int_eq(uva_timeout_enter(&inner, 20), 0);
  int rc = uva_await(uva_sleep(5000), NULL);
  rc = uva_timeout_exit(&inner, rc);
  ck_assert_int_eq(rc, UV_ETIMEDOUT);
  rc = uva_timeout_exit(&outer, rc);
  ck_assert_int_eq(rc, UV_ETIMEDOUT);
  ck_assert(uva_timeout_expired(&inner));
  ck_assert(!uva_timeout_expired(&outer));
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0);
  return 0;
}

START_TEST(test_timeout_nested_inner_expires) {
  ck_assert_int_eq(run_test(timeout_nested_inner_main), 0);
}
END_TEST

static int timeout_nested_outer_main(void *arg) {
  (void)arg;
  uva_timeout_t outer, inner;
  ck_assert_int_eq(uva_timeout_enter(&outer, 20), 0);
  ck_assert_int_eq(uva_timeout_enter(&inner, 1000), 0);
  int rc = uva_await(uva_sleep(5000), NULL);
  rc = uva_timeout_exit(&inner, rc);
  ck_assert_int_eq(rc, UV_ECANCELED); /* not the inner scope's deadline */
  rc = uva_timeout_exit(&outer, rc);
  ck_assert_int_eq(rc, UV_ETIMEDOUT);
  ck_assert(!uva_timeout_expired(&inner));
  ck_assert(uva_timeout_expired(&outer));
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0);

  /* both expire together: the innermost reports it */
  ck_assert_int_eq(uva_timeout_enter(&outer, 20), 0);
  ck_assert_int_eq(uva_timeout_enter(&inner, 20), 0);
  rc = uva_await(uva_sleep(5000), NULL);
  rc = uva_timeout_exit(&inner, rc);
  rc = uva_timeout_exit(&outer, rc);
  ck_assert_int_eq(rc, UV_ETIMEDOUT);
  ck_assert_int_eq(uva_cancelling(), 0);
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0);
  return 0;
}

START_TEST(test_timeout_nested_outer_expires) {
  ck_assert_int_eq(run_test(timeout_nested_outer_main), 0);
}
END_TEST

static int scoped_rc[2];
static int scoped_task(void *arg) {
  int mode = (int)(intptr_t)arg;
  uva_timeout_t to;
  uva_timeout_enter(&to, mode == 0 ? 1000 : 30);
  int rc = uva_await(uva_sleep(5000), NULL);
  scoped_rc[0] = rc;
  if (mode == 1) uva_await(uva_sleep(50), NULL); /* cleanup outlives the deadline */
  rc = uva_timeout_exit(&to, rc);
  scoped_rc[1] = rc;
  return rc;
}

static int timeout_outer_cancel_main(void *arg) {
  (void)arg;
  for (int mode = 0; mode < 2; mode++) {
    uva_future_t *t = uva_spawn(scoped_task, MS(mode));
    ck_assert_int_eq(uva_await(uva_sleep(10), NULL), 0);
    uva_cancel(t);
    ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
    ck_assert_int_eq(scoped_rc[0], UV_ECANCELED);
    ck_assert_int_eq(scoped_rc[1], UV_ECANCELED);
  }
  return 0;
}

START_TEST(test_timeout_outer_cancel_stays_cancelled) {
  ck_assert_int_eq(run_test(timeout_outer_cancel_main), 0);
}
END_TEST

static int timeout_reschedule_main(void *arg) {
  (void)arg;
  uva_timeout_t to;
  ck_assert_int_eq(uva_timeout_enter(&to, -1), 0);
  ck_assert_int_eq(uva_timeout_reschedule(&to, 20), 0);
  int rc = uva_await(uva_sleep(5000), NULL);
  ck_assert_int_eq(uva_timeout_exit(&to, rc), UV_ETIMEDOUT);

  ck_assert_int_eq(uva_timeout_enter(&to, 10), 0);
  ck_assert_int_eq(uva_timeout_reschedule(&to, 1000), 0); /* pushed back */
  ck_assert_int_eq(uva_await(uva_sleep(30), NULL), 0);
  ck_assert_int_eq(uva_timeout_reschedule(&to, -1), 0); /* and removed */
  ck_assert_int_eq(uva_await(uva_sleep(5), NULL), 0);
  ck_assert_int_eq(uva_timeout_exit(&to, 0), 0);
  return 0;
}

START_TEST(test_timeout_reschedule_moves_deadline) {
  ck_assert_int_eq(run_test(timeout_reschedule_main), 0);
}
END_TEST

/* asyncio: timeout(0) around sleep(0) times out (the timeout is queued
 * before the sleep's wake-up); an empty 0 ms block does not; a deadline
 * in the past (timeout_at, reschedule) expires at once too. */
static int timeout_zero_main(void *arg) {
  (void)arg;
  uva_timeout_t to;
  ck_assert_int_eq(uva_timeout_enter(&to, 0), 0);
  int rc = uva_yield();
  ck_assert_int_eq(rc, UV_ECANCELED);
  ck_assert_int_eq(uva_timeout_exit(&to, rc), UV_ETIMEDOUT);
  ck_assert_int_eq(uva_cancelling(), 0);

  ck_assert_int_eq(uva_timeout_enter(&to, 0), 0); /* nothing awaited inside */
  ck_assert_int_eq(uva_timeout_exit(&to, 4), 4);
  ck_assert_int_eq(uva_yield(), 0); /* no stray cancel */

  ck_assert_int_eq(uva_timeout_enter_at(&to, uva_now() - 1), 0);
  ck_assert(uva_timeout_expired(&to));
  rc = uva_await(uva_sleep(5000), NULL);
  ck_assert_int_eq(uva_timeout_exit(&to, rc), UV_ETIMEDOUT);

  ck_assert_int_eq(uva_timeout_enter(&to, 5000), 0);
  ck_assert_int_eq(uva_timeout_reschedule(&to, 0), 0);
  rc = uva_await(uva_sleep(5000), NULL);
  ck_assert_int_eq(uva_timeout_exit(&to, rc), UV_ETIMEDOUT);
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0);
  return 0;
}
START_TEST(test_timeout_zero_expires_at_once) {
  ck_assert_int_eq(run_test(timeout_zero_main), 0);
}
END_TEST

/* timeout_at with a deadline in the future, and reschedule_at. */
static int timeout_at_main(void *arg) {
  (void)arg;
  uva_timeout_t to;
  ck_assert_int_eq(uva_timeout_enter_at(&to, uva_now() + 20), 0);
  ck_assert_uint_eq(to.deadline, uva_now() + 20);
  int rc = uva_await(uva_sleep(5000), NULL);
  ck_assert_int_eq(uva_timeout_exit(&to, rc), UV_ETIMEDOUT);

  ck_assert_int_eq(uva_timeout_enter_at(&to, UINT64_MAX), 0); /* none */
  ck_assert_int_eq(uva_timeout_reschedule_at(&to, uva_now() + 10), 0);
  rc = uva_await(uva_sleep(5000), NULL);
  ck_assert_int_eq(uva_timeout_exit(&to, rc), UV_ETIMEDOUT);
  ck_assert_int_eq(uva_timeout_reschedule_at(&to, uva_now()), UV_EINVAL); /* exited */
  return 0;
}
START_TEST(test_timeout_at_and_reschedule_at) {
  ck_assert_int_eq(run_test(timeout_at_main), 0);
}
END_TEST

/* asyncio 3.12: wait_for(task, 0) on a task that has not started cancels
 * it: it never runs, and the result is a timeout. */
static int ran_flag;
static int sets_ran(void *arg) {
  (void)arg;
  ran_flag = 1;
  return 0;
}
static int wait_for_zero_task_main(void *arg) {
  (void)arg;
  ran_flag = 0;
  ck_assert_int_eq(uva_await(uva_wait_for(uva_spawn(sets_ran, NULL), 0), NULL), UV_ETIMEDOUT);
  ck_assert_int_eq(ran_flag, 0);
  settle();
  ck_assert_int_eq(ran_flag, 0);
  /* a future already done still wins over 0 */
  ck_assert_int_eq(uva_await(uva_wait_for(uva_future_done_with(6), 0), NULL), 6);
  uva_future_t *p = uva_future_new();
  ck_assert_int_eq(uva_await(uva_wait_for(p, 0), NULL), UV_ETIMEDOUT);
  return 0;
}
START_TEST(test_wait_for_zero_never_starts_a_task) {
  ck_assert_int_eq(run_test(wait_for_zero_task_main), 0);
}
END_TEST

static int timeout_unseen_main(void *arg) {
  (void)arg;
  /* The loop is held past both deadlines, so one timer phase fires the
   * sleep (due first) and then the scope: the task's await already has its
   * result when the scope's cancel arrives. The block never sees the
   * cancel, and exit withdraws it. */
  uva_timeout_t to;
  uva_future_t *s = uva_sleep(10);
  ck_assert_int_eq(uva_timeout_enter(&to, 20), 0);
  uint64_t t0 = uv_hrtime();
  while (uv_hrtime() - t0 < 30 * 1000000u) {
  }
  ck_assert_int_eq(uva_await(s, NULL), 0);
  ck_assert(uva_timeout_expired(&to));
  ck_assert_int_eq(uva_timeout_exit(&to, 0), 0);
  ck_assert_int_eq(uva_cancelling(), 0);
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0); /* no stray cancel */
  return 0;
}

START_TEST(test_timeout_unseen_expiry_is_withdrawn) {
  ck_assert_int_eq(run_test(timeout_unseen_main), 0);
}
END_TEST

START_TEST(test_timeout_outside_task_is_enotask) {
  uva_timeout_t to;
  ck_assert_int_eq(uva_timeout_enter(&to, 10), UVA_ENOTASK);
  ck_assert_int_eq(uva_timeout_exit(&to, 3), 3);
  ck_assert_int_eq(uva_timeout_reschedule(&to, 10), UV_EINVAL);
  ck_assert(!uva_timeout_expired(&to));
}
END_TEST

static int timeout_around_gather_main(void *arg) {
  (void)arg;
  /* a scope around a gather: the deadline cancels the gather's children */
  job_t j[2] = {{.ms = 5000, .cleanup_ms = 5}, {.ms = 5000}};
  uva_future_t *fs[2] = {job_spawn(&j[0]), job_spawn(&j[1])};
  uva_timeout_t to;
  uva_timeout_enter(&to, 20);
  int rc = uva_timeout_exit(&to, uva_await(uva_gather(fs, 2, 0), NULL));
  ck_assert_int_eq(rc, UV_ETIMEDOUT);
  ck_assert(j[0].ended && j[1].ended && j[0].saw_cancel && j[1].saw_cancel);
  return 0;
}

START_TEST(test_timeout_around_gather_cancels_children) {
  ck_assert_int_eq(run_test(timeout_around_gather_main), 0);
}
END_TEST

/* A late cancel (it came after the awaited result, which the task then
 * saw) lets a task that returns before its next suspending await keep its
 * result. A timeout scope that expires at once and is left without an
 * await, or a group cancelled and joined with no task left, each add a
 * request of their own and take it back on exit: the late cancel must come
 * out of that as it went in. Both made it an ordinary cancel, and the task
 * ended cancelled (FAIL until lib/task.c is fixed). */
static uva_future_t *late_gate;
static int late_then_scope(void *arg) {
  intptr_t mode = (intptr_t)arg;
  int rc = uva_await(uva_ref(late_gate), NULL);
  ck_assert_int_eq(rc, 0);
  if (mode == 0) {
    uva_timeout_t to;
    ck_assert_int_eq(uva_timeout_enter(&to, 0), 0); /* expired: a request */
    ck_assert_int_eq(uva_timeout_exit(&to, 0), 0);  /* taken back */
  } else {
    uva_group_t *g = uva_group_new();
    uva_group_cancel(g);                      /* cancels the body: a request */
    ck_assert_int_eq(uva_group_join(g), 0);   /* taken back; no task to wait for */
  }
  return 7;
}
static int late_cancel_through_scopes_main(void *arg) {
  (void)arg;
  for (intptr_t mode = 0; mode < 2; mode++) {
    late_gate = uva_future_new();
    uva_future_t *t = uva_spawn(late_then_scope, (void *)mode);
    settle();
    uva_future_resolve(late_gate, 0, NULL, NULL);
    ck_assert_int_eq(uva_cancel(t), 1); /* after the result: late */
    ck_assert_msg(uva_await(t, NULL) == 7, "%s: the late cancel became an ordinary one",
                  mode ? "group_cancel + join" : "timeout(0) + exit");
    uva_release(late_gate);
  }
  return 0;
}
START_TEST(test_late_cancel_survives_a_scope_that_withdraws_its_own_cancel) {
  ck_assert_int_eq(run_test(late_cancel_through_scopes_main), 0);
}
END_TEST

/* -------------------------------------------------------------- group */

static int group_ok_main(void *arg) {
  (void)arg;
  job_t j[3] = {{.ms = 10, .ret = 1}, {.ms = 20, .ret = 2, .value = 2}, {.ms = 5, .ret = 3}};
  uva_group_t *g = uva_group_new();
  ck_assert_ptr_nonnull(g);
  uva_future_t *t1;
  ck_assert_int_eq(uva_group_spawn(g, job_run, &j[0], &t1), 0);
  ck_assert(uva_is_task(t1));
  ck_assert_int_eq(uva_group_spawn(g, job_run, &j[1], NULL), 0);
  ck_assert_int_eq(uva_group_spawn(g, job_run, &j[2], NULL), 0);
  ck_assert_int_eq(uva_group_join(g), 0);
  for (int i = 0; i < 3; i++) ck_assert(j[i].ended && !j[i].saw_cancel);
  ck_assert_int_eq(uva_future_status(t1), 1);
  uva_release(t1);
  /* an empty group joins at once */
  ck_assert_int_eq(uva_group_join(uva_group_new()), 0);
  return 0;
}

START_TEST(test_group_all_succeed) { ck_assert_int_eq(run_test(group_ok_main), 0); }
END_TEST

/* asyncio's TaskGroup.cancel() from the body: the group's tasks are
 * cancelled and the join reports no error; the body goes on after. */
static int group_cancel_from_body_main(void *arg) {
  (void)arg;
  job_t j[2] = {{.ms = 5000}, {.ms = 5000, .cleanup_ms = 5}};
  uva_group_t *g = uva_group_new();
  for (int i = 0; i < 2; i++) ck_assert_int_eq(uva_group_spawn(g, job_run, &j[i], NULL), 0);
  settle();
  uva_group_cancel(g);
  uva_group_cancel(g); /* idempotent */
  ck_assert_int_eq(uva_group_spawn(g, job_run, &j[0], NULL), UVA_ECLOSED);
  ck_assert_int_eq(uva_group_join(g), 0);
  ck_assert(j[0].saw_cancel && j[1].saw_cancel && j[1].cleaned);
  ck_assert_int_eq(uva_cancelling(), 0);
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0); /* no stray cancel */
  return 0;
}
START_TEST(test_group_cancel_from_its_body) {
  ck_assert_int_eq(run_test(group_cancel_from_body_main), 0);
}
END_TEST

/* From a task of the group, while the body waits elsewhere: the body's
 * await is cancelled (it stops there), its join then returns 0. */
static uva_group_t *cancel_me;
static int cancels_group(void *arg) {
  (void)arg;
  uva_group_cancel(cancel_me);
  return 0;
}
static int group_cancel_from_child_main(void *arg) {
  (void)arg;
  job_t j = {.ms = 5000};
  cancel_me = uva_group_new();
  ck_assert_int_eq(uva_group_spawn(cancel_me, job_run, &j, NULL), 0);
  ck_assert_int_eq(uva_group_spawn(cancel_me, cancels_group, NULL, NULL), 0);
  ck_assert_int_eq(uva_await(uva_sleep(5000), NULL), UV_ECANCELED); /* the body */
  ck_assert_int_eq(uva_group_join(cancel_me), 0);
  ck_assert(j.saw_cancel);
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0);
  return 0;
}
START_TEST(test_group_cancel_from_a_child_stops_the_body) {
  ck_assert_int_eq(run_test(group_cancel_from_child_main), 0);
}
END_TEST

/* A cancel of the body from outside still wins over the group's own. */
static int body_cancelling_group(void *arg) {
  (void)arg;
  job_t j = {.ms = 5000};
  uva_group_t *g = uva_group_new();
  ck_assert_int_eq(uva_group_spawn(g, job_run, &j, NULL), 0);
  ck_assert_int_eq(uva_await(uva_sleep(5000), NULL), UV_ECANCELED); /* outside's */
  uva_group_cancel(g);
  return uva_group_join(g);
}
static int group_cancel_outer_wins_main(void *arg) {
  (void)arg;
  uva_future_t *t = uva_spawn(body_cancelling_group, NULL);
  settle();
  uva_cancel(t);
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  return 0;
}
START_TEST(test_group_cancel_keeps_an_outside_cancel) {
  ck_assert_int_eq(run_test(group_cancel_outer_wins_main), 0);
}
END_TEST

static uva_group_t *nested_group;
static int spawner(void *arg) {
  /* a group task may add siblings while the group is being joined */
  int rc = uva_await(uva_sleep(10), NULL);
  if (rc < 0) return rc;
  return uva_group_spawn(nested_group, job_run, arg, NULL);
}

static int group_spawn_during_join_main(void *arg) {
  (void)arg;
  job_t late = {.ms = 10, .ret = 0};
  nested_group = uva_group_new();
  ck_assert_int_eq(uva_group_spawn(nested_group, spawner, &late, NULL), 0);
  ck_assert_int_eq(uva_group_join(nested_group), 0);
  ck_assert(late.ended);
  return 0;
}

START_TEST(test_group_task_can_spawn_sibling_during_join) {
  ck_assert_int_eq(run_test(group_spawn_during_join_main), 0);
}
END_TEST

static int group_fail_main(void *arg) {
  (void)arg;
  /* j[3] fails too, but only once cancelled: the first failure, j[1]'s,
   * is the one reported */
  job_t j[4] = {{.ms = HOLD, .cleanup_ms = 10},
                {.ms = 10, .ret = UV_EIO},
                {.ms = HOLD},
                {.ms = HOLD, .ret = UV_EPIPE, .ignore_cancel = 1}};
  uva_group_t *g = uva_group_new();
  for (int i = 0; i < 4; i++) ck_assert_int_eq(uva_group_spawn(g, job_run, &j[i], NULL), 0);
  WAIT_UNTIL(j[1].ended);
  ck_assert_int_eq(uva_yield(), 0); /* the group has seen it fail */
  job_t late = {.ms = 1};
  ck_assert_int_eq(uva_group_spawn(g, job_run, &late, NULL), UVA_ECLOSED);
  ck_assert_int_eq(uva_group_join(g), UV_EIO); /* the first failure */
  ck_assert(j[0].saw_cancel && j[0].cleaned && j[0].ended);
  ck_assert(j[2].saw_cancel && j[2].ended);
  ck_assert(j[3].saw_cancel && j[3].ended); /* cancelled before failing */
  ck_assert(!late.ended);
  return 0;
}

START_TEST(test_group_failure_cancels_siblings_and_reports_first_error) {
  ck_assert_int_eq(run_test(group_fail_main), 0);
}
END_TEST

static job_t join_jobs[2];
static int join_rc;
static int joiner(void *arg) {
  int self_cancel = (int)(intptr_t)arg;
  uva_group_t *g = uva_group_new();
  uva_group_spawn(g, job_run, &join_jobs[0], NULL);
  uva_group_spawn(g, job_run, &join_jobs[1], NULL);
  if (self_cancel) {
    uva_yield(); /* let the children start */
    uva_cancel(uva_current_task()); /* pending at join */
  }
  join_rc = uva_group_join(g);
  /* the cancel was delivered by the join: awaiting works again */
  if (uva_await(uva_sleep(1), NULL) != 0) return -1;
  return join_rc;
}

static int group_join_cancel_main(void *arg) {
  (void)arg;
  for (int self = 0; self < 2; self++) {
    join_jobs[0] = (job_t){.ms = HOLD, .cleanup_ms = 20};
    join_jobs[1] = (job_t){.ms = HOLD, .ret = 0};
    join_rc = 0;
    uva_future_t *t = uva_spawn(joiner, MS(self));
    if (!self) {
      WAIT_UNTIL(join_jobs[0].started && join_jobs[1].started); /* t is in its join */
      uva_cancel(t);
    }
    ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
    ck_assert_int_eq(join_rc, UV_ECANCELED);
    ck_assert(join_jobs[0].saw_cancel && join_jobs[0].cleaned && join_jobs[0].ended);
    ck_assert(join_jobs[1].saw_cancel && join_jobs[1].ended);
  }
  return 0;
}

START_TEST(test_group_join_cancelled_cancels_and_awaits_children) {
  ck_assert_int_eq(run_test(group_join_cancel_main), 0);
}
END_TEST

static int outside_rc;
static void join_from_callback(uva_future_t *f, void *data) {
  (void)f;
  outside_rc = uva_group_join(data);
}

static int group_outside_main(void *arg) {
  (void)arg;
  job_t j = {.ms = HOLD, .cleanup_ms = 5};
  uva_group_t *g = uva_group_new();
  ck_assert_int_eq(uva_group_spawn(g, job_run, &j, NULL), 0);
  uva_future_t *s = uva_sleep(5);
  uva_future_on_done(s, join_from_callback, g);
  uva_release(s);
  WAIT_UNTIL(j.ended);
  ck_assert_int_eq(outside_rc, UVA_ENOTASK);
  ck_assert(j.saw_cancel); /* cancelled; RUN_MAIN checks the group was freed */
  return 0;
}

START_TEST(test_group_join_outside_task_cancels_and_frees) {
  ck_assert_int_eq(run_test(group_outside_main), 0);
}
END_TEST

/* ------------------------------------------------------------ mixed */

static int nested_main(void *arg) {
  (void)arg;
  job_t slow = {.ms = HOLD, .cleanup_ms = 5};
  job_t shielded = {.ms = HOLD, .ret = 1, .value = 1};
  job_t quick = {.ms = 1, .ret = 2, .value = 2};
  uva_future_t *sh = job_spawn(&shielded);
  uva_future_t *fs[3] = {uva_wait_for(job_spawn(&slow), FOREVER_MS), uva_shield(uva_ref(sh)),
                         uva_wait_for(job_spawn(&quick), FOREVER_MS)};
  uva_future_t *g = uva_ref(uva_gather(fs, 3, UVA_RETURN_EXCEPTIONS));
  WAIT_UNTIL(quick.ended && slow.started && shielded.started);
  ck_assert_int_eq(uva_cancel(g), 1);
  /* quick's value was in already: its result wins over the cancel (it
   * would be lost otherwise), the others read cancelled */
  void *v = NULL;
  ck_assert_int_eq(uva_await(g, &v), 0);
  uva_results_t *res = v;
  ck_assert_int_eq(res->item[0].status, UV_ECANCELED);
  ck_assert_int_eq(res->item[1].status, UV_ECANCELED);
  ck_assert_int_eq(res->item[2].status, 2);
  ck_assert_ptr_nonnull(res->item[2].value);
  uva_results_free(res);
  uva_release(g);
  ck_assert(slow.saw_cancel && slow.ended);
  ck_assert(!shielded.saw_cancel);
  shielded.go = 1;
  ck_assert_int_eq(uva_await(sh, NULL), 1); /* ran on behind its shield */
  ck_assert_int_eq(values_live, 0);
  return 0;
}

START_TEST(test_gather_of_wait_for_and_shield_cancels_through) {
  ck_assert_int_eq(run_test(nested_main), 0);
}
END_TEST

static int pending_gather(void *arg) {
  (void)arg;
  uva_future_t *fs[2] = {uva_spawn(sleep_ms_task, MS(FOREVER_MS)), uva_future_new()};
  return uva_await(uva_gather(fs, 2, 0), NULL);
}
static int pending_wait(void *arg) {
  (void)arg;
  uva_future_t *fs[2] = {uva_spawn(sleep_ms_task, MS(FOREVER_MS)), uva_future_new()};
  int rc = uva_await(uva_wait(fs, 2, UVA_ALL_COMPLETED, FOREVER_MS), NULL);
  uva_release(fs[0]);
  uva_release(fs[1]);
  return rc;
}
static int pending_scope(void *arg) {
  (void)arg;
  uva_timeout_t to;
  uva_timeout_enter(&to, FOREVER_MS);
  int rc = uva_await(
      uva_wait_for(uva_shield(uva_spawn(sleep_ms_task, MS(FOREVER_MS))), FOREVER_MS), NULL);
  return uva_timeout_exit(&to, rc);
}
static int pending_group(void *arg) {
  (void)arg;
  uva_group_t *g = uva_group_new();
  uva_group_spawn(g, sleep_ms_task, MS(FOREVER_MS), NULL);
  uva_group_spawn(g, pending_gather, NULL, NULL);
  return uva_group_join(g);
}

static int close_main(void *arg) {
  (void)arg;
  uva_task_fn fns[4] = {pending_gather, pending_wait, pending_scope, pending_group};
  for (int i = 0; i < 4; i++) uva_release(uva_spawn(fns[i], NULL));
  settle(); /* each is in its combinator, none can end by itself */
  return 0; /* uva_run cancels them all; RUN_MAIN checks nothing leaked */
}

START_TEST(test_loop_close_with_pending_combinators_frees_everything) {
  ck_assert_int_eq(run_test(close_main), 0);
}
END_TEST

/* ---------------------------------------------- allocation failures */

static int scenario_gather_wait_for(void) {
  uva_future_t *fs[3] = {uva_spawn(sleep_ms_task, MS(2)), uva_spawn(sleep_ms_task, MS(1)),
                         uva_spawn(sleep_ms_task, MS(3))};
  void *v;
  int rc = uva_await(uva_gather(fs, 3, 0), &v);
  if (rc < 0) return rc;
  uva_results_t *r = v;
  ck_assert_int_eq(r->item[0].status, 2);
  ck_assert_int_eq(r->item[1].status, 1);
  ck_assert_int_eq(r->item[2].status, 3);
  uva_results_free(r);
  uva_future_t *gs[2] = {uva_spawn(fail_after, MS(1)), uva_spawn(sleep_ms_task, MS(2))};
  rc = uva_await(uva_gather(gs, 2, UVA_RETURN_EXCEPTIONS), &v);
  if (rc < 0) return rc;
  uva_results_free(v);
  rc = uva_await(uva_wait_for(uva_spawn(sleep_ms_task, MS(5000)), 3), NULL);
  if (rc != UV_ETIMEDOUT) return rc < 0 ? rc : -1;
  rc = uva_await(uva_wait_for(uva_spawn(sleep_ms_task, MS(1)), FOREVER_MS), NULL);
  return rc < 0 ? rc : 0;
}

static int scenario_others(void) {
  int rc;
  /* wait */
  uva_future_t *fs[2] = {uva_spawn(sleep_ms_task, MS(1)), uva_spawn(sleep_ms_task, MS(5000))};
  if (fs[0] && fs[1]) {
    rc = uva_await(uva_wait(fs, 2, UVA_FIRST_COMPLETED, 1000), NULL);
  } else {
    rc = UV_ENOMEM;
  }
  uva_cancel(fs[1]);
  uva_release(fs[0]);
  uva_release(fs[1]);
  if (rc < 0) return rc;
  /* shield */
  if ((rc = uva_await(uva_shield(uva_spawn(sleep_ms_task, MS(1))), NULL)) < 0) return rc;
  /* as_completed */
  uva_future_t *as[2] = {uva_spawn(sleep_ms_task, MS(1)), uva_spawn(sleep_ms_task, MS(5000))};
  uva_as_completed_t *it = uva_as_completed(as, 2, 20);
  if (it == NULL) return UV_ENOMEM;
  void *f;
  rc = uva_await(uva_as_completed_next(it), &f);
  if (rc == 0) rc = uva_await(f, NULL);
  if (rc >= 0 || rc == UV_ETIMEDOUT) /* a slow (sanitized) loop may time out */
    rc = uva_await(uva_as_completed_next(it), NULL);
  if (rc == UV_ETIMEDOUT) rc = 0;
  uva_as_completed_free(it);
  if (rc < 0) return rc;
  /* timeout scope */
  uva_timeout_t to;
  if ((rc = uva_timeout_enter(&to, 2)) < 0) return rc;
  rc = uva_timeout_exit(&to, uva_await(uva_sleep(5000), NULL));
  if (rc != UV_ETIMEDOUT) return rc < 0 ? rc : -1;
  /* group */
  uva_group_t *g = uva_group_new();
  if (g == NULL) return UV_ENOMEM;
  rc = uva_group_spawn(g, sleep_ms_task, MS(1), NULL);
  if (rc == 0) rc = uva_group_spawn(g, sleep_ms_task, MS(2), NULL);
  int jr = uva_group_join(g);
  return rc < 0 ? rc : jr;
}

/* One run per n, each on a fresh loop whose free lists are empty, so every
 * future, callback node and task really comes from the allocator. */
static int (*alloc_scenario)(void);
static int alloc_clean; /* the last run made fewer than n allocations */

static int alloc_fail_main(void *arg) {
  long n = *(long *)arg;
  long before = uva_test_alloc_count();
  uva_test_alloc_fail_after(n);
  int rc = alloc_scenario();
  uva_test_alloc_fail_after(-1);
  long made = uva_test_alloc_count() - before;
  ck_assert_msg(rc == 0 || rc == UV_ENOMEM, "n=%ld: rc=%d (%s)", n, rc, uva_err_name(rc));
  alloc_clean = rc == 0 && made < n;
  return 0; /* what is left running is cancelled by uva_run */
}

static void alloc_fail_all(void) {
  long n;
  for (n = 0; n < 5000; n++) {
    ck_assert_int_eq(run_test_arg(alloc_fail_main, &n), 0);
    if (alloc_clean) break;
  }
  ck_assert_msg(alloc_clean, "never ran without an injected failure");
  ck_assert_int_gt(n, 10);
}

START_TEST(test_alloc_failure_in_gather_and_wait_for_is_an_error_not_a_leak) {
  alloc_scenario = scenario_gather_wait_for;
  alloc_fail_all();
}
END_TEST

START_TEST(test_alloc_failure_in_other_combinators_is_an_error_not_a_leak) {
  alloc_scenario = scenario_others;
  alloc_fail_all();
}
END_TEST

/* -------------------------------------------------------------- suite */

/* A task that returns with a scope still entered: the scope's deadline
 * must not fire into the dead (and reused) stack. */
static int leaves_scope_entered(void *arg) {
  (void)arg;
  uva_timeout_t to;
  uva_timeout_enter(&to, 20);
  return 3; /* no uva_timeout_exit */
}
static int stack_smasher(void *arg) {
  (void)arg;
  volatile char junk[512];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)0xAA;
  return uva_await(uva_sleep(60), NULL) + junk[0] - (char)0xAA;
}
static int scope_left_by_returning_task(void *arg) {
  (void)arg;
  ck_assert_int_eq(uva_await(uva_spawn(leaves_scope_entered, NULL), NULL), 3);
  /* reuses the same stack, then outlives the abandoned deadline */
  ck_assert_int_eq(uva_await(uva_spawn(stack_smasher, NULL), NULL), 0);
  return 0;
}
START_TEST(test_timeout_left_entered_by_returning_task_is_stopped) {
  ck_assert_int_eq(RUN_MAIN(scope_left_by_returning_task, NULL), 0);
}
END_TEST

static void count_done_cb(uva_future_t *f, void *data) {
  ck_assert_int_eq(uva_future_status(f), UVA_ENOLOOP);
  (*(int *)data)++;
}

/* A future made on a thread with no loop (the static UVA_ENOLOOP one) is
 * "safe to await, read and release anywhere": handed to a combinator on a
 * thread that has a loop, it is a child that failed with UVA_ENOLOOP. */
static void make_noloop(void *arg) { *(uva_future_t **)arg = uva_future_new(); }

static uva_future_t *noloop_future(void) {
  uv_thread_t th;
  uva_future_t *f = NULL;
  ck_assert_int_eq(uv_thread_create(&th, make_noloop, &f), 0);
  ck_assert_int_eq(uv_thread_join(&th), 0);
  ck_assert_int_eq(uva_future_status(f), UVA_ENOLOOP);
  return f;
}

TASK_TEST(test_noloop_future_in_combinators) {
  void *v;
  uva_future_t *fs[2] = {noloop_future(), uva_sleep(1)};
  ck_assert_int_eq(uva_await(uva_gather(fs, 2, 0), NULL), UVA_ENOLOOP);
  fs[0] = noloop_future();
  fs[1] = uva_spawn(sleep_ms_task, MS(1));
  ck_assert_int_eq(uva_await(uva_gather(fs, 2, UVA_RETURN_EXCEPTIONS), &v), 0);
  ck_assert_int_eq(((uva_results_t *)v)->item[0].status, UVA_ENOLOOP);
  ck_assert_int_eq(((uva_results_t *)v)->item[1].status, 1);
  uva_results_free(v);
  fs[0] = noloop_future();
  fs[1] = uva_sleep(FOREVER_MS);
  ck_assert_int_eq(uva_await(uva_wait(fs, 2, UVA_FIRST_COMPLETED, -1), NULL), 1);
  uva_release(fs[1]);
  ck_assert_int_eq(uva_await(uva_wait_for(noloop_future(), FOREVER_MS), NULL), UVA_ENOLOOP);
  ck_assert_int_eq(uva_await(uva_shield(noloop_future()), NULL), UVA_ENOLOOP);
  uva_release(uva_wait_for(noloop_future(), FOREVER_MS)); /* dropped at once */
  uva_release(uva_shield(noloop_future()));
  uva_future_t *as[1] = {noloop_future()};
  uva_as_completed_t *it = uva_as_completed(as, 1, -1);
  ck_assert_ptr_nonnull(it);
  ck_assert_int_eq(uva_await(uva_as_completed_next(it), &v), 0);
  ck_assert_int_eq(uva_await(v, NULL), UVA_ENOLOOP);
  uva_as_completed_free(it);
  int ran = 0;
  ck_assert_int_eq(uva_future_on_done(noloop_future(), count_done_cb, &ran), 0);
  settle();
  ck_assert_int_eq(ran, 1);
  return 0;
}

static Suite *suite(void) {
  Suite *s = suite_create("combine");
  TCase *tc = tcase_create("gather");
  tcase_add_test(tc, test_gather_results_in_given_order);
  tcase_add_test(tc, test_gather_value_can_be_stolen_from_results);
  tcase_add_test(tc, test_gather_empty_completes_at_once);
  tcase_add_test(tc, test_gather_first_error_fails_at_once);
  tcase_add_test(tc, test_gather_return_exceptions_collects_errors);
  tcase_add_test(tc, test_gather_null_child_fails_with_enomem);
  tcase_add_test(tc, test_gather_cancel_cancels_children);
  tcase_add_test(tc, test_gather_awaiting_task_cancel_cancels_children);
  tcase_add_test(tc, test_gather_10000_tasks);
  tcase_add_test(tc, test_gather_200000_futures_linear);
  tcase_add_test(tc, test_gather_release_while_pending_frees_everything);
  tcase_add_test(tc, test_gather_bad_arguments_consume_and_fail_einval);
  tcase_add_test(tc, test_gather_cancel_after_children_done_is_refused);
  tcase_add_test(tc, test_gather_cancelled_after_a_child_got_an_item_loses_nothing);
  tcase_add_test(tc, test_gather_cancelled_after_collecting_a_value_keeps_it);
  suite_add_tcase(s, tc);

  tc = tcase_create("wait");
  tcase_add_test(tc, test_wait_all_completed);
  tcase_add_test(tc, test_wait_first_completed);
  tcase_add_test(tc, test_wait_first_exception);
  tcase_add_test(tc, test_wait_timeout_reports_done_and_leaves_pending);
  tcase_add_test(tc, test_wait_cancel_cancels_only_the_wait);
  tcase_add_test(tc, test_wait_on_done_futures_and_release_pending_wait);
  tcase_add_test(tc, test_wait_bad_arguments_einval);
  suite_add_tcase(s, tc);

  tc = tcase_create("wait_for");
  tcase_add_test(tc, test_wait_for_success_passes_result_and_value);
  tcase_add_test(tc, test_wait_for_timeout_cancels_and_awaits_inner);
  tcase_add_test(tc, test_wait_for_result_arriving_during_cancel_is_not_lost);
  tcase_add_test(tc, test_wait_for_outer_cancel_stays_cancelled);
  tcase_add_test(tc, test_wait_for_outer_cancel_result_from_inner_wins);
  tcase_add_test(tc, test_wait_for_zero_timeout_and_edge_cases);
  suite_add_tcase(s, tc);

  tc = tcase_create("shield");
  tcase_add_test(tc, test_shield_mirrors_result);
  tcase_add_test(tc, test_shield_cancel_leaves_inner_running);
  tcase_add_test(tc, test_shield_cancelled_after_inner_result_loses_nothing);
  tcase_add_test(tc, test_wait_for_cancelled_after_inner_hand_off_gives_it_back);
  suite_add_tcase(s, tc);

  tc = tcase_create("as_completed");
  tcase_add_test(tc, test_as_completed_yields_in_completion_order);
  tcase_add_test(tc, test_as_completed_next_called_ahead_of_time);
  tcase_add_test(tc, test_as_completed_timeout);
  tcase_add_test(tc, test_as_completed_free_releases_what_was_not_handed_out);
  suite_add_tcase(s, tc);

  tc = tcase_create("timeout");
  tcase_add_test(tc, test_timeout_expiry_gives_etimedout);
  tcase_add_test(tc, test_timeout_not_expiring_passes_result);
  tcase_add_test(tc, test_timeout_nested_inner_expires);
  tcase_add_test(tc, test_timeout_nested_outer_expires);
  tcase_add_test(tc, test_timeout_outer_cancel_stays_cancelled);
  tcase_add_test(tc, test_timeout_reschedule_moves_deadline);
  tcase_add_test(tc, test_timeout_zero_expires_at_once);
  tcase_add_test(tc, test_timeout_at_and_reschedule_at);
  tcase_add_test(tc, test_wait_for_zero_never_starts_a_task);
  tcase_add_test(tc, test_timeout_unseen_expiry_is_withdrawn);
  tcase_add_test(tc, test_timeout_outside_task_is_enotask);
  tcase_add_test(tc, test_timeout_around_gather_cancels_children);
  tcase_add_test(tc, test_timeout_left_entered_by_returning_task_is_stopped);
  tcase_add_test(tc, test_late_cancel_survives_a_scope_that_withdraws_its_own_cancel);
  suite_add_tcase(s, tc);

  tc = tcase_create("group");
  tcase_add_test(tc, test_group_all_succeed);
  tcase_add_test(tc, test_group_cancel_from_its_body);
  tcase_add_test(tc, test_group_cancel_from_a_child_stops_the_body);
  tcase_add_test(tc, test_group_cancel_keeps_an_outside_cancel);
  tcase_add_test(tc, test_group_task_can_spawn_sibling_during_join);
  tcase_add_test(tc, test_group_failure_cancels_siblings_and_reports_first_error);
  tcase_add_test(tc, test_group_join_cancelled_cancels_and_awaits_children);
  tcase_add_test(tc, test_group_join_outside_task_cancels_and_frees);
  suite_add_tcase(s, tc);

  tc = tcase_create("mixed");
  tcase_add_test(tc, test_gather_of_wait_for_and_shield_cancels_through);
  tcase_add_test(tc, test_loop_close_with_pending_combinators_frees_everything);
  tcase_add_test(tc, test_noloop_future_in_combinators);
  suite_add_tcase(s, tc);

  tc = tcase_create("alloc");
  tcase_add_test(tc, test_alloc_failure_in_gather_and_wait_for_is_an_error_not_a_leak);
  tcase_add_test(tc, test_alloc_failure_in_other_combinators_is_an_error_not_a_leak);
  suite_add_tcase(s, tc);
  return s;
}

TEST_MAIN(suite)
