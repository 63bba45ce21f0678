/* HTTP client against the tests' HTTP/1.1 server (httpd.h: routes, stats)
 * on 127.0.0.1. Server-side stats (connections, active, aborted...) let
 * the tests check what happened on the wire: connection reuse, limits,
 * and that a cancelled transfer really drops its connection. */
#include "http_env.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

/* Await a request; the response, or NULL with *rc the error. */
static uva_http_response_t *request(uva_http_client_t *c, const uva_http_request_t *rq,
                                    int *rc) {
  void *v = NULL;
  *rc = uva_await(uva_http_request(c, rq), &v);
  return v;
}

static uva_http_response_t *request_ok(uva_http_client_t *c, const uva_http_request_t *rq) {
  int rc;
  uva_http_response_t *r = request(c, rq, &rc);
  ck_assert_msg(rc == 0, "%s %s: %s (%s)", rq->method ? rq->method : "GET", rq->url,
                uva_err_name(rc), uva_http_last_error(c));
  ck_assert_ptr_nonnull(r);
  return r;
}

static uva_http_response_t *get_ok(uva_http_client_t *c, const char *u) {
  uva_http_request_t rq = {.url = u};
  return request_ok(c, &rq);
}

/* The error of a request that must fail. */
static int request_err(uva_http_client_t *c, const uva_http_request_t *rq) {
  int rc;
  uva_http_response_t *r = request(c, rq, &rc);
  ck_assert_msg(r == NULL, "%s: status %d, expected an error", rq->url, r ? r->status : 0);
  return rc;
}

static bool is_pattern(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != httpd_pattern(i)) return false;
  return true;
}

static bool ends_with(const char *s, const char *tail) {
  size_t n = strlen(s), m = strlen(tail);
  return n >= m && strcmp(s + n - m, tail) == 0;
}

/* ------------------------------------------------------------ basics */

TASK_TEST(test_http_get_ok) {
  env_t e;
  env_open(&e);
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/ok"));
  ck_assert_int_eq(r->status, 200);
  ck_assert_int_eq(r->http_version, 11);
  ck_assert_uint_eq(r->body_len, 5);
  ck_assert_str_eq(r->body, "hello");
  ck_assert_str_eq(uva_http_response_header(r, "x-test"), "yes"); /* sent "  yes " */
  ck_assert_str_eq(uva_http_response_header(r, "Content-Type"), "text/plain");
  ck_assert_ptr_null(uva_http_response_header(r, "X-Missing"));
  ck_assert_str_eq(r->effective_url, httpd_url(e.srv, "/ok"));
  uva_http_response_free(r);
  /* an unread result is freed with the future; a second request reuses
   * the easy handle and the connection */
  ck_assert_int_eq(uva_await(uva_http_get(e.client, httpd_url(e.srv, "/ok")), NULL), 0);
  r = get_ok(e.client, httpd_url(e.srv, "/ok"));
  ck_assert_str_eq(r->body, "hello");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_error_status_is_success) {
  env_t e;
  env_open(&e);
  static const int codes[] = {404, 500, 503, 201};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    char path[32], body[32];
    snprintf(path, sizeof path, "/status/%d", codes[i]);
    snprintf(body, sizeof body, "status %d", codes[i]);
    uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, path));
    ck_assert_int_eq(r->status, codes[i]);
    ck_assert_str_eq(r->body, body);
    uva_http_response_free(r);
  }
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/nowhere"));
  ck_assert_int_eq(r->status, 404);
  ck_assert_str_eq(r->body, "not found");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_chunked_body) {
  env_t e;
  env_open(&e);
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/chunked/50"));
  char want[1024] = "";
  for (int i = 0; i < 50; i++) snprintf(want + strlen(want), sizeof want - strlen(want),
                                        "chunk %d\n", i);
  ck_assert_int_eq(r->status, 200);
  ck_assert_uint_eq(r->body_len, strlen(want));
  ck_assert_str_eq(r->body, want);
  ck_assert_str_eq(uva_http_response_header(r, "Transfer-Encoding"), "chunked");
  ck_assert_ptr_null(uva_http_response_header(r, "Content-Length"));
  uva_http_response_free(r);
  /* an empty chunked body */
  r = get_ok(e.client, httpd_url(e.srv, "/chunked/0"));
  ck_assert_uint_eq(r->body_len, 0);
  ck_assert_str_eq(r->body, "");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_gzip_body_decoded) {
  env_t e;
  env_open(&e);
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/gzip"));
  size_t line = strlen(HTTPD_GZIP_TEXT_LINE);
  ck_assert_int_eq(r->status, 200);
  ck_assert_uint_eq(r->body_len, line * HTTPD_GZIP_TEXT_REPEAT);
  for (size_t i = 0; i < HTTPD_GZIP_TEXT_REPEAT; i++)
    ck_assert_int_eq(memcmp(r->body + i * line, HTTPD_GZIP_TEXT_LINE, line), 0);
  ck_assert_str_eq(uva_http_response_header(r, "Content-Encoding"), "gzip");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_head_has_empty_body) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/bytes/5000"), .method = "HEAD"};
  uva_http_response_t *r = request_ok(e.client, &rq);
  ck_assert_int_eq(r->status, 200);
  ck_assert_uint_eq(r->body_len, 0);
  ck_assert_str_eq(r->body, "");
  ck_assert_str_eq(uva_http_response_header(r, "Content-Length"), "5000");
  uva_http_response_free(r);
  /* the connection is still in step: the next answer is intact */
  r = get_ok(e.client, httpd_url(e.srv, "/ok"));
  ck_assert_str_eq(r->body, "hello");
  uva_http_response_free(r);
  ck_assert_int_eq(httpd_stats(e.srv)->connections, 1);
  env_close(&e);
  return 0;
}

/* ------------------------------------------------------------ errors */

TASK_TEST(test_http_timeout) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/hold"), .timeout_ms = 100};
  ck_assert_int_eq(request_err(e.client, &rq), UV_ETIMEDOUT);
  ck_assert_str_ne(uva_http_last_error(e.client), "");
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_drip_slower_than_timeout_gives_etimedout) {
  env_t e;
  env_open(&e);
  const httpd_stats_t *st = httpd_stats(e.srv);
  /* The head and half the body arrive at once, the rest never (the server
   * holds it): the 300 ms timeout ends the transfer, and the server must
   * see it abandoned. That needs the request to have reached the server
   * before the timeout, which no fixed timeout promises a slow machine:
   * each try goes over a connection the client already has (nothing to
   * connect), and a try whose request did not get there in time is made
   * again with twice the timeout. */
  for (int64_t ms = 300;; ms *= 2) {
    uva_http_response_free(get_ok(e.client, httpd_url(e.srv, "/ok")));
    long requests = st->requests, aborted = st->aborted;
    uva_http_request_t rq = {.url = httpd_url(e.srv, "/gate/20/10"), .timeout_ms = ms};
    ck_assert_int_eq(request_err(e.client, &rq), UV_ETIMEDOUT);
    ck_assert_str_ne(uva_http_last_error(e.client), "");
    /* the client closed the connection: the server ends it either way */
    WAIT_UNTIL(st->active == 0);
    if (st->requests == requests) continue; /* it never got there */
    /* the transfer was really abandoned: the server saw the hang-up */
    ck_assert_int_eq(st->aborted, aborted + 1);
    break;
  }
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_client_timeout_default) {
  env_t e;
  uva_http_client_opts_t o = {.timeout_ms = 100};
  env_open_with(&e, &o);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/hold")};
  ck_assert_int_eq(request_err(e.client, &rq), UV_ETIMEDOUT);
  /* a per-request timeout overrides it, and < 0 means none */
  rq.url = httpd_url(e.srv, "/delay/200");
  rq.timeout_ms = -1;
  uva_http_response_t *r = request_ok(e.client, &rq);
  ck_assert_str_eq(r->body, "delayed");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

/* The values are what a request is sure to stay within, on any machine:
 * what is tested is that setting them breaks nothing. */
TASK_TEST(test_http_connect_timeout_accepted) {
  env_t e;
  uva_http_client_opts_t o = {.connect_timeout_ms = FOREVER_MS};
  env_open_with(&e, &o);
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/ok"));
  ck_assert_str_eq(r->body, "hello");
  uva_http_response_free(r);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/ok"), .connect_timeout_ms = FOREVER_MS / 2};
  r = request_ok(e.client, &rq);
  ck_assert_str_eq(r->body, "hello");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_refused) {
  env_t e;
  env_open(&e);
  httpd_t *gone;
  ck_assert_int_eq(httpd_start(&gone, 0), 0);
  char u[64];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/ok", httpd_port(gone));
  httpd_stop(gone);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, u), NULL), UV_ECONNREFUSED);
  ck_assert_str_ne(uva_http_last_error(e.client), "");
  env_close(&e);
  return 0;
}

/* No descriptor left for the socket: UV_EMFILE and a message that says
 * so, not "connection refused"; the client works again once one is free. */
TASK_TEST(test_http_out_of_descriptors_is_emfile) {
  env_t e;
  env_open(&e);
  struct rlimit old;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  int lowest = dup(0); /* the lowest free number: every one below is taken */
  ck_assert_int_ge(lowest, 0);
  close(lowest);
  struct rlimit tight = {.rlim_cur = (rlim_t)lowest, .rlim_max = old.rlim_max};
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &tight), 0);
  char err[UVA_HTTP_ERROR_SIZE];
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/ok"), .error = err};
  int rc = request_err(e.client, &rq);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  ck_assert_msg(rc == UV_EMFILE, "%s: %s", uva_err_name(rc), err);
  ck_assert_msg(strstr(err, "too many open files") != NULL, "%s", err);
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/ok"));
  ck_assert_str_eq(r->body, "hello");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

/* The client's connections are close-on-exec: a child process started
 * while one is open does not hold it. */
