/* Subprocesses: spawn, exit status, stdio as streams, kill, errors. */
#include "helpers.h"

#include <signal.h>
#include <string.h>

static int read_all(uva_stream_t *s, char *buf, size_t cap) {
  size_t len = 0;
  for (;;) {
    int r = uva_await(uva_stream_read(s, buf + len, cap - 1 - len), NULL);
    if (r == UV_EOF) break;
    if (r < 0) return r;
    len += (size_t)r;
    if (len + 1 >= cap) break;
  }
  buf[len] = '\0';
  return (int)len;
}

TASK_TEST(test_process_exit_status_and_output) {
  char *args[] = {"sh", "-c", "echo out; echo err >&2; exit 3", NULL};
  uva_process_opts_t o = {.file = "sh", .args = args,
                          .stdio = {UVA_STDIO_IGNORE, UVA_STDIO_PIPE, UVA_STDIO_PIPE}};
  uva_process_t *p;
  ck_assert_int_eq(uva_process_spawn(&p, &o), 0);
  ck_assert_int_gt(uva_process_pid(p), 0);
  ck_assert_ptr_null(uva_process_stdio(p, 0));
  char out[64], err[64];
  ck_assert_int_eq(read_all(uva_process_stdio(p, 1), out, sizeof out), 4);
  ck_assert_int_eq(read_all(uva_process_stdio(p, 2), err, sizeof err), 4);
  ck_assert_str_eq(out, "out\n");
  ck_assert_str_eq(err, "err\n");
  ck_assert_int_eq(uva_await(uva_process_wait(p), NULL), 3);
  ck_assert_int_eq(uva_await(uva_process_wait(p), NULL), 3); /* after exit: at once */
  ck_assert_int_eq(uva_process_kill(p, SIGTERM), UV_ESRCH);
  uva_process_free(p);
  return 0;
}

TASK_TEST(test_process_stdin_to_stdout) {
  char *args[] = {"tr", "a-z", "A-Z", NULL};
  uva_process_opts_t o = {.file = "tr", .args = args,
                          .stdio = {UVA_STDIO_PIPE, UVA_STDIO_PIPE, UVA_STDIO_INHERIT}};
  uva_process_t *p;
  ck_assert_int_eq(uva_process_spawn(&p, &o), 0);
  const char *msg = "hello, subprocess\n";
  ck_assert_int_eq(uva_await(uva_stream_write(uva_process_stdio(p, 0), msg, strlen(msg)), NULL), 0);
  ck_assert_int_eq(uva_await(uva_stream_shutdown(uva_process_stdio(p, 0)), NULL), 0); /* EOF */
  char out[64];
  ck_assert_int_eq(read_all(uva_process_stdio(p, 1), out, sizeof out), (int)strlen(msg));
  ck_assert_str_eq(out, "HELLO, SUBPROCESS\n");
  ck_assert_int_eq(uva_await(uva_process_wait(p), NULL), 0);
  uva_process_free(p);
  return 0;
}

TASK_TEST(test_process_kill_and_cancelled_wait) {
  char *args[] = {"sleep", "30", NULL};
  uva_process_opts_t o = {.file = "sleep", .args = args};
  uva_process_t *p;
  ck_assert_int_eq(uva_process_spawn(&p, &o), 0);
  uva_future_t *w = uva_process_wait(p);
  uva_cancel(w); /* a cancelled wait does not touch the process */
  ck_assert_int_eq(uva_await(w, NULL), UV_ECANCELED);
  uva_future_t *w2 = uva_process_wait(p);
  ck_assert_int_eq(uva_process_kill(p, SIGTERM), 0);
  ck_assert_int_eq(uva_await(w2, NULL), 128 + SIGTERM);
  uva_process_free(p);
  return 0;
}

TASK_TEST(test_process_spawn_errors) {
  uva_process_t *p = (void *)1;
  uva_process_opts_t o = {.file = "/nonexistent/program"};
  ck_assert_int_eq(uva_process_spawn(&p, &o), UV_ENOENT);
  ck_assert_ptr_null(p);
  ck_assert_int_eq(uva_process_spawn(&p, NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_process_wait(NULL), NULL), UV_EINVAL);
  /* freed while running: its pending wait fails, nothing leaks */
  char *args[] = {"sleep", "30", NULL};
  uva_process_opts_t s = {.file = "sleep", .args = args, .stdio = {UVA_STDIO_PIPE, UVA_STDIO_PIPE, 0}};
  ck_assert_int_eq(uva_process_spawn(&p, &s), 0);
  uva_future_t *w = uva_process_wait(p);
  uva_process_kill(p, SIGKILL);
  uva_process_free(p);
  ck_assert_int_eq(uva_await(w, NULL), UVA_ECLOSED);
  return 0;
}

static Suite *suite(void) {
  Suite *s = suite_create("process");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_process_exit_status_and_output);
  tcase_add_test(tc, test_process_stdin_to_stdout);
  tcase_add_test(tc, test_process_kill_and_cancelled_wait);
  tcase_add_test(tc, test_process_spawn_errors);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
