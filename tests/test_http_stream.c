/* HTTP client: streamed response bodies (back-pressure), request bodies
 * streamed from files, cookies, timings and widened protocols, against the
 * test server in httpd.c. */
#include "http_env.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uva_http_stream_t *open_get(env_t *e, const char *path) {
  uva_http_request_t rq = {.url = httpd_url(e->srv, path)};
  return open_ok(e, &rq);
}

/* -1 if buf holds the /bytes pattern from offset off, else the first
 * index that differs (one assert per buffer: Check asserts are slow). */
static long pattern_at(const char *buf, size_t n, size_t off) {
  for (size_t i = 0; i < n; i++)
    if (buf[i] != httpd_pattern(off + i)) return (long)i;
  return -1;
}

/* Read the whole body; checks it against the /bytes pattern when pattern. */
static size_t read_all(uva_http_stream_t *s, size_t chunk, bool pattern, int *end) {
  char *buf = malloc(chunk);
  size_t total = 0;
  int rc;
  while ((rc = uva_await(uva_http_stream_read(s, buf, chunk), NULL)) > 0) {
    ck_assert_int_le(rc, (int)chunk);
    if (pattern) ck_assert_int_eq(pattern_at(buf, (size_t)rc, total), -1);
    total += (size_t)rc;
  }
  free(buf);
  *end = rc;
  return total;
}

TASK_TEST(test_stream_reads_a_large_body_in_chunks) {
  env_t e;
  env_open(&e);
  uva_http_stream_t *s = open_get(&e, "/bytes/3000000");
  const uva_http_response_t *h = uva_http_stream_response(s);
  ck_assert_int_eq(h->status, 200);
  ck_assert_str_eq(uva_http_response_header(h, "Content-Length"), "3000000");
  ck_assert_uint_eq(h->body_len, 0);
  int end;
  ck_assert_uint_eq(read_all(s, 65536, true, &end), 3000000);
  ck_assert_int_eq(end, UV_EOF);
  /* the end is sticky, and the timings are in once it came */
  ck_assert_int_eq(uva_await(uva_http_stream_read(s, &end, 1), NULL), UV_EOF);
  ck_assert_uint_gt(h->total_us, 0);
  ck_assert_uint_ge(h->total_us, h->first_byte_us);
  uva_http_stream_close(s);
  env_close(&e);
  return 0;
}

TASK_TEST(test_stream_slow_reader_pauses_the_transfer) {
  env_t e;
  uva_http_client_opts_t o = {.stream_buffer = 65536};
  env_open_with(&e, &o);
  uva_http_stream_t *s = open_get(&e, "/bytes/8000000");
  char b[100];
  ck_assert_int_gt(uva_await(uva_http_stream_read(s, b, sizeof b), NULL), 0);
  /* Not reading: the library reads ahead up to its buffer, then pauses
   * (the server's 8 MB would arrive within the 200 ms on loopback; a slow
   * machine can only make the check below weaker, not fail it). */
  WAIT_UNTIL(uva_http_stream_buffered(s) >= 32768);
  for (int i = 0; i < 5; i++) {
    ck_assert_int_eq(uva_await(uva_sleep(40), NULL), 0);
    ck_assert_uint_le(uva_http_stream_buffered(s), 65536 + 16384);
  }
  /* ...and resumes as the reader catches up, losing nothing */
  size_t total = 0;
  int rc;
  char *buf = malloc(100000);
  memcpy(buf, b, 100);
  total = 100;
  ck_assert_int_eq(pattern_at(b, 100, 0), -1);
  while ((rc = uva_await(uva_http_stream_read(s, buf, 100000), NULL)) > 0) {
    ck_assert_int_eq(pattern_at(buf, (size_t)rc, total), -1);
    total += (size_t)rc;
    ck_assert_uint_le(uva_http_stream_buffered(s), 65536 + 16384);
  }
  free(buf);
  ck_assert_int_eq(rc, UV_EOF);
  ck_assert_uint_eq(total, 8000000);
  uva_http_stream_close(s);
  env_close(&e);
  return 0;
}

