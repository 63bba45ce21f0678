/* Signals as futures. */
#include "helpers.h"

#include <signal.h>
#include <unistd.h>

static int raiser(void *arg) {
  uva_await(uva_sleep(10), NULL);
  uv_kill(uv_os_getpid(), (int)(intptr_t)arg);
  return 0;
}

TASK_TEST(test_signal_wait_completes_with_the_signal) {
  uva_future_t *r = uva_spawn(raiser, (void *)SIGUSR1);
  ck_assert_int_eq(uva_await(uva_signal_wait(SIGUSR1), NULL), SIGUSR1);
  ck_assert_int_eq(uva_await(r, NULL), 0);
  /* one-shot: a second wait needs a second signal */
  r = uva_spawn(raiser, (void *)SIGUSR2);
  ck_assert_int_eq(uva_await(uva_signal_wait(SIGUSR2), NULL), SIGUSR2);
  ck_assert_int_eq(uva_await(r, NULL), 0);
  return 0;
}

TASK_TEST(test_signal_wait_cancel_and_bad_signal) {
  uva_future_t *f = uva_signal_wait(SIGUSR1);
  ck_assert_int_eq(uva_cancel(f), 1);
  ck_assert_int_eq(uva_await(f, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(uva_signal_wait(0), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_signal_wait(SIGKILL), NULL), UV_EINVAL);
  /* released unawaited: the handle is closed, nothing leaks */
  uva_release(uva_signal_wait(SIGHUP));
  return 0;
}

/* While a task awaits SIGINT, Ctrl-C is the task's, not main's cancel. */
TASK_TEST(test_awaited_sigint_does_not_cancel_main) {
  uva_future_t *r = uva_spawn(raiser, (void *)SIGINT);
  ck_assert_int_eq(uva_await(uva_signal_wait(SIGINT), NULL), SIGINT);
  ck_assert_int_eq(uva_await(r, NULL), 0);
  ck_assert_int_eq(uva_await(uva_sleep(5), NULL), 0); /* main was not cancelled */
  return 0;
}

static Suite *suite(void) {
  Suite *s = suite_create("signal");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_signal_wait_completes_with_the_signal);
  tcase_add_test(tc, test_signal_wait_cancel_and_bad_signal);
  tcase_add_test(tc, test_awaited_sigint_does_not_cancel_main);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