TASK_TEST(test_http_sockets_are_close_on_exec) {
  env_t e;
  env_open(&e);
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/ok"));
  uva_http_response_free(r);
  int found = 0;
  for (int fd = 3; fd < 1024; fd++) { /* the idle connection, by its peer */
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0 || peer.sin_family != AF_INET ||
        ntohs(peer.sin_port) != httpd_port(e.srv))
      continue;
    found++;
    ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  }
  ck_assert_int_eq(found, 1);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_dns_failure) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = "http://nonexistent.invalid/"};
  ck_assert_int_eq(request_err(e.client, &rq), UV_EAI_NONAME);
  ck_assert_ptr_nonnull(strstr(uva_http_last_error(e.client), "nonexistent.invalid"));
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_protocol_not_allowed) {
  env_t e;
  env_open(&e);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, "ftp://127.0.0.1/x"), NULL),
                   UV_EPROTONOSUPPORT);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, "file:///etc/passwd"), NULL),
                   UV_EPROTONOSUPPORT);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_peer_closes_without_answer) {
  env_t e;
  env_open(&e);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, httpd_url(e.srv, "/close")), NULL),
                   UV_ECONNRESET);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_reset_mid_body_gives_econnreset) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/reset")};
  ck_assert_int_eq(request_err(e.client, &rq), UV_ECONNRESET);
  ck_assert_str_ne(uva_http_last_error(e.client), "");
  /* the client goes on with a fresh connection */
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/ok"));
  ck_assert_str_eq(r->body, "hello");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_bad_args) {
  env_t e;
  env_open(&e);
  const char *bad[] = {"X-Evil: a\r\nInjected: b", NULL};
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/ok"), .headers = bad};
  uva_future_t *f = uva_http_request(e.client, &rq);
  ck_assert(uva_future_is_done(f)); /* failed at once */
  ck_assert_int_eq(uva_await(f, NULL), UV_EINVAL);
  const char *bad_lf[] = {"X-Ok: 1", "X-Evil: a\nb", NULL};
  rq.headers = bad_lf;
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_EINVAL);
  const char *bad_cr[] = {"X-Evil: a\rb", NULL};
  rq.headers = bad_cr;
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_EINVAL);
  const char *no_colon[] = {"X-Evil", NULL};
  rq.headers = no_colon;
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_http_request(e.client, NULL), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, NULL), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_http_get(NULL, httpd_url(e.srv, "/ok")), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, "http://127.0.0.1/a b"), NULL), UV_EINVAL);
  uva_http_request_t rm = {.url = httpd_url(e.srv, "/ok"), .method = "GET\r\nX: y"};
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rm), NULL), UV_EINVAL);
  /* nothing of that reached the server */
  ck_assert_int_eq(httpd_stats(e.srv)->requests, 0);
  /* good headers go through */
  const char *good[] = {"X-Ok: 1", NULL};
  rq.headers = good;
  uva_http_response_free(request_ok(e.client, &rq));
  ck_assert_int_eq(httpd_stats(e.srv)->requests, 1);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_user_agent_with_crlf_rejected) {
  const char *bad[] = {"agent\r\nX-Evil: 1", "agent\nX", "agent\r"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uva_http_client_t *c = (uva_http_client_t *)&c; /* must be reset */
    uva_http_client_opts_t o = {.user_agent = bad[i]};
    ck_assert_int_eq(uva_http_client_new(&c, &o), UV_EINVAL);
    ck_assert_ptr_null(c);
  }
  ck_assert_int_eq(uva_http_client_new(NULL, NULL), UV_EINVAL);
  return 0;
}

/* --------------------------------------------------------- redirects */

TASK_TEST(test_http_redirects_followed) {
  env_t e;
  env_open(&e);
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/redirect/3"));
  ck_assert_int_eq(r->status, 200);
  ck_assert_str_eq(r->body, "done");
  ck_assert_msg(ends_with(r->effective_url, "/redirect/0"), "%s", r->effective_url);
  ck_assert_str_eq(r->effective_url, httpd_url(e.srv, "/redirect/0"));
  /* headers and body are the final response's only */
  ck_assert_ptr_null(uva_http_response_header(r, "Location"));
  ck_assert_str_eq(uva_http_response_header(r, "Content-Length"), "4");
  uva_http_response_free(r);
  ck_assert_int_eq(httpd_stats(e.srv)->requests, 4);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_too_many_redirects_gives_eloop) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/redirect/3"), .max_redirects = 2};
  ck_assert_int_eq(request_err(e.client, &rq), UV_ELOOP);
  ck_assert_str_ne(uva_http_last_error(e.client), "");
  /* exactly as many as allowed is fine */
  rq.max_redirects = 3;
  uva_http_response_t *r = request_ok(e.client, &rq);
  ck_assert_str_eq(r->body, "done");
  uva_http_response_free(r);
  env_close(&e);
  /* the client-wide default */
  uva_http_client_opts_t o = {.max_redirects = 2};
  env_open_with(&e, &o);
  rq.url = httpd_url(e.srv, "/redirect/3");
  rq.max_redirects = 0;
  ck_assert_int_eq(request_err(e.client, &rq), UV_ELOOP);
  rq.url = httpd_url(e.srv, "/redirect/2");
  uva_http_response_free(request_ok(e.client, &rq));
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_no_follow_returns_302) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/redirect/3"),
                           .follow_redirects = UVA_HTTP_NO_FOLLOW};
  uva_http_response_t *r = request_ok(e.client, &rq);
  ck_assert_int_eq(r->status, 302);
  ck_assert_str_eq(uva_http_response_header(r, "Location"), "/redirect/2");
  ck_assert_str_eq(r->body, "redirecting");
  ck_assert_str_eq(r->effective_url, httpd_url(e.srv, "/redirect/3"));
  uva_http_response_free(r);
  ck_assert_int_eq(httpd_stats(e.srv)->requests, 1);
  /* an explicit FOLLOW follows */
  rq.follow_redirects = UVA_HTTP_FOLLOW;
  r = request_ok(e.client, &rq);
  ck_assert_int_eq(r->status, 200);
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_redirect_loop_gives_eloop) {
  env_t e;
  env_open(&e);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, httpd_url(e.srv, "/loop")), NULL), UV_ELOOP);
  ck_assert_str_ne(uva_http_last_error(e.client), "");
  /* the default limit is 10: the first request and 10 redirects */
  ck_assert_int_eq(httpd_stats(e.srv)->requests, 11);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/loop"), .max_redirects = 3};
  ck_assert_int_eq(request_err(e.client, &rq), UV_ELOOP);
  ck_assert_int_eq(httpd_stats(e.srv)->requests, 11 + 4);
  env_close(&e);
  return 0;
}

/* ---------------------------------------------------------- max_body */

TASK_TEST(test_http_max_body_with_content_length) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/bytes/100000"), .max_body = 1000};
  ck_assert_int_eq(request_err(e.client, &rq), UV_E2BIG);
  ck_assert_str_ne(uva_http_last_error(e.client), "");
  /* a limit the body just fits */
  rq.max_body = 100000;
  uva_http_response_t *r = request_ok(e.client, &rq);
  ck_assert_uint_eq(r->body_len, 100000);
  ck_assert(is_pattern(r->body, r->body_len));
  uva_http_response_free(r);
  /* without a limit a whole MiB arrives */
  r = get_ok(e.client, httpd_url(e.srv, "/bytes/1048576"));
  ck_assert_uint_eq(r->body_len, 1048576);
  ck_assert(is_pattern(r->body, r->body_len));
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

/* No length announced: the limit must hit while the body streams in. */
TASK_TEST(test_http_max_body_with_chunked_body) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/chunked/1000"), .max_body = 1000};
  ck_assert_int_eq(request_err(e.client, &rq), UV_E2BIG);
  ck_assert_str_ne(uva_http_last_error(e.client), "");
  /* "chunk 0\n".."chunk 9\n" is 80 bytes: a limit of 80 takes it */
  rq.url = httpd_url(e.srv, "/chunked/10");
  rq.max_body = 80;
  uva_http_response_t *r = request_ok(e.client, &rq);
  ck_assert_uint_eq(r->body_len, 80);
  uva_http_response_free(r);
  rq.max_body = 79;
  ck_assert_int_eq(request_err(e.client, &rq), UV_E2BIG);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_client_max_body_and_override) {
  env_t e;
  uva_http_client_opts_t o = {.max_body = 4096};
  env_open_with(&e, &o);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/bytes/100000")};
  ck_assert_int_eq(request_err(e.client, &rq), UV_E2BIG);
  rq.url = httpd_url(e.srv, "/chunked/1000");
  ck_assert_int_eq(request_err(e.client, &rq), UV_E2BIG);
  uva_http_response_free(get_ok(e.client, httpd_url(e.srv, "/ok")));
  /* a request's own limit replaces the client's */
  rq.url = httpd_url(e.srv, "/bytes/100000");
  rq.max_body = 200000;
  uva_http_response_t *r = request_ok(e.client, &rq);
  ck_assert_uint_eq(r->body_len, 100000);
  ck_assert(is_pattern(r->body, r->body_len));
  uva_http_response_free(r);
  rq.url = httpd_url(e.srv, "/bytes/3000");
  rq.max_body = 2000;
  ck_assert_int_eq(request_err(e.client, &rq), UV_E2BIG);
  env_close(&e);
  return 0;
}

/* ------------------------------------------------- methods and headers */

static const char *echo_method(env_t *e, const char *method, const char *body,
                               char *got_body, size_t cap) {
  uva_http_request_t rq = {.url = httpd_url(e->srv, "/echo"), .method = method, .body = body,
                           .body_len = body ? strlen(body) : 0};
  uva_http_response_t *r = request_ok(e->client, &rq);
  ck_assert_int_eq(r->status, 200);
  snprintf(got_body, cap, "%s", r->body);
  static char m[16];
  const char *v = uva_http_response_header(r, "X-Echo-Method");
  snprintf(m, sizeof m, "%s", v ? v : "(none)");
  uva_http_response_free(r);
  return m;
}