TASK_TEST(test_stream_follows_redirects_to_the_final_body) {
  env_t e;
  env_open(&e);
  uva_http_stream_t *s = open_get(&e, "/redirect/2");
  const uva_http_response_t *h = uva_http_stream_response(s);
  ck_assert_int_eq(h->status, 200);
  ck_assert_str_eq(h->effective_url, httpd_url(e.srv, "/redirect/0"));
  char b[64];
  int n = uva_await(uva_http_stream_read(s, b, sizeof b), NULL);
  ck_assert_int_eq(n, 4);
  ck_assert_mem_eq(b, "done", 4);
  ck_assert_int_eq(uva_await(uva_http_stream_read(s, b, sizeof b), NULL), UV_EOF);
  uva_http_stream_close(s);
  /* without following, the 302 is the stream */
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/redirect/1"),
                           .follow_redirects = UVA_HTTP_NO_FOLLOW};
  s = open_ok(&e, &rq);
  ck_assert_int_eq(uva_http_stream_response(s)->status, 302);
  ck_assert_ptr_nonnull(uva_http_response_header(uva_http_stream_response(s), "Location"));
  uva_http_stream_close(s);
  env_close(&e);
  return 0;
}

TASK_TEST(test_stream_reset_mid_body_is_an_error_after_the_data) {
  env_t e;
  env_open(&e);
  uva_http_stream_t *s = open_get(&e, "/reset");
  int end;
  ck_assert_uint_eq(read_all(s, 4096, false, &end), 1000);
  ck_assert_int_eq(end, UV_ECONNRESET);
  ck_assert_int_eq(uva_await(uva_http_stream_read(s, &end, 1), NULL), UV_ECONNRESET);
  ck_assert_str_ne(uva_http_last_error(e.client), "");
  ck_assert_str_ne(uva_http_stream_error(s), "");
  uva_http_stream_close(s);
  env_close(&e);
  return 0;
}

TASK_TEST(test_stream_errors_and_bad_arguments) {
  env_t e;
  env_open(&e);
  /* a refused connection fails the open */
  uva_http_request_t rq = {.url = "http://127.0.0.1:1/"};
  ck_assert_int_eq(uva_await(uva_http_stream_open(e.client, &rq), NULL), UV_ECONNREFUSED);
  rq.url = "ftp://127.0.0.1/";
  ck_assert_int_eq(uva_await(uva_http_stream_open(e.client, &rq), NULL), UV_EPROTONOSUPPORT);
  ck_assert_int_eq(uva_await(uva_http_stream_open(NULL, &rq), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_http_stream_open(e.client, NULL), NULL), UV_EINVAL);
  char b[8];
  ck_assert_int_eq(uva_await(uva_http_stream_read(NULL, b, 8), NULL), UV_EINVAL);
  ck_assert_ptr_null(uva_http_stream_response(NULL));
  uva_http_stream_close(NULL);
  /* one read at a time (the body's byte comes when we let it) */
  uva_http_stream_t *s = open_get(&e, "/gate/1/0");
  uva_future_t *r1 = uva_http_stream_read(s, b, 8);
  ck_assert_int_eq(uva_await(uva_http_stream_read(s, b, 8), NULL), UV_EBUSY);
  ck_assert_int_eq(uva_await(uva_http_stream_read(s, b, 0), NULL), 0);
  httpd_gate_pass(e.srv, 1);
  ck_assert_int_eq(uva_await(r1, NULL), 1);
  uva_http_stream_close(s);
  /* max_body applies to the whole streamed body */
  rq = (uva_http_request_t){.url = httpd_url(e.srv, "/chunked/2000"), .max_body = 1000};
  uva_future_t *of = uva_http_stream_open(e.client, &rq);
  void *v = NULL;
  int rc = uva_await(of, &v);
  if (rc == 0) {
    int end;
    read_all(v, 4096, false, &end);
    ck_assert_int_eq(end, UV_E2BIG);
    uva_http_stream_close(v);
  } else {
    ck_assert_int_eq(rc, UV_E2BIG);
  }
  env_close(&e);
  return 0;
}

TASK_TEST(test_stream_cancel_open_and_pending_read) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/hold")}; /* never answered */
  uva_future_t *f = uva_http_stream_open(e.client, &rq);
  WAIT_UNTIL(httpd_stats(e.srv)->holds == 1);
  ck_assert_int_eq(uva_cancel(f), 1);
  ck_assert_int_eq(uva_await(f, NULL), UV_ECANCELED);
  /* wait_for on the open */
  ck_assert_int_eq(uva_await(uva_wait_for(uva_http_stream_open(e.client, &rq), 20), NULL),
                   UV_ETIMEDOUT);
  /* a pending read cancelled; the stream stays usable (the body comes
   * when we let it) */
  uva_http_stream_t *s = open_get(&e, "/gate/5/0");
  char b[8];
  uva_future_t *r = uva_http_stream_read(s, b, sizeof b);
  ck_assert_int_eq(uva_cancel(r), 1);
  ck_assert_int_eq(uva_await(r, NULL), UV_ECANCELED);
  httpd_gate_pass(e.srv, 1);
  int end;
  ck_assert_uint_eq(read_all(s, 8, false, &end), 5);
  ck_assert_int_eq(end, UV_EOF);
  uva_http_stream_close(s);
  /* a read left pending when the stream is closed fails */
  s = open_get(&e, "/gate/5/0"); /* never let through */
  r = uva_http_stream_read(s, b, sizeof b);
  uva_http_stream_close(s);
  ck_assert_int_eq(uva_await(r, NULL), UV_ECANCELED);
  /* the client still works */
  s = open_get(&e, "/ok");
  ck_assert_uint_eq(read_all(s, 8, false, &end), 5);
  uva_http_stream_close(s);
  env_close(&e);
  return 0;
}

