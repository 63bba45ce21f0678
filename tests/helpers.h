/* Test helpers shared by every suite.
 *
 * RUN_MAIN(fn, arg) runs fn as the main task under uva_run and then fails
 * the test if any allocation made through the library is still live: a
 * leak on any path (success, error, cancellation) is a test failure. */
#ifndef UVA_TEST_HELPERS_H
#define UVA_TEST_HELPERS_H

#include <check.h>
#include <stdlib.h>
#include <uvasync.h>

long uva_test_alloc_live(void);
void uva_test_alloc_fail_after(long n);
long uva_test_alloc_count(void);

static inline int run_main_(uva_task_fn fn, void *arg, const char *file, int line) {
  long live_before = uva_test_alloc_live();
  int rc = uva_run(fn, arg);
  long leaked = uva_test_alloc_live() - live_before;
  ck_assert_msg(leaked == 0, "%s:%d: leak: %ld library allocations still live after uva_run",
                file, line, leaked);
  return rc;
}
#define RUN_MAIN(fn, arg) run_main_((fn), (arg), __FILE__, __LINE__)

/* A test whose body runs as the main task under RUN_MAIN:
 *   TASK_TEST(test_x) { ...; return 0; }  */
#define TASK_TEST(name)                                                     \
  static int name##_body(void);                                             \
  static int name##_main(void *arg) {                                       \
    (void)arg;                                                              \
    return name##_body();                                                   \
  }                                                                         \
  START_TEST(name) { ck_assert_int_eq(RUN_MAIN(name##_main, NULL), 0); }    \
  END_TEST                                                                  \
  static int name##_body(void)

/* Let every ready task run until it blocks. */
static inline void settle(void) {
  for (int i = 0; i < 4; i++) ck_assert_int_eq(uva_yield(), 0);
}

/* Tests wait on events, never on time: a test that needs something to
 * have happened (a task in its await, a connection accepted, a counter
 * reached) waits for exactly that, with no bound of its own. If the event
 * never comes, Check's per-test timeout (CK_DEFAULT_TIMEOUT, times
 * CK_TIMEOUT_MULTIPLIER) fails the test; a fixed bound would also fail it
 * on a machine that is merely slow (valgrind runs the suite ~10x slower,
 * and CI shares 2 CPUs).
 *
 * WAIT_UNTIL(cond) lets the loop run in 1 ms naps until cond holds: a nap
 * rather than uva_yield, because what is awaited may be another thread or
 * process, which a loop spinning on yields would starve of CPU. */
#define WAIT_UNTIL(cond)                                                    \
  do {                                                                      \
    while (!(cond)) ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0);     \
  } while (0)

/* A delay no test outlives (a day): for what must not happen by itself
 * during a test (a sleep that only a cancel may end, a deadline that must
 * not expire first). Anything that would wait for it is failed by the
 * Check timeout instead of passing late. */
#define FOREVER_MS 86400000

/* Build a suite runner main() from a function returning a Suite. */
#define TEST_MAIN(suite_fn)                                       \
  int main(void) {                                                \
    SRunner *sr = srunner_create(suite_fn());                     \
    srunner_run_all(sr, CK_NORMAL);                               \
    int failed = srunner_ntests_failed(sr);                       \
    srunner_free(sr);                                             \
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;             \
  }

#endif