TASK_TEST(test_http_methods) {
  env_t e;
  env_open(&e);
  char b[64];
  ck_assert_str_eq(echo_method(&e, NULL, NULL, b, sizeof b), "GET");
  ck_assert_str_eq(echo_method(&e, NULL, "data", b, sizeof b), "POST");
  ck_assert_str_eq(b, "data");
  ck_assert_str_eq(echo_method(&e, "PUT", "put-body", b, sizeof b), "PUT");
  ck_assert_str_eq(b, "put-body");
  ck_assert_str_eq(echo_method(&e, "PATCH", "patch-body", b, sizeof b), "PATCH");
  ck_assert_str_eq(b, "patch-body");
  ck_assert_str_eq(echo_method(&e, "DELETE", NULL, b, sizeof b), "DELETE");
  ck_assert_str_eq(b, "");
  ck_assert_str_eq(echo_method(&e, "HEAD", NULL, b, sizeof b), "HEAD");
  ck_assert_str_eq(b, "");
  ck_assert_str_eq(echo_method(&e, "GET", NULL, b, sizeof b), "GET");
  /* an empty body is still a POST with Content-Length: 0 */
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/echo"), .body = "", .body_len = 0};
  uva_http_response_t *r = request_ok(e.client, &rq);
  ck_assert_str_eq(uva_http_response_header(r, "X-Echo-Method"), "POST");
  ck_assert_str_eq(uva_http_response_header(r, "X-Echo-Content-Length"), "0");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_request_headers_arrive) {
  env_t e;
  env_open(&e);
  const char *hdrs[] = {"X-Custom: v1", "X-Two-Words: a b", "X-Empty;", NULL};
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/echo"), .headers = hdrs};
  uva_http_response_t *r = request_ok(e.client, &rq);
  ck_assert_str_eq(uva_http_response_header(r, "X-Echo-X-Custom"), "v1");
  ck_assert_str_eq(uva_http_response_header(r, "X-Echo-X-Two-Words"), "a b");
  /* curl 7.88's header API leaves the CR of an empty value in; the
   * library trims it */
  ck_assert_str_eq(uva_http_response_header(r, "X-Echo-X-Empty"), "");
  ck_assert_str_eq(uva_http_response_header(r, "X-Echo-Host"),
                   httpd_url(e.srv, "") + strlen("http://"));
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_empty_header_removes_default) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/echo")};
  uva_http_response_t *r = request_ok(e.client, &rq);
  ck_assert_str_eq(uva_http_response_header(r, "X-Echo-Accept"), "*/*");
  ck_assert_ptr_nonnull(uva_http_response_header(r, "X-Echo-User-Agent"));
  uva_http_response_free(r);
  const char *hdrs[] = {"Accept:", "User-Agent:", NULL};
  rq.headers = hdrs;
  r = request_ok(e.client, &rq);
  ck_assert_ptr_null(uva_http_response_header(r, "X-Echo-Accept"));
  ck_assert_ptr_null(uva_http_response_header(r, "X-Echo-User-Agent"));
  uva_http_response_free(r);
  /* and a replaced default is sent once, with the new value */
  const char *repl[] = {"Accept: text/plain", NULL};
  rq.headers = repl;
  r = request_ok(e.client, &rq);
  ck_assert_str_eq(uva_http_response_header(r, "X-Echo-Accept"), "text/plain");
  size_t n = 0;
  for (size_t i = 0; i < r->nheaders; i++) n += strcasecmp(r->headers[i].name, "X-Echo-Accept") == 0;
  ck_assert_uint_eq(n, 1);
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_user_agent) {
  env_t e;
  env_open(&e);
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/echo"));
  const char *ua = uva_http_response_header(r, "X-Echo-User-Agent");
  ck_assert_ptr_nonnull(ua);
  ck_assert_msg(strncmp(ua, "uvasync/", 8) == 0, "default user agent: %s", ua);
  uva_http_response_free(r);
  env_close(&e);
  uva_http_client_opts_t o = {.user_agent = "tester/1.0 (uvasync tests)"};
  env_open_with(&e, &o);
  r = get_ok(e.client, httpd_url(e.srv, "/echo"));
  ck_assert_str_eq(uva_http_response_header(r, "X-Echo-User-Agent"), o.user_agent);
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

static void post_roundtrip(env_t *e, size_t len) {
  char *payload = malloc(len);
  ck_assert_ptr_nonnull(payload);
  for (size_t i = 0; i < len; i++) payload[i] = (char)('A' + i % 23);
  const char *hdrs[] = {"Content-Type: application/octet-stream", NULL};
  uva_http_request_t rq = {.url = httpd_url(e->srv, "/echo"), .body = payload, .body_len = len,
                           .headers = hdrs};
  uva_future_t *f = uva_http_request(e->client, &rq);
  /* the body was copied: the caller's buffer may change at once */
  memset(payload, 'x', len);
  void *v;
  ck_assert_int_eq(uva_await(f, &v), 0);
  uva_http_response_t *r = v;
  ck_assert_int_eq(r->status, 200);
  ck_assert_uint_eq(r->body_len, len);
  for (size_t i = 0; i < len; i++)
    if (r->body[i] != (char)('A' + i % 23)) ck_abort_msg("byte %zu differs", i);
  ck_assert_str_eq(uva_http_response_header(r, "X-Echo-Content-Type"),
                   "application/octet-stream");
  uva_http_response_free(r);
  free(payload);
}

TASK_TEST(test_http_post_body_roundtrip) {
  env_t e;
  env_open(&e);
  post_roundtrip(&e, 3000);
  ck_assert_int_eq(httpd_stats(e.srv)->continues, 0);
  env_close(&e);
  return 0;
}

/* curl asks "Expect: 100-continue" before a large body and holds it back
 * until the server says go on. */
TASK_TEST(test_http_post_2mib_body_with_expect_continue) {
  env_t e;
  env_open(&e);
  post_roundtrip(&e, 2 << 20);
  ck_assert_int_eq(httpd_stats(e.srv)->continues, 1);
  env_close(&e);
  return 0;
}

/* Easy handles are reused, and one whose request was a plain GET keeps
 * the client's options: nothing of any request reaches the next one. */
TASK_TEST(test_http_nothing_of_a_request_reaches_the_next) {
  env_t e;
  env_open(&e);
  const char *hdrs[] = {"X-A: 1", NULL};
  for (int round = 0; round < 2; round++) {
    uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/echo"));
    ck_assert_str_eq(uva_http_response_header(r, "X-Echo-Method"), "GET");
    uva_http_response_free(r);
    uva_http_request_t put = {.url = httpd_url(e.srv, "/echo"), .method = "PUT", .body = "abc",
                              .body_len = 3, .headers = hdrs, .timeout_ms = FOREVER_MS,
                              .http_version = UVA_HTTP_VERSION_1_1, .max_redirects = 1};
    r = request_ok(e.client, &put);
    ck_assert_str_eq(uva_http_response_header(r, "X-Echo-Method"), "PUT");
    ck_assert_str_eq(r->body, "abc");
    uva_http_response_free(r);
    r = get_ok(e.client, httpd_url(e.srv, "/echo"));
    ck_assert_str_eq(uva_http_response_header(r, "X-Echo-Method"), "GET");
    ck_assert_ptr_null(uva_http_response_header(r, "X-Echo-X-A"));
    ck_assert_uint_eq(r->body_len, 0);
    uva_http_response_free(r);
    uva_http_request_t head = {.url = httpd_url(e.srv, "/bytes/10"), .method = "HEAD"};
    r = request_ok(e.client, &head);
    ck_assert_uint_eq(r->body_len, 0);
    uva_http_response_free(r);
    r = get_ok(e.client, httpd_url(e.srv, "/bytes/10"));
    ck_assert_uint_eq(r->body_len, 10);
    uva_http_response_free(r);
    uva_http_request_t nofollow = {.url = httpd_url(e.srv, "/redirect/2"),
                                   .follow_redirects = UVA_HTTP_NO_FOLLOW};
    r = request_ok(e.client, &nofollow);
    ck_assert_int_eq(r->status, 302);
    uva_http_response_free(r);
    r = get_ok(e.client, httpd_url(e.srv, "/redirect/2")); /* max_redirects 1 is gone too */
    ck_assert_int_eq(r->status, 200);
    ck_assert_int_eq(r->redirects, 2);
    uva_http_response_free(r);
    uva_http_request_t quick = {.url = httpd_url(e.srv, "/hold"), .timeout_ms = 50};
    ck_assert_int_eq(request_err(e.client, &quick), UV_ETIMEDOUT);
    r = get_ok(e.client, httpd_url(e.srv, "/delay/150"));
    ck_assert_str_eq(r->body, "delayed");
    uva_http_response_free(r);
  }
  env_close(&e);
  return 0;
}

/* -------------------------------------------------------- connections */

TASK_TEST(test_http_sequential_requests_reuse_one_connection) {
  env_t e;
  env_open(&e);
  for (int i = 0; i < 20; i++) {
    uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, i % 2 ? "/ok" : "/bytes/3000"));
    ck_assert_int_eq(r->status, 200);
    uva_http_response_free(r);
  }
  ck_assert_int_eq(httpd_stats(e.srv)->requests, 20);
  ck_assert_int_eq(httpd_stats(e.srv)->connections, 1);
  env_close(&e);
  return 0;
}

/* httpd honours "Connection: close"; the client then opens a new one. */
TASK_TEST(test_http_connection_close_header_closes) {
  env_t e;
  env_open(&e);
  const char *hdrs[] = {"Connection: close", NULL};
  uva_http_request_t rq = {.url = httpd_url(e.srv, "/ok"), .headers = hdrs};
  for (int i = 0; i < 3; i++) {
    uva_http_response_t *r = request_ok(e.client, &rq);
    ck_assert_str_eq(r->body, "hello");
    ck_assert_str_eq(uva_http_response_header(r, "Connection"), "close");
    uva_http_response_free(r);
  }
  ck_assert_int_eq(httpd_stats(e.srv)->connections, 3);
  env_close(&e);
  return 0;
}

/* Start n requests of path at once and check each answer's body. */
static void run_concurrent(env_t *e, int n, const char *path, const char *body) {
  uva_future_t **fs = calloc((size_t)n, sizeof *fs);
  ck_assert_ptr_nonnull(fs);
  for (int i = 0; i < n; i++) {
    fs[i] = uva_http_get(e->client, httpd_url(e->srv, path));
    ck_assert_ptr_nonnull(fs[i]);
  }
  for (int i = 0; i < n; i++) {
    void *v = NULL;
    int rc = uva_await(fs[i], &v);
    ck_assert_msg(rc == 0, "%d: %s (%s)", i, uva_err_name(rc), uva_http_last_error(e->client));
    uva_http_response_t *r = v;
    ck_assert_int_eq(r->status, 200);
    ck_assert_str_eq(r->body, body);
    uva_http_response_free(r);
  }
  free(fs);
}

TASK_TEST(test_http_max_host_connections_limits_parallelism) {
  env_t e;
  uva_http_client_opts_t o = {.max_host_connections = 2};
  env_open_with(&e, &o);
  run_concurrent(&e, 20, "/delay/50", "delayed");
  const httpd_stats_t *st = httpd_stats(e.srv);
  ck_assert_int_eq(st->requests, 20);
  ck_assert_int_le(st->max_active, 2);
  ck_assert_int_le(st->connections, 2); /* the two are reused, never replaced */
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_max_connections_limits_parallelism) {
  env_t e;
  uva_http_client_opts_t o = {.max_connections = 3};
  env_open_with(&e, &o);
  run_concurrent(&e, 20, "/delay/50", "delayed");
  const httpd_stats_t *st = httpd_stats(e.srv);
  ck_assert_int_eq(st->requests, 20);
  ck_assert_int_le(st->max_active, 3);
  ck_assert_int_le(st->connections, 3);
  env_close(&e);
  return 0;
}

