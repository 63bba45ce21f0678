/* Futures: states, results and their ownership, done callbacks. */
#include "helpers.h"

#include <string.h>

static int frees;
static void count_free(void *p) { frees++; free(p); }

static int one_liner_await_does_not_leak(void *arg) {
  (void)arg;
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0);
  ck_assert_int_eq(uva_await(uva_future_done_with(5), NULL), 5);
  ck_assert_int_eq(uva_await(uva_future_done_with(UV_EIO), NULL), UV_EIO);
  return 0;
}
START_TEST(test_one_liner_await_does_not_leak) {
  ck_assert_int_eq(RUN_MAIN(one_liner_await_does_not_leak, NULL), 0);
}
END_TEST

static int unread_result_is_freed(void *arg) {
  (void)arg;
  frees = 0;
  uva_future_t *f = uva_future_new();
  ck_assert_int_eq(uva_future_resolve(f, 0, strdup("x"), count_free), 0);
  uva_release(f); /* nobody read it */
  ck_assert_int_eq(frees, 1);
  f = uva_future_new();
  uva_future_resolve(f, 0, strdup("y"), count_free);
  ck_assert_int_eq(uva_await(f, NULL), 0); /* out NULL: freed with f */
  ck_assert_int_eq(frees, 2);
  return 0;
}
START_TEST(test_unread_result_is_freed) { ck_assert_int_eq(RUN_MAIN(unread_result_is_freed, NULL), 0); }
END_TEST

static int await_moves_value_to_caller(void *arg) {
  (void)arg;
  frees = 0;
  uva_future_t *f = uva_future_new();
  uva_future_resolve(f, 3, strdup("hello"), count_free);
  void *v = NULL;
  ck_assert_int_eq(uva_await(f, &v), 3);
  ck_assert_str_eq(v, "hello");
  ck_assert_int_eq(frees, 0);
  free(v);
  return 0;
}
START_TEST(test_await_moves_value_to_caller) { ck_assert_int_eq(RUN_MAIN(await_moves_value_to_caller, NULL), 0); }
END_TEST

static int resolve_twice_is_rejected_and_frees_value(void *arg) {
  (void)arg;
  frees = 0;
  uva_future_t *f = uva_future_new();
  ck_assert_int_eq(uva_future_resolve(f, 0, NULL, NULL), 0);
  ck_assert_int_eq(uva_future_resolve(f, 0, strdup("late"), count_free), UV_EINVAL);
  ck_assert_int_eq(frees, 1);
  ck_assert_int_eq(uva_future_fail(f, UV_EIO), UV_EINVAL);
  uva_future_t *g = uva_future_new();
  ck_assert_int_eq(uva_future_resolve(g, -1, strdup("neg"), count_free), UV_EINVAL);
  ck_assert_int_eq(frees, 2);
  ck_assert(!uva_future_is_done(g));
  uva_release(g);
  uva_release(f);
  return 0;
}
START_TEST(test_resolve_twice_is_rejected_and_frees_value) {
  ck_assert_int_eq(RUN_MAIN(resolve_twice_is_rejected_and_frees_value, NULL), 0);
}
END_TEST

static int states_are_reported(void *arg) {
  (void)arg;
  uva_future_t *f = uva_future_new();
  ck_assert(!uva_future_is_done(f));
  ck_assert_int_eq(uva_future_status(f), UVA_EPENDING);
  ck_assert_int_eq(uva_cancel(f), 1);
  ck_assert(uva_future_is_done(f));
  ck_assert(uva_future_is_cancelled(f));
  ck_assert_int_eq(uva_cancel(f), 0); /* done already */
  ck_assert_int_eq(uva_future_status(f), UV_ECANCELED);
  uva_release(f);
  ck_assert_int_eq(uva_cancel(NULL), 0);
  ck_assert_int_eq(uva_future_status(NULL), UV_ENOMEM);
  return 0;
}
START_TEST(test_states_are_reported) { ck_assert_int_eq(RUN_MAIN(states_are_reported, NULL), 0); }
END_TEST

static int calls;
static int order[8];
static void on_done(uva_future_t *f, void *data) {
  order[calls++] = (int)(intptr_t)data;
  ck_assert(uva_future_is_done(f));
}

static int done_callbacks_never_run_inline(void *arg) {
  (void)arg;
  calls = 0;
  uva_future_t *f = uva_future_new();
  uva_future_on_done(f, on_done, (void *)1);
  uva_future_on_done(f, on_done, (void *)2);
  uva_future_on_done(f, on_done, (void *)3);
  ck_assert_int_eq(uva_future_off_done(f, on_done, (void *)2), 1);
  uva_future_resolve(f, 0, NULL, NULL);
  ck_assert_int_eq(calls, 0); /* queued, not run */
  uva_future_on_done(f, on_done, (void *)4); /* already done: queued too */
  ck_assert_int_eq(calls, 0);
  uva_release(f); /* registrations keep it alive */
  uva_yield();
  ck_assert_int_eq(calls, 3);
  ck_assert_int_eq(order[0], 1);
  ck_assert_int_eq(order[1], 3);
  ck_assert_int_eq(order[2], 4);
  return 0;
}
START_TEST(test_done_callbacks_never_run_inline) {
  ck_assert_int_eq(RUN_MAIN(done_callbacks_never_run_inline, NULL), 0);
}
END_TEST

