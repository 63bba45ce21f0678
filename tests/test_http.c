/* HTTP client against a small HTTP/1.1 server built on uva_tcp_listen in
 * the test itself (127.0.0.1, port 0). Routes:
 *   /ok          200, "hello", X-Test: yes
 *   /status/404  404
 *   /redirect    302 -> /ok
 *   /loop        302 -> /loop
 *   /slow        answers after 2 s
 *   /big         1 MiB body
 *   /echo        echoes the request body
 *   /close       closes the connection without answering */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BIG_LEN (1024 * 1024)
static char big_body[BIG_LEN];

static int respond(uva_stream_t *c, int code, const char *reason, const char *extra,
                   const void *body, size_t len) {
  char head[512];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s\r\n", code, reason,
                   len, extra ? extra : "");
  int rc = uva_await(uva_stream_write(c, head, (size_t)n), NULL);
  if (rc == 0 && len) rc = uva_await(uva_stream_write(c, body, len), NULL);
  return rc;
}

static int http_conn(uva_stream_t *c, void *arg) {
  (void)arg;
  for (;;) {
    void *v;
    int n = uva_await(uva_stream_read_until(c, "\r\n\r\n", 4, 0), &v);
    if (n < 0) return 0;
    uva_bytes_t *req = v;
    char method[16] = "", path[256] = "";
    sscanf(req->data, "%15s %255s", method, path);
    size_t clen = 0;
    for (char *p = req->data; (p = strchr(p, '\n')) != NULL;) {
      p++;
      if (strncasecmp(p, "Content-Length:", 15) == 0) clen = strtoul(p + 15, NULL, 10);
    }
    uva_free(req);
    char *body = NULL;
    if (clen) {
      body = malloc(clen);
      if (uva_await(uva_stream_read_exactly(c, body, clen), NULL) < 0) {
        free(body);
        return 0;
      }
    }
    int rc = 0;
    if (strcmp(path, "/ok") == 0) {
      rc = respond(c, 200, "OK", "Content-Type: text/plain\r\nX-Test:  yes \r\n", "hello", 5);
    } else if (strcmp(path, "/status/404") == 0) {
      rc = respond(c, 404, "Not Found", NULL, "nope", 4);
    } else if (strcmp(path, "/redirect") == 0) {
      rc = respond(c, 302, "Found", "Location: /ok\r\n", NULL, 0);
    } else if (strcmp(path, "/loop") == 0) {
      rc = respond(c, 302, "Found", "Location: /loop\r\n", NULL, 0);
    } else if (strcmp(path, "/slow") == 0) {
      rc = uva_await(uva_sleep(2000), NULL);
      if (rc == 0) rc = respond(c, 200, "OK", NULL, "slow", 4);
    } else if (strcmp(path, "/big") == 0) {
      rc = respond(c, 200, "OK", NULL, big_body, BIG_LEN);
    } else if (strcmp(path, "/echo") == 0) {
      rc = respond(c, 200, "OK", NULL, body, clen);
    } else if (strcmp(path, "/close") == 0) {
      rc = -1;
    } else {
      rc = respond(c, 404, "Not Found", NULL, NULL, 0);
    }
    free(body);
    if (rc < 0) return 0;
  }
}

typedef struct env {
  uva_server_t *srv;
  uva_http_client_t *client;
  int port;
} env_t;

static void env_open(env_t *e) {
  for (size_t i = 0; i < BIG_LEN; i++) big_body[i] = (char)('a' + i % 26);
  ck_assert_int_eq(uva_tcp_listen(&e->srv, "127.0.0.1", 0, 0, http_conn, NULL), 0);
  e->port = uva_server_port(e->srv);
  ck_assert_int_eq(uva_http_client_new(&e->client, NULL), 0);
}

static void env_close(env_t *e) {
  uva_http_client_free(e->client);
  ck_assert_int_eq(uva_await(uva_server_close(e->srv, 1), NULL), 0);
}