/* A burst that ends before the next one starts keeps its connections:
 * curl sizes its cache by the easy handles it has at the moment, which
 * drop to none between bursts. */
TASK_TEST(test_http_bursts_reuse_their_connections) {
  env_t e;
  env_open(&e);
  for (int i = 0; i < 5; i++) run_concurrent(&e, 20, "/delay/20", "delayed");
  const httpd_stats_t *st = httpd_stats(e.srv);
  ck_assert_int_eq(st->requests, 100);
  ck_assert_int_le(st->connections, 20); /* 20 in flight at most */
  env_close(&e);
  return 0;
}

/* Without a limit, concurrent requests run on parallel connections: the
 * server answers none until all 20 are in. */
TASK_TEST(test_http_concurrent_requests_use_parallel_connections) {
  env_t e;
  env_open(&e);
  run_concurrent(&e, 20, "/barrier/20/5", "abcde");
  ck_assert_int_eq(httpd_stats(e.srv)->max_active, 20);
  env_close(&e);
  return 0;
}

/* Room for n connections at both ends (client and server are both in
 * this process): raise the soft limit up to the hard one if needed. */
static bool fd_room_for(rlim_t n) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
  if (rl.rlim_cur < n && rl.rlim_cur != RLIM_INFINITY) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
  }
  return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= n;
}

enum { NMANY = 1000 };

/* NMANY GETs of /bytes bodies of different lengths; the first `together`
 * of them are answered only once all those are in (/barrier). */
static void run_many(env_t *e, int together) {
  static uva_future_t *fs[NMANY];
  for (int i = 0; i < NMANY; i++) {
    char path[48];
    if (i < together) snprintf(path, sizeof path, "/barrier/%d/%d", together, 100 + i * 7);
    else snprintf(path, sizeof path, "/bytes/%d", 100 + i * 7);
    fs[i] = uva_http_get(e->client, httpd_url(e->srv, path));
    ck_assert_ptr_nonnull(fs[i]);
  }
  for (int i = 0; i < NMANY; i++) {
    void *v = NULL;
    int rc = uva_await(fs[i], &v);
    ck_assert_msg(rc == 0, "%d: %s (%s)", i, uva_err_name(rc), uva_http_last_error(e->client));
    uva_http_response_t *r = v;
    ck_assert_int_eq(r->status, 200);
    ck_assert_uint_eq(r->body_len, (size_t)(100 + i * 7));
    ck_assert(is_pattern(r->body, r->body_len));
    uva_http_response_free(r);
  }
  ck_assert_int_eq(httpd_stats(e->srv)->requests, NMANY);
}

TASK_TEST(test_http_thousand_concurrent_with_host_limit) {
  env_t e;
  uva_http_client_opts_t o = {.max_host_connections = 64};
  env_open_with(&e, &o);
  run_many(&e, 0);
  ck_assert_int_le(httpd_stats(e.srv)->max_active, 64);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_thousand_concurrent_unlimited) {
  if (!fd_room_for(2 * NMANY + 256)) {
    fprintf(stderr, "test_http_thousand_concurrent_unlimited: fd limit too low, skipped\n");
    return 0;
  }
  env_t e;
  env_open(&e);
  run_many(&e, 65); /* more than 64 at once, or it never ends */
  ck_assert_int_gt(httpd_stats(e.srv)->max_active, 64);
  env_close(&e);
  return 0;
}

/* ------------------------------------------------------- cancellation */

TASK_TEST(test_http_cancel_while_waiting_for_answer) {
  env_t e;
  env_open(&e);
  const httpd_stats_t *st = httpd_stats(e.srv);
  uva_future_t *f = uva_http_get(e.client, httpd_url(e.srv, "/hold"));
  WAIT_UNTIL(st->holds == 1); /* the server has it, and never answers */
  ck_assert(!uva_future_is_done(f));
  ck_assert_int_eq(uva_cancel(f), 1);
  ck_assert(uva_future_is_done(f)); /* at once */
  ck_assert_int_eq(uva_await(f, NULL), UV_ECANCELED);
  /* the connection is dropped: the server sees it */
  WAIT_UNTIL(st->aborted == 1 && st->active == 0);
  /* and the client goes on */
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/ok"));
  ck_assert_str_eq(r->body, "hello");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_cancel_while_body_streams) {
  env_t e;
  env_open(&e);
  const httpd_stats_t *st = httpd_stats(e.srv);
  uva_future_t *f = uva_http_get(e.client, httpd_url(e.srv, "/gate/100/10"));
  /* the head and 10 bytes are sent (the rest never is): once the loop has
   * polled the client's socket, the body is streaming */
  WAIT_UNTIL(st->holds == 1);
  settle();
  ck_assert(!uva_future_is_done(f));
  ck_assert_int_eq(uva_cancel(f), 1);
  ck_assert_int_eq(uva_await(f, NULL), UV_ECANCELED);
  WAIT_UNTIL(st->aborted == 1 && st->active == 0);
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/drip/5/1"));
  ck_assert_uint_eq(r->body_len, 5);
  ck_assert(is_pattern(r->body, 5));
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_wait_for_timeout_drops_connection) {
  env_t e;
  env_open(&e);
  const httpd_stats_t *st = httpd_stats(e.srv);
  /* the 100 ms count once the server holds the request (it never
   * answers): a deadline set before the request got there could pass
   * first on a slow machine, and then the server sees no transfer */
  uva_future_t *g = uva_http_get(e.client, httpd_url(e.srv, "/hold"));
  WAIT_UNTIL(st->holds == 1);
  ck_assert_int_eq(uva_await(uva_wait_for(g, 100), NULL), UV_ETIMEDOUT);
  WAIT_UNTIL(st->aborted == 1 && st->active == 0);
  uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, "/ok"));
  ck_assert_str_eq(r->body, "hello");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

/* Many cancels at different stages leave the client sound. */
TASK_TEST(test_http_client_works_after_many_cancels) {
  env_t e;
  env_open(&e);
  for (int i = 0; i < 10; i++) {
    /* neither ever ends by itself: held before the head, or after 10 bytes */
    uva_future_t *f = uva_http_get(e.client, httpd_url(e.srv, i % 2 ? "/hold" : "/gate/50/10"));
    for (int k = 0; k < i; k++) ck_assert_int_eq(uva_yield(), 0);
    if (i >= 5) ck_assert_int_eq(uva_await(uva_sleep((uint64_t)(i * 5)), NULL), 0);
    ck_assert_int_eq(uva_cancel(f), 1);
    ck_assert_int_eq(uva_await(f, NULL), UV_ECANCELED);
  }
  run_concurrent(&e, 10, "/ok", "hello");
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_client_free_cancels_in_flight) {
  env_t e;
  env_open(&e);
  const httpd_stats_t *st = httpd_stats(e.srv);
  uva_future_t *fs[5];
  for (int i = 0; i < 5; i++) fs[i] = uva_http_get(e.client, httpd_url(e.srv, "/hold"));
  WAIT_UNTIL(st->holds == 5);
  uva_http_client_free(e.client);
  for (int i = 0; i < 5; i++) {
    ck_assert(uva_future_is_done(fs[i]));
    ck_assert_int_eq(uva_await(fs[i], NULL), UV_ECANCELED);
  }
  /* the connections went with the client */
  WAIT_UNTIL(st->active == 0);
  ck_assert_int_eq(st->aborted, 5);
  /* a future nobody awaits is released mid-transfer: freed at the end */
  ck_assert_int_eq(uva_http_client_new(&e.client, NULL), 0);
  uva_release(uva_http_get(e.client, httpd_url(e.srv, "/hold")));
  WAIT_UNTIL(st->holds == 6);
  env_close(&e);
  return 0;
}

/* Body buffers are reused through the client's pool; a response may
 * outlive its client (it frees its own buffer then). Bodies stay intact
 * whichever pooled buffer they land in. */
TASK_TEST(test_http_bodies_reuse_buffers_and_outlive_client) {
  env_t e;
  env_open(&e);
  for (int i = 0; i < 6; i++) {
    uva_http_response_t *r = get_ok(e.client, httpd_url(e.srv, i % 2 ? "/bytes/1048576" : "/ok"));
    if (i % 2) {
      ck_assert_uint_eq(r->body_len, 1048576);
      ck_assert(is_pattern(r->body, r->body_len));
    } else {
      ck_assert_str_eq(r->body, "hello");
    }
    uva_http_response_free(r);
  }
  uva_http_response_t *kept1 = get_ok(e.client, httpd_url(e.srv, "/bytes/1048576"));
  uva_http_response_t *kept2 = get_ok(e.client, httpd_url(e.srv, "/ok"));
  env_close(&e); /* the client goes first */
  ck_assert(is_pattern(kept1->body, 1048576));
  ck_assert_str_eq(kept2->body, "hello");
  uva_http_response_free(kept1);
  uva_http_response_free(kept2);
  return 0;
}

/* ------------------------------------------------- allocation failures */

/* A GET under failure injection: success with the right body, or
 * UV_ENOMEM (a NULL future counts as that); never anything else. Returns
 * 1 if it succeeded. */
static int sweep_check(uva_http_client_t *c, uva_future_t *f, size_t len) {
  void *v = NULL;
  int rc = uva_await(f, &v);
  uva_test_alloc_fail_after(-1);
  if (rc == 0) {
    uva_http_response_t *r = v;
    ck_assert_int_eq(r->status, 200);
    ck_assert_uint_eq(r->body_len, len);
    ck_assert(is_pattern(r->body, len));
    uva_http_response_free(r);
    return 1;
  }
  ck_assert_msg(rc == UV_ENOMEM, "%s (%s)", uva_err_name(rc), uva_http_last_error(c));
  return 0;
}

/* Whether the n-th allocation after `before` was reached (so a failure
 * was injected): fail_after(n) fails allocation number max(n, 1). */
static bool injected(long before, long n) {
  return uva_test_alloc_count() - before >= (n > 0 ? n : 1);
}

typedef struct sweep {
  long n, at;
  bool armed;
} sweep_t;

/* httpd's after-response hook: fail the client's allocations only once
 * the answer is on the wire, so the server itself is done with it. */
static void arm_failure(void *data) {
  sweep_t *s = data;
  if (!s->armed) return;
  s->armed = false;
  s->at = uva_test_alloc_count();
  uva_test_alloc_fail_after(s->n);
}

