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