TASK_TEST(test_stream_closed_mid_transfer_or_never_taken) {
  env_t e;
  env_open(&e);
  uva_http_stream_t *s = open_get(&e, "/bytes/8000000");
  char b[1000];
  ck_assert_int_eq(uva_await(uva_http_stream_read(s, b, sizeof b), NULL), 1000);
  uva_http_stream_close(s);
  /* an open whose stream nobody takes closes it with the future */
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/bytes/8000000")};
  ck_assert_int_eq(uva_await(uva_http_stream_open(e.client, &rq), NULL), 0);
  /* ...and one released before it opened stops the transfer */
  uva_release(uva_http_stream_open(e.client, &rq));
  ck_assert_int_eq(uva_await(uva_sleep(20), NULL), 0);
  void *v;
  ck_assert_int_eq(uva_await(uva_http_get(e.client, httpd_url(e.srv, "/ok")), &v), 0);
  uva_http_response_free(v);
  env_close(&e);
  return 0;
}

TASK_TEST(test_stream_outlives_a_freed_client) {
  env_t e;
  env_open(&e);
  uva_http_stream_t *s = open_get(&e, "/gate/5/0"); /* the body never comes */
  char b[8];
  uva_future_t *r = uva_http_stream_read(s, b, sizeof b);
  uva_http_client_free(e.client);
  e.client = NULL;
  ck_assert_int_eq(uva_await(r, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(uva_http_stream_read(s, b, sizeof b), NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_http_stream_response(s)->status, 200);
  uva_http_stream_close(s);
  env_close(&e);
  return 0;
}

TASK_TEST(test_stream_head_request_ends_at_once) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/bytes/5000"), .method = "HEAD"};
  uva_http_stream_t *s = open_ok(&e, &rq);
  char b[8];
  ck_assert_int_eq(uva_await(uva_http_stream_read(s, b, sizeof b), NULL), UV_EOF);
  uva_http_stream_close(s);
  env_close(&e);
  return 0;
}

/* ---------------------------------------------------- uploads from files */

static char *write_pattern_file(size_t n) {
  static char path[64];
  snprintf(path, sizeof path, "/tmp/uva-upload-%d-XXXXXX", (int)getpid());
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  char *buf = malloc(n);
  for (size_t i = 0; i < n; i++) buf[i] = httpd_pattern(i * 7);
  ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
  close(fd);
  free(buf);
  return path;
}

static int lowest_free_fd(void) {
  int fd = open("/dev/null", O_RDONLY);
  close(fd);
  return fd;
}

TASK_TEST(test_upload_streams_a_file_as_the_body) {
  env_t e;
  env_open(&e);
  size_t n = 3 * 1024 * 1024 + 17;
  char *path = write_pattern_file(n);
  const char *methods[] = {NULL, "PUT"};
  for (int m = 0; m < 2; m++) {
    uva_http_request_t rq = {.url = httpd_url(e.srv, "/echo"), .body_file = path,
                             .method = methods[m]};
    void *v = NULL;
    int rc = uva_await(uva_http_request(e.client, &rq), &v);
    ck_assert_msg(rc == 0, "%s (%s)", uva_err_name(rc), uva_http_last_error(e.client));
    uva_http_response_t *r = v;
    ck_assert_int_eq(r->status, 200);
    ck_assert_str_eq(uva_http_response_header(r, "X-Echo-Method"), m ? "PUT" : "POST");
    ck_assert_uint_eq(r->body_len, n);
    size_t bad = 0;
    while (bad < n && r->body[bad] == httpd_pattern(bad * 7)) bad++;
    ck_assert_uint_eq(bad, n);
    uva_http_response_free(r);
  }
  unlink(path);
  /* a non-seekable file of unknown size goes chunked */
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/echo"), .body_file = "/dev/null"};
  void *v = NULL;
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), &v), 0);
  ck_assert_uint_eq(((uva_http_response_t *)v)->body_len, 0);
  uva_http_response_free(v);
  env_close(&e);
  return 0;
}