TASK_TEST(test_http_allocation_failure_sweep) {
  env_t e;
  env_open(&e);
  const char *u = httpd_url(e.srv, "/bytes/50000");
  int ok = 0, failed = 0;
  /* client creation */
  for (long n = 0; n < 100; n++) {
    uva_http_client_t *c = NULL;
    long before = uva_test_alloc_count();
    uva_test_alloc_fail_after(n);
    int rc = uva_http_client_new(&c, NULL);
    uva_test_alloc_fail_after(-1);
    if (rc == 0) uva_http_client_free(c);
    else ck_assert_int_eq(rc, UV_ENOMEM);
    if (!injected(before, n)) break;
  }
  /* starting a request */
  for (long n = 0; n < 100; n++) {
    long before = uva_test_alloc_count();
    uva_test_alloc_fail_after(n);
    uva_future_t *f = uva_http_get(e.client, u);
    bool hit = injected(before, n);
    uva_test_alloc_fail_after(-1);
    if (sweep_check(e.client, f, 50000)) ok++;
    else failed++;
    if (!hit) break;
  }
  ck_assert_int_gt(failed, 0);
  /* receiving the answer: headers, body, the response itself */
  sweep_t s = {0};
  httpd_set_after_response(e.srv, arm_failure, &s);
  long n;
  for (n = 0; n < 200; n++) {
    s.n = n;
    s.armed = true;
    uva_future_t *f = uva_http_get(e.client, u);
    int got = sweep_check(e.client, f, 50000);
    ck_assert(!s.armed); /* the hook ran */
    bool hit = uva_test_alloc_count() - s.at >= (n > 0 ? n : 1);
    if (got) ok++;
    else failed++;
    if (!hit) {
      ck_assert(got);
      break;
    }
  }
  ck_assert_int_lt(n, 200);
  httpd_set_after_response(e.srv, NULL, NULL);
  ck_assert_int_gt(ok, 1);
  /* the client is sound afterwards */
  uva_http_response_t *r = get_ok(e.client, u);
  ck_assert(is_pattern(r->body, 50000));
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

/* ------------------------------------------------------- the server */

/* httpd itself: a chunked request body with a trailer, sent by hand (the
 * client has no chunked uploads), followed by a pipelined request. */
TASK_TEST(test_httpd_chunked_request_body) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  void *v;
  ck_assert_int_eq(uva_await(uva_tcp_connect("127.0.0.1", httpd_port(h)), &v), 0);
  uva_stream_t *s = v;
  static const char req[] = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                            "\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"
                            "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  ck_assert_int_eq(uva_await(uva_stream_write(s, req, sizeof req - 1), NULL), 0);
  char all[4096];
  size_t len = 0;
  int n;
  while ((n = uva_await(uva_stream_read(s, all + len, sizeof all - 1 - len), NULL)) > 0)
    len += (size_t)n;
  ck_assert_int_eq(n, UV_EOF);
  all[len] = '\0';
  ck_assert_ptr_nonnull(strstr(all, "X-Echo-Method: POST\r\n"));
  ck_assert_ptr_nonnull(strstr(all, "Content-Length: 12\r\n"));
  ck_assert_ptr_nonnull(strstr(all, "\r\n\r\nhello, worldHTTP/1.1 200 OK\r\n"));
  ck_assert(ends_with(all, "\r\n\r\nhello"));
  ck_assert_ptr_nonnull(strstr(all, "Connection: close\r\n"));
  uva_stream_close(s);
  ck_assert_int_eq(httpd_stats(h)->requests, 2);
  ck_assert_int_eq(httpd_stats(h)->connections, 1);
  httpd_stop(h);
  return 0;
}

/* httpd_stop in the middle of answers: connections are cancelled and
 * nothing leaks (RUN_MAIN checks). */
TASK_TEST(test_httpd_stop_mid_answer) {
  env_t e;
  env_open(&e);
  uva_future_t *fs[3] = {uva_http_get(e.client, httpd_url(e.srv, "/hold")),
                         uva_http_get(e.client, httpd_url(e.srv, "/gate/100/10")),
                         uva_http_get(e.client, httpd_url(e.srv, "/bytes/30000000"))};
  WAIT_UNTIL(httpd_stats(e.srv)->requests == 3);
  httpd_stop(e.srv);
  for (int i = 0; i < 3; i++) {
    int rc = uva_await(fs[i], NULL);
    /* the big body may have made it before the stop */
    ck_assert_msg(rc == UV_ECONNRESET || (i == 2 && rc == 0), "%d: %s", i, uva_err_name(rc));
  }
  uva_http_client_free(e.client);
  return 0;
}

/* ---------------------------------------- the servers, by raw requests */

/* The demo site's server (tools/demo/site.c, linked into this test) is
 * tested here too, as the tests' server is: this file is its only other
 * client at the byte level. */
#include "site.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define RAW_CAP (256 * 1024)

/* What a server sent on one connection. */
typedef struct reply {
  char *data;   /* len bytes, then a NUL */
  size_t len;
  int end;      /* UV_EOF: the server closed; 0: still open, as far as
                 * raw_read_until read; UV_ETIMEDOUT: still open after
                 * raw_read_for's time */
  uint64_t ms;  /* loop time until end, from the connect (raw_exchange) or
                 * from the start of the read */
} reply_t;

static uva_stream_t *raw_connect(int port) {
  void *v = NULL;
  ck_assert_int_eq(uva_await(uva_tcp_connect("127.0.0.1", port), &v), 0);
  return v;
}

static void raw_send(uva_stream_t *s, const void *p, size_t n) {
  ck_assert_int_eq(uva_await(uva_stream_write(s, p, n), NULL), 0);
}

static bool starts_with(const char *s, const char *head) {
  return strncmp(s, head, strlen(head)) == 0;
}

/* Status lines in some data (bodies here never hold "HTTP/1.1 "). */
static int status_lines(const char *data) {
  int n = 0;
  for (const char *p = data; (p = strstr(p, "HTTP/1.1 ")) != NULL; p++) n++;
  return n;
}

static int responses(const reply_t *r) { return status_lines(r->data); }

/* Read until the server closes the connection or, with want > 0, until
 * what came holds want status lines and ends with tail (then end is 0).
 * No bound of its own: a server that never gets there fails the test by
 * Check's timeout, not by a guess at how long a slow machine may take.
 * t0: the loop time reply.ms counts from. */
static reply_t raw_collect(uva_stream_t *s, uint64_t t0, int want, const char *tail) {
  reply_t r = {.data = malloc(RAW_CAP)};
  ck_assert_ptr_nonnull(r.data);
  r.data[0] = '\0';
  while (want <= 0 || status_lines(r.data) < want || !ends_with(r.data, tail)) {
    ck_assert_uint_lt(r.len, RAW_CAP - 1);
    int n = uva_await(uva_stream_read(s, r.data + r.len, RAW_CAP - 1 - r.len), NULL);
    if (n <= 0) {
      r.end = n;
      break;
    }
    r.len += (size_t)n;
    r.data[r.len] = '\0';
  }
  r.ms = uva_now() - t0;
  return r;
}

/* Read until the server closes the connection. */
static reply_t raw_read(uva_stream_t *s) { return raw_collect(s, uva_now(), 0, NULL); }

/* Read until want answers have come, the last one ending in tail. */
static reply_t raw_read_until(uva_stream_t *s, int want, const char *tail) {
  return raw_collect(s, uva_now(), want, tail);
}

/* Read for ms of loop time: for a test of how long a server keeps a
 * connection open (end UV_ETIMEDOUT: it still is). */
static reply_t raw_read_for(uva_stream_t *s, int ms) {
  reply_t r = {.data = malloc(RAW_CAP)};
  ck_assert_ptr_nonnull(r.data);
  uint64_t t0 = uva_now(), deadline = t0 + (uint64_t)ms;
  for (;;) {
    ck_assert_uint_lt(r.len, RAW_CAP - 1);
    uint64_t now = uva_now();
    uva_future_t *rd = uva_stream_read(s, r.data + r.len, RAW_CAP - 1 - r.len);
    int n = uva_await(uva_wait_for(rd, now >= deadline ? 0 : (int64_t)(deadline - now)), NULL);
    if (n <= 0) {
      r.end = n;
      break;
    }
    r.len += (size_t)n;
  }
  r.data[r.len] = '\0';
  r.ms = uva_now() - t0;
  return r;
}

/* Send req on a new connection, then read until the server closes it;
 * reply.ms counts from before the connect. */
static reply_t raw_exchange(int port, const void *req, size_t len) {
  uint64_t t0 = uva_now();
  uva_stream_t *s = raw_connect(port);
  raw_send(s, req, len);
  reply_t r = raw_collect(s, t0, 0, NULL);
  uva_stream_close(s);
  return r;
}

#define RAW(port, lit) raw_exchange((port), (lit), sizeof(lit) - 1)

static void assert_still_open(uva_stream_t *s);

/* Send req on a new connection, read want answers, the last ending in
 * tail, and check that the server keeps the connection open after them
 * (assert_still_open: one more request, with "Connection: close"). */
static reply_t raw_exchange_kept(int port, const void *req, size_t len, int want,
                                 const char *tail) {
  uva_stream_t *s = raw_connect(port);
  raw_send(s, req, len);
  reply_t r = raw_read_until(s, want, tail);
  ck_assert_msg(r.end == 0, "closed after %d answers: %.300s", responses(&r), r.data);
  assert_still_open(s);
  uva_stream_close(s);
  return r;
}

#define RAW_KEPT(port, lit, want, tail) \
  raw_exchange_kept((port), (lit), sizeof(lit) - 1, (want), (tail))

static void reply_free(reply_t *r) {
  free(r->data);
  r->data = NULL;
}

/* The server kept connection s open after its last answer: it answers
 * one more request on it (with a status line) and then closes it. Proof
 * by an event, where waiting a while for a close that does not come
 * would prove nothing on a slow machine. */
static void assert_still_open(uva_stream_t *s) {
  static const char more[] = "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  raw_send(s, more, sizeof more - 1);
  reply_t r = raw_read(s);
  ck_assert_msg(starts_with(r.data, "HTTP/1.1 ") && responses(&r) == 1,
                "no answer on a connection that should be open: %.200s", r.data);
  ck_assert_int_eq(r.end, UV_EOF);
  reply_free(&r);
}

/* The one answer of r: status `status`, "Connection: close", and then the
 * server closed the connection. */
static void assert_refused(const reply_t *r, int status) {
  char line[32];
  snprintf(line, sizeof line, "HTTP/1.1 %d ", status);
  ck_assert_msg(starts_with(r->data, line), "want %d, got: %.200s", status, r->data);
  ck_assert_int_eq(responses(r), 1);
  ck_assert_ptr_nonnull(strstr(r->data, "\r\nConnection: close\r\n"));
  ck_assert_msg(r->end == UV_EOF, "connection not closed: %s", uva_err_name(r->end));
}

