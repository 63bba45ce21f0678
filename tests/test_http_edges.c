/* HTTP client edge cases found by review: error buffers' lifetime, errors
 * raised while resuming a paused transfer, reads under ENOMEM, 3xx heads in
 * streaming mode, uploads from FIFOs, HEAD with max_body, allocation
 * failures while connecting, closing paused streams, freeing the client
 * during uploads. rawsrv.h answers what httpd.c cannot (a 300, an empty
 * Location). */
#include "http_env.h"
#include "rawsrv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Read everything (a hang fails the test by Check's timeout). */
static size_t read_all_t(uva_http_stream_t *s, size_t chunk, int *end) {
  char *buf = malloc(chunk);
  size_t total = 0;
  int rc;
  while ((rc = uva_await(uva_http_stream_read(s, buf, chunk), NULL)) > 0)
    total += (size_t)rc;
  free(buf);
  *end = rc;
  return total;
}

/* rq.error is written after the open future is done (stream error). */
TASK_TEST(test_error_buffer_is_not_written_after_the_open) {
  env_t e;
  env_open(&e);
  char *err = malloc(UVA_HTTP_ERROR_SIZE);
  /* The head comes at once and the body never: the stream fails with the
   * request's timeout once its open is done. The head has to beat that
   * timeout, which a slow machine may not manage in 250 ms: then the open
   * itself times out, and the request is made again with twice the
   * timeout. */
  uva_http_stream_t *s = NULL;
  for (int64_t ms = 250; s == NULL; ms *= 2) {
    uva_http_request_t rq = {.url = httpd_url(e.srv, "/gate/5/0"), .error = err,
                             .timeout_ms = ms};
    void *v = NULL;
    int rc = uva_await(uva_http_stream_open(e.client, &rq), &v);
    ck_assert_msg(rc == 0 || rc == UV_ETIMEDOUT, "open: %s (%s)", uva_err_name(rc), err);
    s = v;
  }
  /* the open future is done: the header says the buffer is borrowed only
   * until then */
  memset(err, 'Z', UVA_HTTP_ERROR_SIZE);
  err[UVA_HTTP_ERROR_SIZE - 1] = 0;
  int end;
  read_all_t(s, 4096, &end);
  ck_assert_int_eq(end, UV_ETIMEDOUT);
  ck_assert_msg(err[0] == 'Z', "buffer written after the open was done: \"%s\"", err);
  free(err);
  uva_http_stream_close(s);
  env_close(&e);
  return 0;
}

/* same, buffer really gone (ASan: heap-use-after-free in set_error). */
TASK_TEST(test_error_buffer_may_go_once_the_stream_is_open) {
  env_t e;
  env_open(&e);
  char *err = malloc(UVA_HTTP_ERROR_SIZE);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/gate/5/0"), .error = err}; /* in flight */
  uva_http_stream_t *s = open_ok(&e, &rq);
  free(err);
  uva_http_client_free(e.client); /* set_error(q, "client freed") */
  e.client = NULL;
  uva_http_stream_close(s);
  env_close(&e);
  return 0;
}

/* max_body exceeded by data held by curl while paused: the error from
 * the write callback is returned by curl_easy_pause and ignored. */
TASK_TEST(test_max_body_exceeded_while_resuming_is_reported) {
  env_t e;
  uva_http_client_opts_t o = {.stream_buffer = 16};
  env_open_with(&e, &o);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/chunked/3000"), .max_body = 1000};
  uva_http_stream_t *s = open_ok(&e, &rq);
  WAIT_UNTIL(uva_http_stream_buffered(s) >= 16); /* its buffer is full: paused */
  int end;
  size_t got = read_all_t(s, 8, &end);
  ck_assert_msg(end == UV_E2BIG, "after %zu bytes the stream ended with %s, not E2BIG", got,
                uva_err_name(end));
  uva_http_stream_close(s);
  env_close(&e);
  return 0;
}

/* a read of buffered data consumes it, then fails to allocate its
 * future: NULL (ENOMEM, "nothing was done: retry") but the bytes are gone. */
