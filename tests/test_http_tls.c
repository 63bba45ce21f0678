/* HTTP client over TLS and HTTP/2, against nginx on 127.0.0.1 with a
 * self-signed certificate made for the run (openssl). The test server in
 * httpd.c speaks neither, so this suite starts nginx itself; it skips
 * (exit 77) only when nginx or openssl is not installed. */
#include "helpers.h"

#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64];
static int tls_port, h2c_port;

static const char *url(const char *scheme, int port, const char *path) {
  static char buf[4][128];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s://%s:%d%s", scheme,
           strcmp(scheme, "https") == 0 ? "localhost" : "127.0.0.1", port, path);
  return buf[k];
}

static uva_http_client_t *client_with_ca(long max_host) {
  char ca[128];
  snprintf(ca, sizeof ca, "%s/cert.pem", dir);
  uva_http_client_opts_t o = {.ca_file = ca, .max_host_connections = max_host,
                              .stream_buffer = 32768};
  uva_http_client_t *c;
  ck_assert_int_eq(uva_http_client_new(&c, &o), 0);
  return c;
}

static uva_http_response_t *get_ok(uva_http_client_t *c, const uva_http_request_t *rq) {
  void *v = NULL;
  int rc = uva_await(uva_http_request(c, rq), &v);
  ck_assert_msg(rc == 0, "%s: %s (%s)", rq->url, uva_err_name(rc), uva_http_last_error(c));
  return v;
}

TASK_TEST(test_tls_unknown_ca_is_rejected) {
  uva_http_client_t *c;
  ck_assert_int_eq(uva_http_client_new(&c, NULL), 0);
  char err[UVA_HTTP_ERROR_SIZE];
  uva_http_request_t rq = {.url = url("https", tls_port, "/"), .error = err};
  ck_assert_int_eq(uva_await(uva_http_request(c, &rq), NULL), UV_EPROTO);
  ck_assert_msg(strstr(err, "certificate") != NULL, "error text: %s", err);
  uva_http_client_free(c);
  return 0;
}

TASK_TEST(test_tls_with_its_ca_negotiates_http2) {
  uva_http_client_t *c = client_with_ca(0);
  uva_http_request_t rq = {.url = url("https", tls_port, "/hello")};
  uva_http_response_t *r = get_ok(c, &rq);
  ck_assert_int_eq(r->status, 200);
  ck_assert_int_eq(r->http_version, 20); /* ALPN chose h2 */
  ck_assert_str_eq(r->body, "hello tls\n");
  ck_assert_uint_gt(r->tls_us, 0);
  ck_assert_uint_le(r->connect_us, r->tls_us);
  ck_assert_uint_le(r->tls_us, r->first_byte_us);
  uva_http_response_free(r);
  /* HTTP/1.1 can be forced */
  rq.http_version = UVA_HTTP_VERSION_1_1;
  r = get_ok(c, &rq);
  ck_assert_int_eq(r->http_version, 11);
  uva_http_response_free(r);
  uva_http_client_free(c);
  return 0;
}

TASK_TEST(test_http2_multiplexes_on_one_connection) {
  /* One connection allowed per host: 50 concurrent requests share it as
   * HTTP/2 streams. nginx answers each with its connection's serial
   * number, so they must all be the same. */
  uva_http_client_t *c = client_with_ca(1);
  enum { N = 50 };
  uva_future_t *f[N];
  uva_http_request_t rq = {.url = url("https", tls_port, "/conn")};
  for (int i = 0; i < N; i++) f[i] = uva_http_request(c, &rq);
  char first[32] = "";
  for (int i = 0; i < N; i++) {
    void *v = NULL;
    ck_assert_int_eq(uva_await(f[i], &v), 0);
    uva_http_response_t *r = v;
    ck_assert_int_eq(r->http_version, 20);
    if (i == 0) snprintf(first, sizeof first, "%s", r->body);
    ck_assert_str_eq(r->body, first);
    uva_http_response_free(r);
  }
  uva_http_client_free(c);
  return 0;
}

TASK_TEST(test_h2c_prior_knowledge) {
  uva_http_client_t *c;
  ck_assert_int_eq(uva_http_client_new(&c, NULL), 0);
  uva_http_request_t rq = {.url = url("http", h2c_port, "/hello"),
                           .http_version = UVA_HTTP_VERSION_2};
  uva_http_response_t *r = get_ok(c, &rq);
  ck_assert_int_eq(r->http_version, 20);
  ck_assert_str_eq(r->body, "hello h2c\n");
  uva_http_response_free(r);
  uva_http_client_free(c);
  return 0;
}