/* Every LF of the head of r (up to the first empty line) ends a CRLF. */
static bool head_lines_crlf(const reply_t *r) {
  const char *end = strstr(r->data, "\r\n\r\n");
  ck_assert_ptr_nonnull(end);
  for (const char *p = r->data; p < end; p++)
    if (*p == '\n' && (p == r->data || p[-1] != '\r')) return false;
  return true;
}

/* httpd: Content-Length fields that disagree are refused, and the
 * bytes after the head (a request, here) are never served. Equal ones
 * (as fields or a list) are one length. */
TASK_TEST(test_httpd_conflicting_content_length_refused) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  /* the second request is the 29-byte body of the first */
  static const char r1[] = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 29\r\n"
                           "Content-Length: 0\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
  static const char r2[] = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                           "Content-Length: 29\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
  static const char r3[] = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 29\r\n"
                           "\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
  const char *bad[] = {r1, r2, r3};
  for (int i = 0; i < 3; i++) {
    reply_t r = raw_exchange(httpd_port(h), bad[i], strlen(bad[i]));
    assert_refused(&r, 400);
    ck_assert_ptr_null(strstr(r.data, "hello"));
    reply_free(&r);
  }
  reply_t r = RAW(httpd_port(h), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                 "Content-Length: 5, 5\r\nConnection: close\r\n\r\nhello");
  ck_assert(starts_with(r.data, "HTTP/1.1 200 "));
  ck_assert(ends_with(r.data, "\r\n\r\nhello"));
  ck_assert_int_eq(r.end, UV_EOF);
  reply_free(&r);
  ck_assert_int_eq(httpd_stats(h)->refused, 3);
  ck_assert_int_eq(httpd_stats(h)->requests, 4); /* never the smuggled one */
  httpd_stop(h);
  return 0;
}

/* httpd: "Content-Length : 38" (a blank before the colon) is 400
 * (RFC 9112 5.1); the body is not served as a request either. */
TASK_TEST(test_httpd_blank_before_colon_refused) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  reply_t r = RAW(httpd_port(h), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length : 29\r\n\r\n"
                                 "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_refused(&r, 400);
  reply_free(&r);
  /* nor a blank at the start of a line (an obsolete folded line) */
  r = RAW(httpd_port(h), "GET /ok HTTP/1.1\r\nHost: x\r\n X-Folded: y\r\n\r\n");
  assert_refused(&r, 400);
  reply_free(&r);
  ck_assert_int_eq(httpd_stats(h)->requests, 0);
  httpd_stop(h);
  return 0;
}

/* httpd: Transfer-Encoding and Content-Length together: the chunked
 * framing is used, and the connection closed after the answer (what
 * follows is not served). */
TASK_TEST(test_httpd_te_with_content_length_closes) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  reply_t r = RAW(httpd_port(h), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                                 "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n");
  ck_assert(starts_with(r.data, "HTTP/1.1 200 "));
  ck_assert_int_eq(responses(&r), 1);
  ck_assert_ptr_nonnull(strstr(r.data, "\r\nConnection: close\r\n"));
  ck_assert(ends_with(r.data, "\r\n\r\nhello"));
  ck_assert_int_eq(r.end, UV_EOF);
  reply_free(&r);
  /* codings other than a final "chunked" */
  r = RAW(httpd_port(h), "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n"
                         "\r\n5\r\nhello\r\n0\r\n\r\n");
  assert_refused(&r, 400);
  reply_free(&r);
  r = RAW(httpd_port(h), "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
                         "\r\n5\r\nhello\r\n0\r\n\r\n");
  assert_refused(&r, 501);
  reply_free(&r);
  ck_assert_int_eq(httpd_stats(h)->requests, 3);
  httpd_stop(h);
  return 0;
}

/* httpd: numbers are digits only: a chunk size with trailing junk,
 * a sign or "0x", a Content-Length with a sign or inner blanks: 400. */
TASK_TEST(test_httpd_strict_numbers) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  static const char *const bad[] = {
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5zz\r\nhello\r\n0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\nhello",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\nhello",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    reply_t r = raw_exchange(httpd_port(h), bad[i], strlen(bad[i]));
    assert_refused(&r, 400);
    reply_free(&r);
  }
  /* what is allowed: extensions, blanks around the value, leading zeros */
  reply_t r = RAW(httpd_port(h), "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                 "\r\n05;ext=1\r\nhello\r\n0 \r\n\r\n"
                                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length:  003 \r\n"
                                 "Connection: close\r\n\r\nabc");
  ck_assert_int_eq(responses(&r), 2);
  ck_assert_ptr_nonnull(strstr(r.data, "\r\n\r\nhelloHTTP/1.1 200 "));
  ck_assert(ends_with(r.data, "\r\n\r\nabc"));
  ck_assert_int_eq(r.end, UV_EOF);
  reply_free(&r);
  httpd_stop(h);
  return 0;
}

/* httpd: empty lines before a request line are skipped (RFC 9112
 * 2.2), also between pipelined requests. */
TASK_TEST(test_httpd_leading_empty_lines_ignored) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  reply_t r = RAW(httpd_port(h), "\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
                                 "\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ck_assert_int_eq(responses(&r), 2);
  ck_assert(starts_with(r.data, "HTTP/1.1 200 "));
  ck_assert(ends_with(r.data, "\r\n\r\nhello"));
  ck_assert_int_eq(r.end, UV_EOF);
  reply_free(&r);
  ck_assert_int_eq(httpd_stats(h)->refused, 0);
  httpd_stop(h);
  return 0;
}

/* httpd: bare-LF line ends are accepted (the head, chunk lines,
 * trailers) and do not leave the server waiting for a CRLF. */
TASK_TEST(test_httpd_bare_lf_line_ends) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  reply_t r = RAW(httpd_port(h), "POST /echo HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n"
                                 "5\nhello\n0\nX-Trailer: 1\n\n"
                                 "GET /ok HTTP/1.1\nHost: x\nConnection: close\n\n");
  ck_assert_int_eq(r.end, UV_EOF);
  ck_assert_int_eq(responses(&r), 2);
  ck_assert_ptr_nonnull(strstr(r.data, "\r\n\r\nhelloHTTP/1.1 200 "));
  ck_assert(ends_with(r.data, "\r\n\r\nhello"));
  /* not answered by way of the (10 s) head timeout */
  ck_assert_uint_lt(r.ms, HTTPD_HEAD_TIMEOUT_MS);
  reply_free(&r);
  httpd_stop(h);
  return 0;
}

/* httpd: HTTP/1.0 clients never get a chunked answer (/chunked is
 * close-delimited for them), are closed after an answer unless they ask
 * for keep-alive, which is then said back. */
TASK_TEST(test_httpd_http10) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  reply_t r = RAW(httpd_port(h), "GET /chunked/3 HTTP/1.0\r\n\r\n");
  ck_assert(starts_with(r.data, "HTTP/1.1 200 "));
  ck_assert_ptr_null(strcasestr(r.data, "Transfer-Encoding"));
  ck_assert(ends_with(r.data, "\r\n\r\nchunk 0\nchunk 1\nchunk 2\n"));
  ck_assert_int_eq(r.end, UV_EOF);
  reply_free(&r);
  r = RAW(httpd_port(h), "GET /ok HTTP/1.0\r\n\r\n");
  ck_assert(ends_with(r.data, "\r\n\r\nhello"));
  ck_assert_ptr_nonnull(strstr(r.data, "\r\nConnection: close\r\n"));
  ck_assert_int_eq(r.end, UV_EOF);
  reply_free(&r);
  /* keep-alive: two answers on one connection, then still open */
  uva_stream_t *s = raw_connect(httpd_port(h));
  static const char ka[] = "GET /ok HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                           "POST /echo HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n"
                           "Expect: 100-continue\r\n\r\nhi";
  raw_send(s, ka, sizeof ka - 1);
  r = raw_read_until(s, 2, "\r\n\r\nhi");
  ck_assert_int_eq(r.end, 0); /* still open: the next request is answered */
  ck_assert_int_eq(responses(&r), 2);
  ck_assert(ends_with(r.data, "\r\n\r\nhi"));
  ck_assert_ptr_nonnull(strstr(r.data, "\r\nConnection: keep-alive\r\n"));
  ck_assert_ptr_null(strstr(r.data, "100 Continue")); /* not to HTTP/1.0 */
  reply_free(&r);
  /* and /chunked on it ends it */
  static const char last[] = "GET /chunked/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
  raw_send(s, last, sizeof last - 1);
  r = raw_read(s);
  ck_assert(ends_with(r.data, "\r\n\r\nchunk 0\n"));
  ck_assert_int_eq(r.end, UV_EOF);
  reply_free(&r);
  uva_stream_close(s);
  httpd_stop(h);
  return 0;
}

/* httpd: a head over 64 KiB is 431 and the connection closed; so is
 * one long line without an end. */
TASK_TEST(test_httpd_head_over_64k_is_431) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  size_t n = 70000;
  char *req = malloc(n + 10000);
  ck_assert_ptr_nonnull(req);
  int len = sprintf(req, "GET /ok HTTP/1.1\r\nHost: x\r\n");
  for (int i = 0; i < 10; i++) len += sprintf(req + len, "X-H%d: %07000d\r\n", i, 0);
  len += sprintf(req + len, "\r\n");
  reply_t r = raw_exchange(httpd_port(h), req, (size_t)len);
  assert_refused(&r, 431);
  reply_free(&r);
  memset(req, 'a', n);
  r = raw_exchange(httpd_port(h), req, n);
  assert_refused(&r, 431);
  reply_free(&r);
  free(req);
  /* just under the limit is fine */
  req = malloc(HTTPD_HEAD_MAX);
  ck_assert_ptr_nonnull(req);
  len = sprintf(req, "GET /ok HTTP/1.1\r\nConnection: close\r\nX-Pad: ");
  memset(req + len, 'p', HTTPD_HEAD_MAX - (size_t)len - 4);
  memcpy(req + HTTPD_HEAD_MAX - 4, "\r\n\r\n", 4);
  r = raw_exchange(httpd_port(h), req, HTTPD_HEAD_MAX);
  ck_assert(starts_with(r.data, "HTTP/1.1 200 "));
  reply_free(&r);
  free(req);
  httpd_stop(h);
  return 0;
}