static const char *url(const env_t *e, const char *path) {
  static char buf[4][128];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "http://127.0.0.1:%d%s", e->port, path);
  return buf[k];
}

static uva_http_response_t *get_ok(uva_http_client_t *c, const char *u) {
  void *v = NULL;
  int rc = uva_await(uva_http_get(c, u), &v);
  ck_assert_msg(rc == 0, "GET %s: %s (%s)", u, uva_err_name(rc), uva_http_last_error(c));
  ck_assert_ptr_nonnull(v);
  return v;
}

TASK_TEST(test_http_get_ok) {
  env_t e;
  env_open(&e);
  uva_http_response_t *r = get_ok(e.client, url(&e, "/ok"));
  ck_assert_int_eq(r->status, 200);
  ck_assert_int_eq(r->http_version, 11);
  ck_assert_uint_eq(r->body_len, 5);
  ck_assert_str_eq(r->body, "hello");
  ck_assert_str_eq(uva_http_response_header(r, "x-test"), "yes");
  ck_assert_str_eq(uva_http_response_header(r, "Content-Type"), "text/plain");
  ck_assert_ptr_null(uva_http_response_header(r, "X-Missing"));
  ck_assert_str_eq(r->effective_url, url(&e, "/ok"));
  uva_http_response_free(r);
  /* an unread result is freed with the future; a second request reuses
   * the easy handle and the connection */
  ck_assert_int_eq(uva_await(uva_http_get(e.client, url(&e, "/ok")), NULL), 0);
  r = get_ok(e.client, url(&e, "/ok"));
  ck_assert_str_eq(r->body, "hello");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_404_is_success) {
  env_t e;
  env_open(&e);
  uva_http_response_t *r = get_ok(e.client, url(&e, "/status/404"));
  ck_assert_int_eq(r->status, 404);
  ck_assert_str_eq(r->body, "nope");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_redirect) {
  env_t e;
  env_open(&e);
  uva_http_response_t *r = get_ok(e.client, url(&e, "/redirect"));
  ck_assert_int_eq(r->status, 200);
  ck_assert_str_eq(r->body, "hello");
  ck_assert_str_eq(r->effective_url, url(&e, "/ok"));
  ck_assert_str_eq(uva_http_response_header(r, "X-Test"), "yes");
  ck_assert_ptr_null(uva_http_response_header(r, "Location"));
  uva_http_response_free(r);
  /* not followed: the 302 is the response */
  uva_http_request_t rq = {.url = url(&e, "/redirect"), .follow_redirects = UVA_HTTP_NO_FOLLOW};
  void *v;
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), &v), 0);
  r = v;
  ck_assert_int_eq(r->status, 302);
  ck_assert_str_eq(uva_http_response_header(r, "Location"), "/ok");
  uva_http_response_free(r);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_redirect_loop) {
  env_t e;
  env_open(&e);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, url(&e, "/loop")), NULL), UV_ELOOP);
  ck_assert_str_ne(uva_http_last_error(e.client), "");
  uva_http_request_t rq = {.url = url(&e, "/loop"), .max_redirects = 3};
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_ELOOP);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_timeout) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = url(&e, "/slow"), .timeout_ms = 100};
  uint64_t t0 = uva_now();
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_ETIMEDOUT);
  ck_assert_uint_lt(uva_now() - t0, 1500);
  ck_assert_str_ne(uva_http_last_error(e.client), "");
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_refused) {
  env_t e;
  env_open(&e);
  uva_server_t *tmp;
  ck_assert_int_eq(uva_tcp_listen(&tmp, "127.0.0.1", 0, 0, http_conn, NULL), 0);
  int port = uva_server_port(tmp);
  ck_assert_int_eq(uva_await(uva_server_close(tmp, 1), NULL), 0);
  char u[64];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/ok", port);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, u), NULL), UV_ECONNREFUSED);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_dns_failure) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = "http://nonexistent.invalid/", .timeout_ms = 10000};
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_EAI_NONAME);
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