TASK_TEST(test_http2_stream_pauses_and_resumes) {
  /* 4 MiB over HTTP/2 read slowly through a 32 KiB stream buffer. */
  uva_http_client_t *c = client_with_ca(0);
  uva_http_request_t rq = {.url = url("https", tls_port, "/big.bin")};
  void *v = NULL;
  ck_assert_int_eq(uva_await(uva_http_stream_open(c, &rq), &v), 0);
  uva_http_stream_t *s = v;
  ck_assert_int_eq(uva_http_stream_response(s)->status, 200);
  ck_assert_int_eq(uva_http_stream_response(s)->http_version, 20);
  ck_assert_int_eq(uva_await(uva_sleep(50), NULL), 0);
  ck_assert_uint_le(uva_http_stream_buffered(s), 32768 + 16384);
  static char buf[65536];
  size_t total = 0;
  long sum = 0;
  int n;
  while ((n = uva_await(uva_http_stream_read(s, buf, sizeof buf), NULL)) > 0) {
    for (int i = 0; i < n; i++) sum += (unsigned char)buf[i];
    total += (size_t)n;
  }
  ck_assert_int_eq(n, UV_EOF);
  ck_assert_uint_eq(total, 4u << 20);
  ck_assert_int_eq(sum, (long)(4u << 20) * 'z'); /* the file is all 'z' */
  uva_http_stream_close(s);
  uva_http_client_free(c);
  return 0;
}

/* ------------------------------------------------------------- nginx */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) < 0)
    abort();
  close(fd);
  return ntohs(a.sin_port);
}

static const char *nginx_bin(void) {
  static const char *c[] = {"/usr/sbin/nginx", "/usr/bin/nginx"};
  for (size_t i = 0; i < sizeof c / sizeof *c; i++)
    if (access(c[i], X_OK) == 0) return c[i];
  return NULL;
}

static void nginx_stop(void) {
  if (dir[0] == '\0') return;
  /* wait for the master to be gone (it stops its workers first), then
   * remove what it used: not "sleep 0.2" and hope it was enough */
  sh("pid=$(cat %s/nginx.pid 2>/dev/null) && kill $pid 2>/dev/null &&"
     " while kill -0 $pid 2>/dev/null; do sleep 0.05; done; rm -rf %s",
     dir, dir);
  dir[0] = '\0';
}

static int nginx_start(void) {
  const char *nginx = nginx_bin();
  if (nginx == NULL || sh("command -v openssl >/dev/null") != 0) return 77;
  snprintf(dir, sizeof dir, "/tmp/uva-tls-XXXXXX");
  if (mkdtemp(dir) == NULL) return 1;
  tls_port = free_port();
  h2c_port = free_port();
  if (sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
         "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %s/key.pem "
         "-out %s/cert.pem 2>/dev/null",
         dir, dir) != 0)
    return 1;
  /* nginx's worker may run as another user (root starts it as nobody) */
  if (sh("mkdir -p %s/www %s/tmp && head -c 4194304 /dev/zero | tr '\\0' z > %s/www/big.bin"
         " && chmod -R a+rX %s",
         dir, dir, dir, dir) != 0)
    return 1;
  FILE *f;
  char path[128];
  snprintf(path, sizeof path, "%s/nginx.conf", dir);
  if ((f = fopen(path, "w")) == NULL) return 1;
  fprintf(f,
          "worker_processes 1; daemon on; pid %1$s/nginx.pid; error_log %1$s/error.log warn;\n"
          "events { worker_connections 256; }\n"
          "http { access_log off; client_body_temp_path %1$s/tmp/b; proxy_temp_path %1$s/tmp/p;\n"
          "  fastcgi_temp_path %1$s/tmp/f; uwsgi_temp_path %1$s/tmp/u; scgi_temp_path %1$s/tmp/s;\n"
          "  server { listen 127.0.0.1:%2$d ssl http2; server_name localhost;\n"
          "    ssl_certificate %1$s/cert.pem; ssl_certificate_key %1$s/key.pem;\n"
          "    root %1$s/www;\n"
          "    location = /hello { return 200 \"hello tls\\n\"; }\n"
          "    location = /conn { return 200 \"$connection\"; } }\n"
          "  server { listen 127.0.0.1:%3$d http2;\n"
          "    location = /hello { return 200 \"hello h2c\\n\"; } } }\n",
          dir, tls_port, h2c_port);
  fclose(f);
  /* daemon on: nginx returns once it listens */
  if (sh("%s -e %s/error.log -p %s -c %s/nginx.conf", nginx, dir, dir, dir) != 0) return 1;
  return 0;
}

static Suite *suite(void) {
  Suite *s = suite_create("http_tls");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_tls_unknown_ca_is_rejected);
  tcase_add_test(tc, test_tls_with_its_ca_negotiates_http2);
  tcase_add_test(tc, test_http2_multiplexes_on_one_connection);
  tcase_add_test(tc, test_h2c_prior_knowledge);
  tcase_add_test(tc, test_http2_stream_pauses_and_resumes);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  int rc = nginx_start();
  if (rc != 0) {
    fprintf(stderr, rc == 77 ? "nginx or openssl not installed: skipped\n"
                             : "could not start nginx (see %s/error.log)\n", dir);
    if (rc != 77) nginx_stop();
    return rc;
  }
  SRunner *sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  nginx_stop();
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