/* Callback-style users never write a task: a future and a loop suffice. */
static void chain(uva_future_t *f, void *data) {
  (void)f;
  *(int *)data += 1;
}
START_TEST(test_callback_style_without_tasks) {
  long live = uva_test_alloc_live();
  uva_loop_t *loop;
  ck_assert_int_eq(uva_loop_new(&loop), 0);
  int hits = 0;
  uva_future_t *s = uva_sleep(5);
  ck_assert_int_eq(uva_future_on_done(s, chain, &hits), 0);
  ck_assert_int_eq(uva_loop_run_until(loop, s), 0);
  uva_future_t *p = uva_future_new();
  ck_assert_int_eq(uva_future_on_done(p, chain, &hits), 0);
  int before = hits;
  uva_future_resolve(p, 0, NULL, NULL);
  ck_assert_int_eq(hits, before); /* p's callback did not run inside resolve */
  uva_future_t *y = uva_sleep(0);
  uva_loop_run_until(loop, y);
  ck_assert_int_eq(hits, 2); /* both ran from the loop */
  uva_release(s);
  uva_release(p);
  uva_release(y);
  ck_assert_int_eq(uva_loop_close(loop), 0);
  ck_assert_int_eq(uva_test_alloc_live(), live);
}
END_TEST

START_TEST(test_null_future_is_enomem_everywhere) {
  ck_assert_int_eq(uva_await(NULL, NULL), UV_ENOMEM);
  ck_assert_int_eq(uva_future_on_done(NULL, on_done, NULL), UV_ENOMEM);
  ck_assert_int_eq(uva_future_off_done(NULL, on_done, NULL), 0);
  uva_release(NULL);
  /* no loop on this thread: a future failed with UVA_ENOLOOP, not NULL
   * (which reads as UV_ENOMEM) */
  ck_assert_int_eq(uva_future_status(uva_future_new()), UVA_ENOLOOP);
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), UVA_ENOLOOP);
  ck_assert_int_eq(uva_await(uva_spawn(NULL, NULL), NULL), UVA_ENOLOOP);
}
END_TEST

START_TEST(test_strerror_covers_own_and_libuv_codes) {
  ck_assert_str_eq(uva_strerror(UVA_ENOTASK), "operation must be called from inside a task");
  ck_assert_str_eq(uva_err_name(UVA_ESHUTDOWN), "UVA_ESHUTDOWN");
  ck_assert_str_eq(uva_err_name(UV_ECANCELED), "ECANCELED");
  ck_assert_ptr_nonnull(uva_strerror(-123456)); /* unknown: no leak, no NULL */
  ck_assert_str_eq(uva_strerror(0), "success");
}
END_TEST

static int sleepy(void *arg) {
  (void)arg;
  int rc = uva_await(uva_sleep(1), NULL);
  return rc == UV_ENOMEM ? rc : 7;
}

static int alloc_failures_become_errors(void *arg) {
  (void)arg;
  for (long n = 0; n < 6; n++) {
    uva_test_alloc_fail_after(n);
    int rc = uva_await(uva_sleep(1), NULL);
    uva_future_t *t = uva_spawn(sleepy, NULL);
    int rt = uva_await(t, NULL);
    uva_test_alloc_fail_after(-1);
    ck_assert(rc == 0 || rc == UV_ENOMEM);
    ck_assert(rt == 7 || rt == UV_ENOMEM);
  }
  return 0;
}
START_TEST(test_alloc_failures_become_errors) {
  /* Warm the free lists first so failures hit the malloc paths too. */
  ck_assert_int_eq(RUN_MAIN(alloc_failures_become_errors, NULL), 0);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("future");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_one_liner_await_does_not_leak);
  tcase_add_test(tc, test_unread_result_is_freed);
  tcase_add_test(tc, test_await_moves_value_to_caller);
  tcase_add_test(tc, test_resolve_twice_is_rejected_and_frees_value);
  tcase_add_test(tc, test_states_are_reported);
  tcase_add_test(tc, test_done_callbacks_never_run_inline);
  tcase_add_test(tc, test_callback_style_without_tasks);
  tcase_add_test(tc, test_null_future_is_enomem_everywhere);
  tcase_add_test(tc, test_strerror_covers_own_and_libuv_codes);
  tcase_add_test(tc, test_alloc_failures_become_errors);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