TASK_TEST(test_a_read_that_cannot_allocate_consumes_nothing) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/bytes/100")};
  uva_http_stream_t *s = open_ok(&e, &rq);
  while (uva_http_stream_buffered(s) < 100) ck_assert_int_eq(uva_await(uva_sleep(5), NULL), 0);
  char b[10];
  /* empty the loop's free list of small futures, so the next one mallocs */
  uva_future_t *keep[4096];
  int nk = 0;
  long c0 = uva_test_alloc_count();
  while (nk < 4096 && uva_test_alloc_count() == c0) keep[nk++] = uva_future_new();
  uva_test_alloc_fail_after(0);
  uva_future_t *f = uva_http_stream_read(s, b, sizeof b);
  uva_test_alloc_fail_after(-1);
  if (f == NULL) {
    ck_assert_msg(uva_http_stream_buffered(s) == 100,
                  "read returned NULL (ENOMEM) but consumed %zu bytes",
                  100 - uva_http_stream_buffered(s));
  } else {
    uva_release(f);
  }
  for (int i = 0; i < nk; i++) uva_release(keep[i]);
  uva_http_stream_close(s);
  env_close(&e);
  return 0;
}

/* streaming a 300 with Location: curl follows it (any 3xx with
 * Location), head_is_final does not know. */
static int h300(int fd, const char *head, size_t n) {
  (void)n;
  if (strncmp(head, "GET /a ", 7) == 0)
    raw_puts(fd, "HTTP/1.1 300 Multiple Choices\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n");
  else
    raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nfinal");
  return 1;
}

/* uva_http_request and a stream of the same request (to rawsrv's /a)
 * both end on the response with this status and body. */
static void request_and_stream_agree(rawsrv_t *rs, int status, const char *body) {
  uva_http_client_t *c;
  ck_assert_int_eq(uva_http_client_new(&c, NULL), 0);
  uva_http_request_t rq = {.url = rawsrv_url(rs, "/a")};
  void *v = NULL;
  ck_assert_int_eq(uva_await(uva_http_request(c, &rq), &v), 0);
  uva_http_response_t *r = v;
  ck_assert_int_eq(r->status, status);
  ck_assert_str_eq(r->body, body);
  uva_http_response_free(r);
  ck_assert_int_eq(uva_await(uva_http_stream_open(c, &rq), &v), 0);
  uva_http_stream_t *s = v;
  char b[64] = {0};
  int got = uva_await(uva_http_stream_read(s, b, sizeof b - 1), NULL);
  ck_assert_int_eq(uva_http_stream_response(s)->status, status);
  uva_http_stream_close(s);
  uva_http_client_free(c);
  ck_assert_int_eq(got, (int)strlen(body));
  ck_assert_str_eq(b, body);
}

TASK_TEST(test_stream_follows_any_3xx_with_a_location) {
  request_and_stream_agree(rawsrv_start(h300), 200, "final");
  return 0;
}

/* a 302 whose Location is empty: curl does not follow it; the
 * streamed body must be the 302's body, as with uva_http_request. */
static int hempty(int fd, const char *head, size_t n) {
  (void)head;
  (void)n;
  raw_puts(fd, "HTTP/1.1 302 Found\r\nLocation:\r\nContent-Length: 5\r\n\r\nhello");
  return 1;
}

TASK_TEST(test_stream_of_a_3xx_curl_does_not_follow_has_its_body) {
  request_and_stream_agree(rawsrv_start(hempty), 302, "hello");
  return 0;
}

/* body_file on a FIFO: non-seekable, but read with pread (offset). */
static void *fifo_writer(void *arg) {
  int fd = open(arg, O_WRONLY);
  raw_puts(fd, "hello through a fifo");
  close(fd);
  return NULL;
}

TASK_TEST(test_upload_from_a_fifo) {
  env_t e;
  env_open(&e);
  char path[64];
  snprintf(path, sizeof path, "/tmp/uva-fifo-%d", (int)getpid());
  unlink(path);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  pthread_t t;
  pthread_create(&t, NULL, fifo_writer, (void *)path);
  char err[UVA_HTTP_ERROR_SIZE];
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/echo"), .body_file = path, .error = err};
  void *v = NULL;
  int rc = uva_await(uva_http_request(e.client, &rq), &v);
  pthread_join(t, NULL);
  unlink(path);
  ck_assert_msg(rc == 0, "fifo upload: %s (%s)", uva_err_name(rc), err);
  ck_assert_str_eq(((uva_http_response_t *)v)->body, "hello through a fifo");
  uva_http_response_free(v);
  env_close(&e);
  return 0;
}

/* body_file is opened on the pool: a FIFO's open waits there for its
 * writer while the loop runs on (here the task starts the writer only
 * after a sleep; with the open on the loop it would never wake). */