TASK_TEST(test_http_bad_args) {
  env_t e;
  env_open(&e);
  const char *bad[] = {"X-Evil: a\r\nInjected: b", NULL};
  uva_http_request_t rq = {.url = url(&e, "/ok"), .headers = bad};
  uva_future_t *f = uva_http_request(e.client, &rq);
  ck_assert(uva_future_is_done(f)); /* failed at once */
  ck_assert_int_eq(uva_await(f, NULL), UV_EINVAL);
  const char *bad_lf[] = {"X-Ok: 1", "X-Evil: a\nb", NULL};
  rq.headers = bad_lf;
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_http_request(e.client, NULL), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, NULL), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_http_get(NULL, url(&e, "/ok")), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, "http://127.0.0.1/a b"), NULL), UV_EINVAL);
  uva_http_request_t rm = {.url = url(&e, "/ok"), .method = "GET\r\nX: y"};
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rm), NULL), UV_EINVAL);
  /* good headers go through */
  const char *good[] = {"X-Ok: 1", NULL};
  rq.headers = good;
  void *v;
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), &v), 0);
  uva_http_response_free(v);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_max_body) {
  env_t e;
  env_open(&e);
  uva_http_request_t rq = {.url = url(&e, "/big"), .max_body = 1000};
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), NULL), UV_E2BIG);
  /* without a limit the whole MiB arrives */
  uva_http_response_t *r = get_ok(e.client, url(&e, "/big"));
  ck_assert_uint_eq(r->body_len, BIG_LEN);
  ck_assert_int_eq(memcmp(r->body, big_body, BIG_LEN), 0);
  uva_http_response_free(r);
  /* a client-wide default */
  uva_http_client_t *small;
  uva_http_client_opts_t o = {.max_body = 4096};
  ck_assert_int_eq(uva_http_client_new(&small, &o), 0);
  ck_assert_int_eq(uva_await(uva_http_get(small, url(&e, "/big")), NULL), UV_E2BIG);
  ck_assert_int_eq(uva_await(uva_http_get(small, url(&e, "/ok")), NULL), 0);
  uva_http_client_free(small);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_post_echo) {
  env_t e;
  env_open(&e);
  char payload[3000];
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (char)('A' + i % 23);
  const char *hdrs[] = {"Content-Type: application/octet-stream", NULL};
  uva_http_request_t rq = {.url = url(&e, "/echo"), .body = payload,
                           .body_len = sizeof payload, .headers = hdrs};
  void *v;
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &rq), &v), 0);
  uva_http_response_t *r = v;
  ck_assert_int_eq(r->status, 200);
  ck_assert_uint_eq(r->body_len, sizeof payload);
  ck_assert_int_eq(memcmp(r->body, payload, sizeof payload), 0);
  uva_http_response_free(r);
  /* PUT with an explicit method */
  uva_http_request_t put = {.url = url(&e, "/echo"), .method = "PUT", .body = "abc", .body_len = 3};
  ck_assert_int_eq(uva_await(uva_http_request(e.client, &put), &v), 0);
  ck_assert_str_eq(((uva_http_response_t *)v)->body, "abc");
  uva_http_response_free(v);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_peer_closes) {
  env_t e;
  env_open(&e);
  ck_assert_int_eq(uva_await(uva_http_get(e.client, url(&e, "/close")), NULL), UV_ECONNRESET);
  env_close(&e);
  return 0;
}

