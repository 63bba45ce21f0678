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
  ck_assert_int_eq(uva_loop_close(loop), 0); /* never ran: dropped */
  ck_assert_int_eq(uva_tsfuture_wait(t, 0, NULL), UVA_ECLOSED);
  uva_tsfuture_free(t);
  ck_assert_int_eq(uva_call_threadsafe(NULL, on_loop, NULL), UV_EINVAL);
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
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