TASK_TEST(test_upload_fifo_waits_for_its_writer_off_the_loop) {
  env_t e;
  env_open(&e);
  char path[64];
  snprintf(path, sizeof path, "/tmp/uva-fifo2-%d", (int)getpid());
  unlink(path);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  char err[UVA_HTTP_ERROR_SIZE];
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/echo"), .body_file = path, .error = err};
  uva_future_t *f = uva_http_request(e.client, &rq);
  ck_assert_int_eq(uva_await(uva_sleep(50), NULL), 0);
  ck_assert(!uva_future_is_done(f));
  pthread_t t;
  pthread_create(&t, NULL, fifo_writer, (void *)path);
  void *v = NULL;
  int rc = uva_await(f, &v);
  pthread_join(t, NULL);
  unlink(path);
  ck_assert_msg(rc == 0, "fifo upload: %s (%s)", uva_err_name(rc), err);
  ck_assert_str_eq(((uva_http_response_t *)v)->body, "hello through a fifo");
  uva_http_response_free(v);
  env_close(&e);
  return 0;
}

/* A request whose body_file is still opening is cancelled, or its client
 * freed, or (streaming) its open future dropped: it ends at once, and the
 * descriptor the open gets later is closed (the suite's leak check, and
 * the fd count, see it). */
static int fifo_open_count(const char *path) {
  int n = 0;
  for (int fd = 3; fd < 1024; fd++) {
    char link[64], target[128];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, target, sizeof target - 1);
    if (len < 0) continue;
    target[len] = '\0';
    n += strcmp(target, path) == 0;
  }
  return n;
}

static void *fifo_toucher(void *arg) {
  int fd = open(arg, O_WRONLY);
  if (fd >= 0) close(fd);
  return NULL;
}

static char abandon_path[64];

static int abandon_while_opening(void *arg) {
  int how = *(int *)arg;
  const char *path = abandon_path;
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/echo"), .body_file = path};
  uva_future_t *f = how == 2 ? uva_http_stream_open(e.client, &rq)
                             : uva_http_request(e.client, &rq);
  ck_assert_int_eq(uva_await(uva_sleep(20), NULL), 0);
  if (how == 0) {
    ck_assert_int_eq(uva_cancel(f), 1);
    ck_assert_int_eq(uva_await(f, NULL), UV_ECANCELED);
  } else if (how == 1) {
    uva_http_client_free(e.client);
    e.client = NULL;
    ck_assert_int_eq(uva_await(f, NULL), UV_ECANCELED);
  } else {
    uva_release(f);
  }
  /* let the pool's open return: a writer that leaves at once (opened
   * blocking, on a thread: it meets the reader whenever that comes) */
  pthread_t t;
  pthread_create(&t, NULL, fifo_toucher, (void *)path);
  pthread_join(t, NULL);
  ck_assert_int_eq(httpd_stats(e.srv)->requests, 0);
  env_close(&e);
  return 0; /* the loop closes once the open's callback has run */
}

START_TEST(test_upload_abandoned_while_its_file_opens) {
  snprintf(abandon_path, sizeof abandon_path, "/tmp/uva-fifo3-%d", (int)getpid());
  for (int how = 0; how < 3; how++) {
    unlink(abandon_path);
    ck_assert_int_eq(mkfifo(abandon_path, 0600), 0);
    ck_assert_int_eq(RUN_MAIN(abandon_while_opening, &how), 0);
    ck_assert_msg(fifo_open_count(abandon_path) == 0, "how %d: the fifo is still open", how);
    unlink(abandon_path);
  }
}
END_TEST

/* HEAD (no body) of a resource larger than max_body. */
TASK_TEST(test_head_is_not_judged_by_max_body) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/bytes/200000"), .method = "HEAD",
                           .max_body = 1000};
  void *v = NULL;
  int rc = uva_await(uva_http_request(e.client, &rq), &v);
  if (v) uva_http_response_free(v);
  int rc2 = uva_await(uva_http_stream_open(e.client, &rq), &v);
  if (rc2 == 0) uva_http_stream_close(v);
  ck_assert_msg(rc == 0 && rc2 == 0, "HEAD with max_body: request %s, stream %s",
                uva_err_name(rc), uva_err_name(rc2));
  env_close(&e);
  return 0;
}

/* Allocations failing from the nth on while a request connects (the
 * client's socket callback, the test server's accept): the request fails
 * with ENOMEM or succeeds, and the next one works. */