TASK_TEST(test_upload_bad_files_fail_cleanly) {
  env_t e;
  env_open(&e);
  int fd0 = lowest_free_fd();
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/echo"), .body_file = "/nonexistent/x"};
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_ENOENT);
  ck_assert_ptr_nonnull(strstr(uva_http_last_error(e.client), "body_file"));
  rq.body_file = "/tmp";
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_EISDIR);
  rq.body = "x";
  rq.body_len = 1;
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_EINVAL);
  ck_assert_int_eq(lowest_free_fd(), fd0);
  env_close(&e);
  return 0;
}

TASK_TEST(test_upload_cancelled_mid_body_closes_the_file) {
  env_t e;
  env_open(&e);
  int fd0 = lowest_free_fd();
  char *path = write_pattern_file(16 * 1024 * 1024);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/echo"), .body_file = path};
  for (int delay = 0; delay <= 20; delay += 5) {
    uva_future_t *f = uva_http_request(e.client, &rq);
    if (delay) ck_assert_int_eq(uva_await(uva_sleep((uint64_t)delay), NULL), 0);
    uva_cancel(f);
    int rc = uva_await(f, NULL);
    ck_assert(rc == UV_ECANCELED || rc == 0);
  }
  /* the pool reads in flight finish, then the descriptors are closed */
  WAIT_UNTIL(lowest_free_fd() == fd0);
  unlink(path);
  env_close(&e);
  return 0;
}

/* ------------------------------------------------ cookies, timings, misc */

static const char *echoed_cookie(env_t *e) {
  static char buf[256];
  void *v = NULL;
  ck_assert_int_eq(uva_await(uva_http_get(e->client, httpd_url(e->srv, "/echo")), &v), 0);
  const char *c = uva_http_response_header(v, "X-Echo-Cookie");
  snprintf(buf, sizeof buf, "%s", c ? c : "(none)");
  uva_http_response_free(v);
  return buf;
}

TASK_TEST(test_cookies_are_kept_only_when_enabled) {
  env_t e;
  uva_http_client_opts_t o = {.cookies = 1};
  env_open_with(&e, &o);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, httpd_url(e.srv, "/set-cookie/a/1")), NULL),
                   0);
  ck_assert_str_eq(echoed_cookie(&e), "a=1");
  uva_http_client_free(e.client);
  ck_assert_int_eq(uva_http_client_new(&e.client, NULL), 0);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, httpd_url(e.srv, "/set-cookie/a/1")), NULL),
                   0);
  ck_assert_str_eq(echoed_cookie(&e), "(none)");
  env_close(&e);
  return 0;
}

TASK_TEST(test_timings_are_in_order) {
  env_t e;
  env_open(&e);
  void *v = NULL;
  ck_assert_int_eq(uva_await(uva_http_get(e.client, httpd_url(e.srv, "/delay/50")), &v), 0);
  uva_http_response_t *r = v;
  ck_assert_uint_le(r->dns_us, r->connect_us);
  ck_assert_uint_gt(r->connect_us, 0);
  ck_assert_uint_eq(r->tls_us, 0); /* plain http */
  ck_assert_uint_le(r->connect_us, r->first_byte_us);
  /* the server waited 50 ms of loop time (1 ms granularity) */
  ck_assert_uint_ge(r->first_byte_us, 49000);
  ck_assert_uint_le(r->first_byte_us, r->total_us);
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_protocols_can_be_widened) {
  env_t e;
  env_open(&e);
  char *path = write_pattern_file(1000);
  char u[128];
  snprintf(u, sizeof u, "file://%s", path);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, u), NULL), UV_EPROTONOSUPPORT);
  uva_http_client_t *c;
  uva_http_client_opts_t o = {.protocols = "http,https,file"};
  ck_assert_int_eq(uva_http_client_new(&c, &o), 0);
  void *v = NULL;
  ck_assert_int_eq(uva_await(uva_http_get(c, u), &v), 0);
  ck_assert_uint_eq(((uva_http_response_t *)v)->body_len, 1000);
  uva_http_response_free(v);
  uva_http_client_free(c);
  o.protocols = "http,nosuchproto";
  ck_assert_int_eq(uva_http_client_new(&c, &o), UV_EINVAL);
  unlink(path);
  /* bad versions are bad arguments; HTTP/1.1 forced is HTTP/1.1 */
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/ok"), .http_version = 7};
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_EINVAL);
  rq.http_version = UVA_HTTP_VERSION_1_1;
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), &v), 0);
  ck_assert_int_eq(((uva_http_response_t *)v)->http_version, 11);
  uva_http_response_free(v);
  env_close(&e);
  return 0;
}

