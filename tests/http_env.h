/* What the HTTP suites share: a test server (httpd.h) and a client on it. */
#ifndef UVA_TEST_HTTP_ENV_H
#define UVA_TEST_HTTP_ENV_H

#include "helpers.h"
#include "httpd.h"

typedef struct env {
  httpd_t *srv;
  uva_http_client_t *client;
} env_t;

static inline void env_open_with(env_t *e, const uva_http_client_opts_t *o) {
  ck_assert_int_eq(httpd_start(&e->srv, 0), 0);
  ck_assert_int_eq(uva_http_client_new(&e->client, o), 0);
}

static inline void env_open(env_t *e) { env_open_with(e, NULL); }

/* Free the client (if still there) and stop the server. */
static inline void env_close(env_t *e) {
  uva_http_client_free(e->client);
  httpd_stop(e->srv);
}

/* Open a stream that must open. */
static inline uva_http_stream_t *open_ok(env_t *e, const uva_http_request_t *rq) {
  void *v = NULL;
  int rc = uva_await(uva_http_stream_open(e->client, rq), &v);
  ck_assert_msg(rc == 0, "open %s: %s (%s)", rq->url, uva_err_name(rc),
                uva_http_last_error(e->client));
  ck_assert_ptr_nonnull(v);
  return v;
}

#endif