TASK_TEST(test_allocation_failures_while_connecting_leave_the_client_usable) {
  env_t e;
  env_open(&e);
  for (long n = 0; n < 12; n++) {
    uva_future_t *g = uva_http_get(e.client, httpd_url(e.srv, "/ok"));
    uva_test_alloc_fail_after(n);
    int first = uva_await(g, NULL);
    uva_test_alloc_fail_after(-1);
    void *v = NULL;
    int rc = uva_await(uva_http_get(e.client, httpd_url(e.srv, "/ok")), &v);
    if (v) uva_http_response_free(v);
    ck_assert_msg(first == 0 || first == UV_ENOMEM, "n=%ld: %s", n, uva_err_name(first));
    ck_assert_msg(rc == 0, "n=%ld: next request %s (%s)", n, uva_err_name(rc),
                  uva_http_last_error(e.client));
  }
  env_close(&e);
  return 0;
}

/* a stream closed while paused (curl holds data), its easy handle
 * reused: nothing of the old body leaks into the next. */
TASK_TEST(test_a_paused_stream_closed_leaves_nothing_behind) {
  env_t e;
  uva_http_client_opts_t o = {.stream_buffer = 16};
  env_open_with(&e, &o);
  for (int i = 0; i < 3; i++) {
    uva_http_request_t rq = {.url = httpd_url(e.srv, "/chunked/3000")};
    uva_http_stream_t *s = open_ok(&e, &rq);
    WAIT_UNTIL(uva_http_stream_buffered(s) >= 16); /* its buffer is full: paused */
    uva_http_stream_close(s);
    void *v = NULL;
    ck_assert_int_eq(uva_await(uva_http_get(e.client, httpd_url(e.srv, "/ok")), &v), 0);
    ck_assert_str_eq(((uva_http_response_t *)v)->body, "hello");
    uva_http_response_free(v);
  }
  env_close(&e);
  return 0;
}

/* client freed while an upload's pool read is in flight. */
static char *big_file(size_t n) {
  static char path[64];
  strcpy(path, "/tmp/uva-up-XXXXXX");
  int fd = mkstemp(path);
  char *b = malloc(n);
  memset(b, 'x', n);
  ck_assert_int_eq(write(fd, b, n), (ssize_t)n);
  free(b);
  close(fd);
  return path;
}

TASK_TEST(test_client_freed_during_upload_reads) {
  char *path = big_file(8 << 20);
  for (int d = 0; d < 10; d++) {
    env_t e;
    env_open(&e);
    uva_http_request_t rq = {.url = httpd_url(e.srv, "/echo"), .body_file = path};
    uva_future_t *f = uva_http_request(e.client, &rq);
    uva_future_t *g = uva_http_stream_open(e.client, &rq);
    ck_assert_int_eq(uva_await(uva_sleep((uint64_t)d), NULL), 0);
    uva_http_client_free(e.client);
    e.client = NULL;
    int rc = uva_await(f, NULL);
    ck_assert(rc == UV_ECANCELED || rc == 0);
    void *v = NULL;
    rc = uva_await(g, &v);
    if (rc == 0) uva_http_stream_close(v);
    env_close(&e);
  }
  unlink(path);
  return 0;
}

static Suite *suite(void) {
  Suite *s = suite_create("http_edges");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 20);
#define ADD(t) tcase_add_test(tc, t)
  ADD(test_error_buffer_is_not_written_after_the_open);
  ADD(test_error_buffer_may_go_once_the_stream_is_open);
  ADD(test_max_body_exceeded_while_resuming_is_reported);
  ADD(test_a_read_that_cannot_allocate_consumes_nothing);
  ADD(test_stream_follows_any_3xx_with_a_location);
  ADD(test_stream_of_a_3xx_curl_does_not_follow_has_its_body);
  ADD(test_upload_from_a_fifo);
  ADD(test_upload_fifo_waits_for_its_writer_off_the_loop);
  ADD(test_upload_abandoned_while_its_file_opens);
  ADD(test_head_is_not_judged_by_max_body);
  ADD(test_allocation_failures_while_connecting_leave_the_client_usable);
  ADD(test_a_paused_stream_closed_leaves_nothing_behind);
  ADD(test_client_freed_during_upload_reads);
  suite_add_tcase(s, tc);
  return s;
}

TEST_MAIN(suite)
