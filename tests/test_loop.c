/* The loop: uva_run, attaching to an application's uv_loop_t,
 * run_until_complete, shutdown and Ctrl-C. */
#include "helpers.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int returns_arg(void *arg) { return (int)(intptr_t)arg; }

START_TEST(test_run_returns_main_status) {
  ck_assert_int_eq(RUN_MAIN(returns_arg, (void *)17), 17);
  ck_assert_int_eq(RUN_MAIN(returns_arg, (void *)(intptr_t)UV_EPIPE), UV_EPIPE);
  ck_assert_int_eq(uva_run(NULL, NULL), UV_EINVAL);
}
END_TEST

static int leftover_cleaned;
static int leftover(void *arg) {
  (void)arg;
  int rc = uva_await(uva_sleep(100000), NULL);
  if (rc == UV_ECANCELED) leftover_cleaned = 1;
  return rc;
}
static int leaves_tasks_behind(void *arg) {
  (void)arg;
  for (int i = 0; i < 10; i++) uva_release(uva_spawn(leftover, NULL));
  uva_yield();
  return 0;
}
START_TEST(test_run_cancels_tasks_left_at_exit) {
  leftover_cleaned = 0;
  ck_assert_int_eq(RUN_MAIN(leaves_tasks_behind, NULL), 0);
  ck_assert_int_eq(leftover_cleaned, 1);
}
END_TEST

static int nested_run(void *arg) {
  (void)arg;
  uva_loop_t *l;
  ck_assert_int_eq(uva_loop_new(&l), UV_EBUSY); /* one loop per thread */
  ck_assert_int_eq(uva_run(returns_arg, NULL), UV_EBUSY);
  ck_assert_int_eq(uva_loop_close(uva_loop_current()), UV_EBUSY);
  uva_future_t *f = uva_sleep(1);
  ck_assert_int_eq(uva_loop_run_until(uva_loop_current(), f), UV_EBUSY);
  uva_release(f);
  return 0;
}
START_TEST(test_one_loop_per_thread_and_no_reentry) { ck_assert_int_eq(RUN_MAIN(nested_run, NULL), 0); }
END_TEST

static int sigint_seen;
static int waits_for_ctrl_c(void *arg) {
  (void)arg;
  uv_kill(uv_os_getpid(), SIGINT);
  int rc = uva_await(uva_sleep(FOREVER_MS), NULL); /* only the SIGINT ends it */
  sigint_seen = rc == UV_ECANCELED;
  return rc;
}
START_TEST(test_sigint_cancels_main) {
  sigint_seen = 0;
  ck_assert_int_eq(RUN_MAIN(waits_for_ctrl_c, NULL), UV_ECANCELED);
  ck_assert_int_eq(sigint_seen, 1);
}
END_TEST

/* An application that owns its uv_loop_t and its own handles. */
static int app_ticks;
static void on_app_timer(uv_timer_t *t) {
  if (++app_ticks == 3) uv_timer_stop(t);
}
static int attached_task(void *arg) {
  int *done = arg;
  uva_await(uva_sleep(20), NULL);
  *done = 1;
  return 4;
}
START_TEST(test_attach_to_application_loop) {
  long live = uva_test_alloc_live();
  uv_loop_t uv;
  ck_assert_int_eq(uv_loop_init(&uv), 0);
  uv_timer_t app_timer;
  uv_timer_init(&uv, &app_timer);
  uv_timer_start(&app_timer, on_app_timer, 5, 5);
  uva_loop_t *loop;
  ck_assert_int_eq(uva_loop_attach(&loop, &uv), 0);
  int done = 0;
  uva_future_t *t = uva_spawn(attached_task, &done);
  /* The application drives the loop with plain uv_run. */
  uv_run(&uv, UV_RUN_DEFAULT);
  ck_assert_int_eq(done, 1);
  ck_assert_int_eq(app_ticks, 3);
  ck_assert_int_eq(uva_future_status(t), 4);
  uva_release(t);
  ck_assert_int_eq(uva_loop_close(loop), 0);
  uv_close((uv_handle_t *)&app_timer, NULL);
  uv_run(&uv, UV_RUN_DEFAULT);
  ck_assert_int_eq(uv_loop_close(&uv), 0); /* uvasync left no handle behind */
  ck_assert_int_eq(uva_test_alloc_live(), live);
}
END_TEST