/* httpd: what a client sends cannot add header lines to an answer:
 * a bare LF ends a line (the rest is a header of its own, or refused), a
 * lone CR or another control character is refused. /echo and
 * /set-cookie. */
TASK_TEST(test_httpd_no_header_injection) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  reply_t r = RAW(httpd_port(h), "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\nInjected: 1\r\n"
                                 "Connection: close\r\n\r\n");
  ck_assert(starts_with(r.data, "HTTP/1.1 200 "));
  ck_assert(head_lines_crlf(&r));
  ck_assert_ptr_null(strstr(r.data, "\r\nInjected:"));
  ck_assert_ptr_nonnull(strstr(r.data, "\r\nX-Echo-X-A: a\r\n"));
  reply_free(&r);
  r = RAW(httpd_port(h), "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\nno colon here\r\n\r\n");
  assert_refused(&r, 400);
  ck_assert(head_lines_crlf(&r));
  reply_free(&r);
  static const char *const bad[] = {
      "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\rInjected: 1\r\n\r\n",
      "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\x01\r\n\r\n",
      "GET /set-cookie/a/b\nInjected: 1 HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /set-cookie/a/b\rInjected:1 HTTP/1.1\r\nHost: x\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = raw_exchange(httpd_port(h), bad[i], strlen(bad[i]));
    assert_refused(&r, 400);
    ck_assert(head_lines_crlf(&r));
    ck_assert_ptr_null(strstr(r.data, "Injected"));
    reply_free(&r);
  }
  r = RAW(httpd_port(h), "GET /set-cookie/a/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ck_assert_ptr_nonnull(strstr(r.data, "\r\nSet-Cookie: a=b; Path=/\r\n"));
  reply_free(&r);
  httpd_stop(h);
  return 0;
}

/* httpd: a head that does not complete within the head timeout gets
 * 408 and the connection closed; an idle connection is closed without an
 * answer; a body that stops coming too. */
TASK_TEST(test_httpd_head_timeout) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  httpd_set_head_timeout(h, 200);
  reply_t r = RAW(httpd_port(h), "GET /ok HTTP/1.1\r\nHost: x\r\n");
  assert_refused(&r, 408);
  /* ms counts from before the connect, so from before the server's wait:
   * never less than the timeout, however slow the machine; and less than
   * the default 10 s, which a slow machine cannot stretch the 200 ms to */
  ck_assert_uint_ge(r.ms, 150);
  ck_assert_uint_lt(r.ms, HTTPD_HEAD_TIMEOUT_MS);
  reply_free(&r);
  /* no line end at all yet */
  r = RAW(httpd_port(h), "GET /ok HT");
  assert_refused(&r, 408);
  reply_free(&r);
  /* idle: nothing sent */
  uva_stream_t *s = raw_connect(httpd_port(h));
  r = raw_read(s);
  uva_stream_close(s);
  ck_assert_int_eq(r.end, UV_EOF);
  ck_assert_uint_eq(r.len, 0);
  ck_assert_uint_lt(r.ms, HTTPD_HEAD_TIMEOUT_MS); /* the 200 ms, not the default */
  reply_free(&r);
  /* idle after an answer (keep-alive) */
  r = RAW(httpd_port(h), "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n");
  ck_assert_int_eq(r.end, UV_EOF);
  ck_assert_int_eq(responses(&r), 1);
  ck_assert(ends_with(r.data, "\r\n\r\nhello"));
  reply_free(&r);
  /* a body that stops short */
  r = RAW(httpd_port(h), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
  assert_refused(&r, 408);
  reply_free(&r);
  r = RAW(httpd_port(h), "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe");
  assert_refused(&r, 408);
  reply_free(&r);
  ck_assert_int_eq(httpd_stats(h)->timeouts, 4); /* the body ones are not head timeouts */
  WAIT_UNTIL(httpd_stats(h)->active == 0);
  httpd_stop(h);
  return 0;
}

/* The demo site, fast: no delays. */
static site_t *site_quick(int head_timeout_ms) {
  site_opts_t o = {.pages = 13, .seed = 1, .head_timeout_ms = head_timeout_ms};
  site_t *s;
  ck_assert_int_eq(site_start(&s, &o), 0);
  return s;
}

/* site: HTTP/1.0 is closed after the answer unless it asks for
 * keep-alive (said back then); HTTP/1.1 stays open. */