TASK_TEST(test_stream_survives_allocation_failures) {
  env_t e;
  env_open(&e);
  for (long n = 0; n < 40; n++) {
    uva_http_request_t rq = {.url = httpd_url(e.srv, "/bytes/100000")};
    uva_test_alloc_fail_after(n);
    uva_future_t *f = uva_http_stream_open(e.client, &rq);
    uva_test_alloc_fail_after(-1);
    if (f == NULL) continue;
    void *v = NULL;
    int rc = uva_await(f, &v);
    if (rc < 0) {
      ck_assert_int_eq(rc, UV_ENOMEM);
      continue;
    }
    int end;
    ck_assert_uint_eq(read_all(v, 65536, true, &end), 100000);
    uva_http_stream_close(v);
  }
  env_close(&e);
  return 0;
}

TASK_TEST(test_each_request_gets_its_own_error_text) {
  env_t e;
  env_open(&e);
  char e1[UVA_HTTP_ERROR_SIZE] = "x", e2[UVA_HTTP_ERROR_SIZE] = "x", e3[UVA_HTTP_ERROR_SIZE] = "x";
  uva_http_request_t r1 = {.url = "http://127.0.0.1:1/", .error = e1};
  uva_http_request_t r2 = {.url = httpd_url(e.srv, "/reset"), .error = e2};
  uva_http_request_t r3 = {.url = httpd_url(e.srv, "/ok"), .error = e3};
  uva_future_t *f[3] = {uva_http_request(e.client, &r1), uva_http_request(e.client, &r2),
                        uva_http_request(e.client, &r3)};
  ck_assert_int_eq(uva_await(f[0], NULL), UV_ECONNREFUSED);
  ck_assert_int_eq(uva_await(f[1], NULL), UV_ECONNRESET);
  ck_assert_int_eq(uva_await(f[2], NULL), 0);
  ck_assert_msg(strstr(e1, "port 1") != NULL, "e1: %s", e1);
  ck_assert_msg(e2[0] && strstr(e2, "port 1") == NULL, "e2: %s", e2);
  ck_assert_str_eq(e3, "");
  /* bad arguments and cancellation say so too */
  uva_http_request_t bad = {.url = "http://a b/", .error = e1};
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &bad), NULL), UV_EINVAL);
  ck_assert_str_eq(e1, "invalid request");
  r3.url = httpd_url(e.srv, "/delay/2000");
  uva_future_t *g = uva_http_request(e.client, &r3);
  uva_cancel(g);
  ck_assert_int_eq(uva_await(g, NULL), UV_ECANCELED);
  ck_assert_str_eq(e3, "cancelled");
  env_close(&e);
  return 0;
}

static Suite *suite(void) {
  Suite *s = suite_create("http_stream");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_stream_reads_a_large_body_in_chunks);
  tcase_add_test(tc, test_stream_slow_reader_pauses_the_transfer);
  tcase_add_test(tc, test_stream_follows_redirects_to_the_final_body);
  tcase_add_test(tc, test_stream_reset_mid_body_is_an_error_after_the_data);
  tcase_add_test(tc, test_stream_errors_and_bad_arguments);
  tcase_add_test(tc, test_stream_cancel_open_and_pending_read);
  tcase_add_test(tc, test_stream_closed_mid_transfer_or_never_taken);
  tcase_add_test(tc, test_stream_outlives_a_freed_client);
  tcase_add_test(tc, test_stream_head_request_ends_at_once);
  tcase_add_test(tc, test_upload_streams_a_file_as_the_body);
  tcase_add_test(tc, test_upload_bad_files_fail_cleanly);
  tcase_add_test(tc, test_upload_cancelled_mid_body_closes_the_file);
  tcase_add_test(tc, test_cookies_are_kept_only_when_enabled);
  tcase_add_test(tc, test_timings_are_in_order);
  tcase_add_test(tc, test_protocols_can_be_widened);
  tcase_add_test(tc, test_stream_survives_allocation_failures);
  tcase_add_test(tc, test_each_request_gets_its_own_error_text);
  suite_add_tcase(s, tc);
  return s;
}

TEST_MAIN(suite)
