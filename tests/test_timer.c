/* Time: sleeps share one deadline heap; sleep(0) yields to I/O. */
#include "helpers.h"

#include <time.h>

static int fired[8], nfired;
static int sleeper(void *arg) {
  int ms = (int)(intptr_t)arg;
  int rc = uva_await(uva_sleep((uint64_t)ms), NULL);
  if (rc == 0) { if (nfired < 8) fired[nfired] = ms; nfired++; }
  return rc;
}
static int sleeps_fire_in_deadline_order(void *arg) {
  (void)arg;
  nfired = 0;
  int ms[] = {30, 10, 20, 10, 0};
  uva_future_t *fs[5];
  for (int i = 0; i < 5; i++) fs[i] = uva_spawn(sleeper, (void *)(intptr_t)ms[i]);
  for (int i = 0; i < 5; i++) ck_assert_int_eq(uva_await(fs[i], NULL), 0);
  ck_assert_int_eq(nfired, 5);
  int want[] = {0, 10, 10, 20, 30};
  for (int i = 0; i < 5; i++) ck_assert_int_eq(fired[i], want[i]);
  return 0;
}
START_TEST(test_sleeps_fire_in_deadline_order) {
  ck_assert_int_eq(RUN_MAIN(sleeps_fire_in_deadline_order, NULL), 0);
}
END_TEST

/* A turn that runs long (here a task blocks the loop for 30 ms) lets a
 * 10 ms sleep come due by the next turn; a sleep(0) made in the same turn
 * still resumes first, as in asyncio (it was queued before the timer). */
static int blocker(void *arg) {
  (void)arg;
  struct timespec ts = {0, 30 * 1000 * 1000};
  nanosleep(&ts, NULL);
  return 0;
}
static int sleep0_goes_before_timers_due_meanwhile(void *arg) {
  (void)arg;
  nfired = 0;
  uva_future_t *a = uva_spawn(sleeper, (void *)(intptr_t)10);
  uva_future_t *b = uva_spawn(sleeper, (void *)(intptr_t)0);
  uva_future_t *c = uva_spawn(blocker, NULL); /* the same turn, after them */
  ck_assert_int_eq(uva_await(a, NULL), 0);
  ck_assert_int_eq(uva_await(b, NULL), 0);
  ck_assert_int_eq(uva_await(c, NULL), 0);
  ck_assert_int_eq(nfired, 2);
  ck_assert_int_eq(fired[0], 0);
  ck_assert_int_eq(fired[1], 10);
  return 0;
}
START_TEST(test_sleep0_goes_before_timers_due_meanwhile) {
  ck_assert_int_eq(RUN_MAIN(sleep0_goes_before_timers_due_meanwhile, NULL), 0);
}
END_TEST

static int sleep_waits_at_least_its_time(void *arg) {
  (void)arg;
  /* Deadlines are in loop time (uv_now, cached per turn), as in libuv and
   * asyncio: measured on that clock, a sleep never ends early. */
  uint64_t t0 = uva_now();
  ck_assert_int_eq(uva_await(uva_sleep(50), NULL), 0);
  ck_assert_uint_ge(uva_now() - t0, 50);
  return 0;
}
START_TEST(test_sleep_waits_at_least_its_time) {
  ck_assert_int_eq(RUN_MAIN(sleep_waits_at_least_its_time, NULL), 0);
}
END_TEST

/* A task that computes before it sleeps (no await in between, so the
 * loop's cached time is from before the work): the sleep still lasts its
 * full time from the call, on the real clock. It lasted 56-62 ms of 100
 * when deadlines were counted from the cached time. A lower bound only:
 * a slow machine makes it longer, never shorter. */
static int sleep_after_busy_work_lasts_from_the_call(void *arg) {
  (void)arg;
  ck_assert_int_eq(uva_yield(), 0); /* start of a fresh turn */
  uint64_t busy = uv_hrtime();
  while (uv_hrtime() - busy < 40 * 1000000u) {
  }
  uint64_t t0 = uv_hrtime();
  ck_assert_int_eq(uva_await(uva_sleep(100), NULL), 0);
  ck_assert_uint_ge(uv_hrtime() - t0, 100 * 1000000u);
  for (int i = 0; i < 20; i++) { /* and at ms granularity */
    t0 = uv_hrtime();
    ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0);
    ck_assert_uint_ge(uv_hrtime() - t0, 1000000u);
  }
  return 0;
}
START_TEST(test_sleep_after_busy_work_lasts_from_the_call) {
  ck_assert_int_eq(RUN_MAIN(sleep_after_busy_work_lasts_from_the_call, NULL), 0);
}
END_TEST

static int cancelled_sleeps_leave_the_heap(void *arg) {
  (void)arg;
  /* Many sleeps cancelled out of order, then released unawaited. Their
   * deadlines are a day away: a 5 ms sleep held up by them would never
   * end (the Check timeout fails the test), however slow the machine. */
  enum { N = 1000 };
  static uva_future_t *fs[N];
  for (int i = 0; i < N; i++) fs[i] = uva_sleep((uint64_t)(FOREVER_MS + (i * 7919) % 5000));
  for (int i = 0; i < N; i += 2) ck_assert_int_eq(uva_cancel(fs[i]), 1);
  for (int i = 0; i < N; i++) uva_release(fs[i]); /* pending ones leave the heap */
  ck_assert_int_eq(uva_await(uva_sleep(5), NULL), 0); /* not held up by them */
  return 0;
}
START_TEST(test_cancelled_and_released_sleeps_leave_the_heap) {
  ck_assert_int_eq(RUN_MAIN(cancelled_sleeps_leave_the_heap, NULL), 0);
}
END_TEST

static int spinner_turns;
static int spinner(void *arg) {
  int *stop = arg;
  while (!*stop) {
    spinner_turns++;
    uva_yield();
  }
  return 0;
}
static int yield_lets_timers_and_io_run(void *arg) {
  (void)arg;
  int stop = 0;
  spinner_turns = 0;
  uva_future_t *t = uva_spawn(spinner, &stop);
  /* A task that yields forever must not starve the timer. */
  ck_assert_int_eq(uva_await(uva_sleep(20), NULL), 0);
  stop = 1;
  ck_assert_int_eq(uva_await(t, NULL), 0);
  ck_assert_int_gt(spinner_turns, 1);
  return 0;
}
START_TEST(test_yield_lets_timers_run) { ck_assert_int_eq(RUN_MAIN(yield_lets_timers_and_io_run, NULL), 0); }
END_TEST

static int many_concurrent_sleeps(void *arg) {
  (void)arg;
  enum { N = 20000 };
  static uva_future_t *fs[N];
  for (int i = 0; i < N; i++) fs[i] = uva_spawn(sleeper, (void *)(intptr_t)((i * 7919) % 50 + 1));
  nfired = 0;
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(uva_await(fs[i], NULL), 0);
    nfired = 0; /* the log holds 8; only the count matters here */
  }
  return 0;
}
START_TEST(test_many_concurrent_sleeps) { ck_assert_int_eq(RUN_MAIN(many_concurrent_sleeps, NULL), 0); }
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("timer");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_sleeps_fire_in_deadline_order);
  tcase_add_test(tc, test_sleep0_goes_before_timers_due_meanwhile);
  tcase_add_test(tc, test_sleep_waits_at_least_its_time);
  tcase_add_test(tc, test_sleep_after_busy_work_lasts_from_the_call);
  tcase_add_test(tc, test_cancelled_and_released_sleeps_leave_the_heap);
  tcase_add_test(tc, test_yield_lets_timers_run);
  tcase_add_test(tc, test_many_concurrent_sleeps);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