TASK_TEST(test_site_http10_closes_unless_keep_alive) {
  site_t *s = site_quick(0);
  reply_t r = RAW(site_port(s), "GET / HTTP/1.0\r\n\r\n");
  ck_assert(starts_with(r.data, "HTTP/1.1 200 "));
  ck_assert_int_eq(r.end, UV_EOF);
  ck_assert_ptr_nonnull(strstr(r.data, "\r\nConnection: close\r\n"));
  ck_assert(ends_with(r.data, "</html>\n"));
  reply_free(&r);
  /* still open after the two (the HEAD's answer ends its head) */
  r = RAW_KEPT(site_port(s), "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                             "HEAD /page/1.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
               2, "\r\n\r\n");
  ck_assert_int_eq(responses(&r), 2);
  ck_assert_ptr_nonnull(strstr(r.data, "\r\nConnection: keep-alive\r\n"));
  reply_free(&r);
  r = RAW_KEPT(site_port(s), "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1, "</html>\n");
  ck_assert_int_eq(responses(&r), 1);
  ck_assert_ptr_null(strstr(r.data, "\r\nConnection:"));
  reply_free(&r);
  ck_assert_int_eq(site_stats(s)->requests, 6); /* 4, and the 2 that proved "open" */
  site_stop(s);
  return 0;
}

/* site: Connection is a list of tokens: "Connection:close", and
 * "close" anywhere in the list, close; "closed" is not "close". */
TASK_TEST(test_site_connection_tokens) {
  site_t *s = site_quick(0);
  static const char *const closing[] = {
      "GET / HTTP/1.1\r\nHost: x\r\nConnection:close\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nConnection: CLOSE \r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nconnection:\tclose,,\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof closing / sizeof closing[0]; i++) {
    reply_t r = raw_exchange(site_port(s), closing[i], strlen(closing[i]));
    ck_assert_int_eq(responses(&r), 1);
    ck_assert_msg(r.end == UV_EOF, "%zu: not closed", i);
    reply_free(&r);
  }
  /* "closed" and "X-Connection: close" are not a close: both answered */
  reply_t r = RAW_KEPT(site_port(s),
                       "GET / HTTP/1.1\r\nHost: x\r\nX-Info: a\r\nConnection: closed\r\n\r\n"
                       "GET /page/1.html HTTP/1.1\r\nX-Connection: close\r\n\r\n",
                       2, "</html>\n");
  ck_assert_int_eq(responses(&r), 2);
  reply_free(&r);
  site_stop(s);
  return 0;
}

/* site: a request body is read and dropped, never taken for a
 * request; chunked bodies are refused (501), and so are bodies over
 * 1 MiB (413). */
TASK_TEST(test_site_request_body_dropped) {
  site_t *s = site_quick(0);
  reply_t r = RAW(site_port(s), "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\n\r\n"
                                "GET /secret HTTP/1.1\r\nHost: x\r\nX-Pad: 12\r\n\r\n"
                                "GET /page/1.html HTTP/1.1\r\nConnection: close\r\n\r\n");
  ck_assert_int_eq(responses(&r), 2);
  /* the status line: the pages carry the port, which may hold "404" */
  ck_assert_ptr_null(strstr(r.data, "HTTP/1.1 404 "));
  ck_assert_int_eq(r.end, UV_EOF);
  reply_free(&r);
  size_t n;
  const site_request_t *log = site_log(s, &n);
  ck_assert_uint_eq(n, 2);
  ck_assert_str_eq(log[0].path, "/");
  ck_assert_str_eq(log[1].path, "/page/1.html");
  r = RAW(site_port(s), "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "2c\r\nGET /secret HTTP/1.1\r\nHost: x\r\nX-Pad: 12\r\n\r\n\r\n0\r\n\r\n");
  assert_refused(&r, 501);
  reply_free(&r);
  r = RAW(site_port(s), "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\nabc");
  assert_refused(&r, 413);
  reply_free(&r);
  r = RAW(site_port(s), "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd");
  assert_refused(&r, 400);
  reply_free(&r);
  r = RAW(site_port(s), "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc");
  assert_refused(&r, 400);
  reply_free(&r);
  ck_assert_int_eq(site_stats(s)->requests, 2); /* refused ones are not logged */
  ck_assert_int_eq(site_stats(s)->refused, 4);
  site_stop(s);
  return 0;
}

/* site: a request line without a version, or otherwise malformed,
 * is 400; a method longer than any buffer is still one method, and a
 * path over 1023 bytes is 414. */
TASK_TEST(test_site_request_line) {
  site_t *s = site_quick(0);
  static const char *const bad[] = {
      "GET /\r\n\r\n",          "GET / \r\n\r\n",          "GET\r\n\r\n",
      "GET / HTTP/1.1 x\r\n\r\n", "GET  / HTTP/1.1\r\n\r\n",  "GET / HTTP/1\r\n\r\n",
      "GET / FTP/1.1\r\n\r\n",   "G(T / HTTP/1.1\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    reply_t r = raw_exchange(site_port(s), bad[i], strlen(bad[i]));
    assert_refused(&r, 400);
    reply_free(&r);
  }
  reply_t r = RAW(site_port(s), "GET / HTTP/2.0\r\n\r\n");
  assert_refused(&r, 505);
  reply_free(&r);
  /* a method of 26 letters: the old %15s split it into a method and a
   * path ("PQRSTUVWXYZ") */
  r = RAW(site_port(s), "ABCDEFGHIJKLMNOPQRSTUVWXYZ /page/2.html HTTP/1.1\r\nConnection: close\r\n\r\n");
  ck_assert(starts_with(r.data, "HTTP/1.1 200 "));
  ck_assert_int_eq(r.end, UV_EOF);
  reply_free(&r);
  size_t n;
  const site_request_t *log = site_log(s, &n);
  ck_assert_uint_eq(n, 1);
  ck_assert_str_eq(log[0].path, "/page/2.html");
  char req[1200];
  int len = snprintf(req, sizeof req, "GET /%01030d HTTP/1.1\r\n\r\n", 0);
  r = raw_exchange(site_port(s), req, (size_t)len);
  assert_refused(&r, 414);
  reply_free(&r);
  site_stop(s);
  return 0;
}

/* site: a head over 16 KiB is 431 and the connection closed. */
TASK_TEST(test_site_head_over_16k_is_431) {
  site_t *s = site_quick(0);
  char *req = malloc(20000);
  ck_assert_ptr_nonnull(req);
  int len = sprintf(req, "GET / HTTP/1.1\r\nHost: x\r\n");
  for (int i = 0; i < 4; i++) len += sprintf(req + len, "X-H%d: %04500d\r\n", i, 0);
  len += sprintf(req + len, "\r\n");
  reply_t r = raw_exchange(site_port(s), req, (size_t)len);
  assert_refused(&r, 431);
  reply_free(&r);
  memset(req, 'a', 20000); /* no line end at all */
  r = raw_exchange(site_port(s), req, 20000);
  assert_refused(&r, 431);
  reply_free(&r);
  free(req);
  ck_assert_int_eq(site_stats(s)->requests, 0);
  site_stop(s);
  return 0;
}

/* site: the 404 page shows the path HTML-escaped. */
TASK_TEST(test_site_404_escapes_path) {
  site_t *s = site_quick(0);
  reply_t r = RAW(site_port(s), "GET /<script>alert('x&y')</script>\"> HTTP/1.1\r\n"
                                "Connection: close\r\n\r\n");
  ck_assert(starts_with(r.data, "HTTP/1.1 404 "));
  ck_assert_ptr_null(strstr(r.data, "<script>"));
  ck_assert_ptr_nonnull(strstr(r.data, "<p>No /&lt;script&gt;alert(&#39;x&amp;y&#39;)"
                                       "&lt;/script&gt;&quot;&gt; here.</p>"));
  /* and the Content-Length counts the escaped body */
  const char *cl = strstr(r.data, "Content-Length: ");
  const char *body = strstr(r.data, "\r\n\r\n");
  ck_assert(cl && body);
  ck_assert_uint_eq(strtoul(cl + 16, NULL, 10), strlen(body + 4));
  reply_free(&r);
  site_stop(s);
  return 0;
}

/* site: a head not complete within the head timeout gets 408 and the
 * connection closed; an idle connection is closed. */
TASK_TEST(test_site_head_timeout) {
  site_t *s = site_quick(200);
  reply_t r = RAW(site_port(s), "GET / HTTP/1.1\r\nHost: x\r\n");
  assert_refused(&r, 408);
  /* from before the connect: at least the 200 ms; less than the 10 s
   * default, which no slowness stretches 200 ms into */
  ck_assert_uint_ge(r.ms, 150);
  ck_assert_uint_lt(r.ms, 10000);
  reply_free(&r);
  uva_stream_t *c = raw_connect(site_port(s));
  r = raw_read(c);
  uva_stream_close(c);
  ck_assert_int_eq(r.end, UV_EOF);
  ck_assert_uint_eq(r.len, 0);
  reply_free(&r);
  /* keep-alive idle after an answer */
  r = RAW(site_port(s), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  ck_assert_int_eq(responses(&r), 1);
  ck_assert_int_eq(r.end, UV_EOF);
  reply_free(&r);
  ck_assert_int_eq(site_stats(s)->timeouts, 3);
  site_stop(s);
  /* the default is generous: 10 s, so still open after 500 ms (a slow
   * machine only makes the site's 10 s, counted from before our 500 ms,
   * run out later) */
  s = site_quick(0);
  c = raw_connect(site_port(s));
  static const char part[] = "GET / HTTP/1.1\r\nHost: x\r\n";
  raw_send(c, part, sizeof part - 1);
  r = raw_read_for(c, 500);
  uva_stream_close(c);
  ck_assert_int_eq(r.end, UV_ETIMEDOUT);
  ck_assert_uint_eq(r.len, 0);
  reply_free(&r);
  site_stop(s);
  return 0;
}

static int site_stop_task(void *arg) {
  site_stop(arg);
  return 0;
}

/* site_stop cancelled while it waits for the connections: it must still
 * not free the site before they have ended. A connection stuck in a write
 * (its client reads nothing, with a tiny receive buffer) outlives the
 * cancel of uva_server_close's future. */
TASK_TEST(test_site_stop_cancelled_waits_for_connections) {
  site_t *s = site_quick(0);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ck_assert_int_ge(fd, 0);
  int small = 4096;
  ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)site_port(s))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0); /* the kernel accepts */
  /* requests with large answers: 404 pages with 1000 '<' in the path,
   * each escaped into "&lt;" */
  char req[1100];
  int len = sprintf(req, "GET /");
  memset(req + len, '<', 1000);
  len += 1000;
  len += sprintf(req + len, " HTTP/1.1\r\n\r\n");
  /* send until the server stops reading: stuck in a write */
  size_t off = 0;
  long last = -1;
  int still = 0;
  while (still < 20) { /* no progress over 20 looks: the client reads nothing, so for good */
    ssize_t n;
    while ((n = send(fd, req + off, (size_t)len - off, MSG_DONTWAIT)) > 0)
      off = (off + (size_t)n) % (size_t)len;
    ck_assert(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    ck_assert_int_eq(uva_await(uva_sleep(5), NULL), 0);
    const site_stats_t *st = site_stats(s);
    still = st->in_flight == 1 && st->requests == last ? still + 1 : 0;
    last = st->requests;
  }
  uva_future_t *t = uva_spawn(site_stop_task, s);
  ck_assert_ptr_nonnull(t);
  settle(); /* site_stop awaits the server's close now */
  ck_assert(!uva_future_is_done(t));
  uva_cancel(t);
  ck_assert_int_eq(uva_await(uva_sleep(100), NULL), 0);
  ck_assert_msg(!uva_future_is_done(t), "site_stop returned with a connection still running");
  close(fd); /* the write fails: the connection ends, then site_stop */
  ck_assert_int_eq(uva_await(t, NULL), 0);
  return 0;
}

static Suite *http_suite(void) {
  Suite *s = suite_create("http");
  TCase *tc = tcase_create("client");
  tcase_add_test(tc, test_http_get_ok);
  tcase_add_test(tc, test_http_error_status_is_success);
  tcase_add_test(tc, test_http_chunked_body);
  tcase_add_test(tc, test_http_gzip_body_decoded);
  tcase_add_test(tc, test_http_head_has_empty_body);
  tcase_add_test(tc, test_http_timeout);
  tcase_add_test(tc, test_http_drip_slower_than_timeout_gives_etimedout);
  tcase_add_test(tc, test_http_client_timeout_default);
  tcase_add_test(tc, test_http_connect_timeout_accepted);
  tcase_add_test(tc, test_http_refused);
  tcase_add_test(tc, test_http_out_of_descriptors_is_emfile);
  tcase_add_test(tc, test_http_sockets_are_close_on_exec);
  tcase_add_test(tc, test_http_dns_failure);
  tcase_add_test(tc, test_http_protocol_not_allowed);
  tcase_add_test(tc, test_http_peer_closes_without_answer);
  tcase_add_test(tc, test_http_reset_mid_body_gives_econnreset);
  tcase_add_test(tc, test_http_bad_args);
  tcase_add_test(tc, test_http_user_agent_with_crlf_rejected);
  tcase_add_test(tc, test_http_redirects_followed);
  tcase_add_test(tc, test_http_too_many_redirects_gives_eloop);
  tcase_add_test(tc, test_http_no_follow_returns_302);
  tcase_add_test(tc, test_http_redirect_loop_gives_eloop);
  tcase_add_test(tc, test_http_max_body_with_content_length);
  tcase_add_test(tc, test_http_max_body_with_chunked_body);
  tcase_add_test(tc, test_http_client_max_body_and_override);
  tcase_add_test(tc, test_http_methods);
  tcase_add_test(tc, test_http_request_headers_arrive);
  tcase_add_test(tc, test_http_empty_header_removes_default);
  tcase_add_test(tc, test_http_user_agent);
  tcase_add_test(tc, test_http_post_body_roundtrip);
  tcase_add_test(tc, test_http_post_2mib_body_with_expect_continue);
  tcase_add_test(tc, test_http_sequential_requests_reuse_one_connection);
  tcase_add_test(tc, test_http_connection_close_header_closes);
  tcase_add_test(tc, test_http_max_host_connections_limits_parallelism);
  tcase_add_test(tc, test_http_max_connections_limits_parallelism);
  tcase_add_test(tc, test_http_nothing_of_a_request_reaches_the_next);
  tcase_add_test(tc, test_http_concurrent_requests_use_parallel_connections);
  tcase_add_test(tc, test_http_bursts_reuse_their_connections);
  tcase_add_test(tc, test_http_thousand_concurrent_with_host_limit);
  tcase_add_test(tc, test_http_thousand_concurrent_unlimited);
  tcase_add_test(tc, test_http_cancel_while_waiting_for_answer);
  tcase_add_test(tc, test_http_cancel_while_body_streams);
  tcase_add_test(tc, test_http_wait_for_timeout_drops_connection);
  tcase_add_test(tc, test_http_client_works_after_many_cancels);
  tcase_add_test(tc, test_http_client_free_cancels_in_flight);
  tcase_add_test(tc, test_http_bodies_reuse_buffers_and_outlive_client);
  tcase_add_test(tc, test_http_allocation_failure_sweep);
  suite_add_tcase(s, tc);
  TCase *srv = tcase_create("httpd");
  tcase_add_test(srv, test_httpd_chunked_request_body);
  tcase_add_test(srv, test_httpd_stop_mid_answer);
  tcase_add_test(srv, test_httpd_conflicting_content_length_refused);
  tcase_add_test(srv, test_httpd_blank_before_colon_refused);
  tcase_add_test(srv, test_httpd_te_with_content_length_closes);
  tcase_add_test(srv, test_httpd_strict_numbers);
  tcase_add_test(srv, test_httpd_leading_empty_lines_ignored);
  tcase_add_test(srv, test_httpd_bare_lf_line_ends);
  tcase_add_test(srv, test_httpd_http10);
  tcase_add_test(srv, test_httpd_head_over_64k_is_431);
  tcase_add_test(srv, test_httpd_no_header_injection);
  tcase_add_test(srv, test_httpd_head_timeout);
  suite_add_tcase(s, srv);
  TCase *site = tcase_create("site");
  tcase_add_test(site, test_site_http10_closes_unless_keep_alive);
  tcase_add_test(site, test_site_connection_tokens);
  tcase_add_test(site, test_site_request_body_dropped);
  tcase_add_test(site, test_site_request_line);
  tcase_add_test(site, test_site_head_over_16k_is_431);
  tcase_add_test(site, test_site_404_escapes_path);
  tcase_add_test(site, test_site_head_timeout);
  tcase_add_test(site, test_site_stop_cancelled_waits_for_connections);
  suite_add_tcase(s, site);
  return s;
}

TEST_MAIN(http_suite)