TASK_TEST(test_http_cancel) {
  env_t e;
  env_open(&e);
  uva_future_t *f = uva_http_get(e.client, url(&e, "/slow"));
  ck_assert_int_eq(uva_await(uva_sleep(100), NULL), 0);
  ck_assert(!uva_future_is_done(f));
  ck_assert_int_eq(uva_cancel(f), 1);
  ck_assert(uva_future_is_done(f));
  ck_assert_int_eq(uva_await(f, NULL), UV_ECANCELED);
  /* wait_for over a request */
  ck_assert_int_eq(uva_await(uva_wait_for(uva_http_get(e.client, url(&e, "/slow")), 100), NULL),
                   UV_ETIMEDOUT);
  /* the client still works */
  uva_http_response_t *r = get_ok(e.client, url(&e, "/ok"));
  ck_assert_str_eq(r->body, "hello");
  uva_http_response_free(r);
  /* a request still running when the client is freed: UV_ECANCELED */
  f = uva_http_get(e.client, url(&e, "/slow"));
  ck_assert_int_eq(uva_await(uva_sleep(50), NULL), 0);
  uva_http_client_free(e.client);
  ck_assert_int_eq(uva_await(f, NULL), UV_ECANCELED);
  /* a future nobody awaits is released mid-transfer: freed at the end */
  ck_assert_int_eq(uva_http_client_new(&e.client, NULL), 0);
  uva_release(uva_http_get(e.client, url(&e, "/slow")));
  ck_assert_int_eq(uva_await(uva_sleep(50), NULL), 0);
  env_close(&e);
  return 0;
}

#define NCONC 200
TASK_TEST(test_http_concurrent) {
  env_t e;
  env_open(&e);
  static uva_future_t *fs[NCONC];
  for (int i = 0; i < NCONC; i++) {
    fs[i] = uva_http_get(e.client, url(&e, i % 2 ? "/ok" : "/echo"));
    ck_assert_ptr_nonnull(fs[i]);
  }
  for (int i = 0; i < NCONC; i++) {
    void *v;
    int rc = uva_await(fs[i], &v);
    ck_assert_msg(rc == 0, "%d: %s (%s)", i, uva_err_name(rc), uva_http_last_error(e.client));
    uva_http_response_t *r = v;
    ck_assert_int_eq(r->status, 200);
    ck_assert_str_eq(r->body, i % 2 ? "hello" : "");
    uva_http_response_free(r);
  }
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
    uva_http_response_t *r = get_ok(e.client, url(&e, i % 2 ? "/big" : "/ok"));
    if (i % 2) {
      ck_assert_uint_eq(r->body_len, BIG_LEN);
      ck_assert_int_eq(memcmp(r->body, big_body, BIG_LEN), 0);
    } else {
      ck_assert_str_eq(r->body, "hello");
    }
    uva_http_response_free(r);
  }
  uva_http_response_t *kept1 = get_ok(e.client, url(&e, "/big"));
  uva_http_response_t *kept2 = get_ok(e.client, url(&e, "/ok"));
  env_close(&e); /* the client goes first */
  ck_assert_int_eq(memcmp(kept1->body, big_body, BIG_LEN), 0);
  ck_assert_str_eq(kept2->body, "hello");
  uva_http_response_free(kept1);
  uva_http_response_free(kept2);
  return 0;
}

static Suite *http_suite(void) {
  Suite *s = suite_create("http");
  TCase *tc = tcase_create("client");
  tcase_add_test(tc, test_http_get_ok);
  tcase_add_test(tc, test_http_404_is_success);
  tcase_add_test(tc, test_http_redirect);
  tcase_add_test(tc, test_http_redirect_loop);
  tcase_add_test(tc, test_http_timeout);
  tcase_add_test(tc, test_http_refused);
  tcase_add_test(tc, test_http_dns_failure);
  tcase_add_test(tc, test_http_protocol_not_allowed);
  tcase_add_test(tc, test_http_bad_args);
  tcase_add_test(tc, test_http_max_body);
  tcase_add_test(tc, test_http_post_echo);
  tcase_add_test(tc, test_http_peer_closes);
  tcase_add_test(tc, test_http_cancel);
  tcase_add_test(tc, test_http_concurrent);
  tcase_add_test(tc, test_http_bodies_reuse_buffers_and_outlive_client);
  suite_add_tcase(s, tc);
  return s;
}

TEST_MAIN(http_suite)