START_TEST(test_run_until_complete) {
  long live = uva_test_alloc_live();
  uva_loop_t *loop;
  ck_assert_int_eq(uva_loop_new(&loop), 0);
  ck_assert_ptr_eq(uva_loop_current(), loop);
  ck_assert_ptr_nonnull(uva_loop_uv(loop));
  uva_future_t *t = uva_spawn(returns_arg, (void *)8);
  ck_assert_int_eq(uva_loop_run_until(loop, t), 8);
  ck_assert_int_eq(uva_loop_run_until(loop, t), 8); /* done: returns at once */
  uva_release(t);
  ck_assert_int_eq(uva_loop_run_until(loop, NULL), UV_ENOMEM);
  ck_assert_int_eq(uva_loop_set_stack_size(loop, 1024), UV_EINVAL);
  ck_assert_int_eq(uva_loop_set_stack_size(loop, 64 * 1024), 0);
  t = uva_spawn(returns_arg, (void *)1); /* runs on a 64 KiB stack */
  ck_assert_int_eq(uva_loop_run_until(loop, t), 1);
  uva_release(t);
  ck_assert_int_eq(uva_loop_close(loop), 0);
  ck_assert_ptr_null(uva_loop_current());
  ck_assert_int_eq(uva_test_alloc_live(), live);
}
END_TEST

static int spawn_chain(void *arg) {
  intptr_t n = (intptr_t)arg;
  if (n == 0) return 0;
  uva_future_t *t = uva_spawn(spawn_chain, (void *)(n - 1));
  return t ? uva_await(t, NULL) : UV_ENOMEM;
}
START_TEST(test_allocation_failures_never_crash_or_leak) {
  for (long n = 0; n < 40; n++) {
    long live = uva_test_alloc_live();
    uva_test_alloc_fail_after(n);
    int rc = uva_run(spawn_chain, (void *)5);
    uva_test_alloc_fail_after(-1);
    ck_assert_msg(rc == 0 || rc == UV_ENOMEM, "n=%ld rc=%d", n, rc);
    ck_assert_int_eq(uva_test_alloc_live(), live);
  }
}
END_TEST

/* A program started with stdin, stdout and stderr closed: the loop's own
 * descriptors must not take those numbers (output meant for stdout would
 * go into them, and libuv asserts it never closes 0-2). In a child. */
static int no_conn(uva_stream_t *c, void *arg) {
  (void)c;
  (void)arg;
  return 0;
}

static int listen_once(void *arg) {
  (void)arg;
  uva_server_t *srv;
  int rc = uva_tcp_listen(&srv, "127.0.0.1", 0, 0, no_conn, NULL);
  if (rc == 0) rc = uva_await(uva_server_close(srv, 1), NULL);
  return rc == 0 ? uva_await(uva_sleep(1), NULL) : rc;
}

START_TEST(test_run_with_stdio_closed) {
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(0);
    close(1);
    close(2);
    int rc = uva_run(listen_once, NULL);
    /* 0, 1 and 2 are /dev/null now, not descriptors of the loop's (where a
     * printf would have gone into a socket or libuv's own pipe) */
    int ok = rc == 0;
    for (int fd = 0; fd < 3; fd++) {
      struct stat st;
      ok = ok && fstat(fd, &st) == 0 && S_ISCHR(st.st_mode);
    }
    _exit(ok ? 0 : 1);
  }
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("loop");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_run_returns_main_status);
  tcase_add_test(tc, test_run_cancels_tasks_left_at_exit);
  tcase_add_test(tc, test_one_loop_per_thread_and_no_reentry);
  tcase_add_test(tc, test_sigint_cancels_main);
  tcase_add_test(tc, test_attach_to_application_loop);
  tcase_add_test(tc, test_run_until_complete);
  tcase_add_test(tc, test_allocation_failures_never_crash_or_leak);
  tcase_add_test(tc, test_run_with_stdio_closed);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
