/* uvfetch, run as a subprocess (path in $UVFETCH) against the in-process
 * test server (httpd.h). Each test starts its own server, runs the tool
 * with uva_process_spawn while the server keeps serving on the same loop,
 * and checks its JSON lines, its exit status and the server's stats.
 * Nothing here asserts on speed, only on order and counts. */
#include "helpers.h"
#include "httpd.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct run {
  char *out, *err; /* everything the tool wrote (malloc'd, NUL-terminated) */
  int status;      /* exit status */
} run_t;

/* Something the test does once the tool has written a given text: lets a
 * request through h's /gate (the tool's own output is the event that it
 * got this far). */
typedef struct on_output {
  const char *text;
  httpd_t *h;
} on_output_t;

typedef struct collect {
  uva_stream_t *s;
  char *buf;
  size_t len, cap;
  const on_output_t *on; /* NULL: none */
} collect_t;

/* Read a stream to its end into c->buf. A task: stdout and stderr are read
 * at once, so the child never blocks on a full pipe. */
static int collect_task(void *arg) {
  collect_t *c = arg;
  for (;;) {
    if (c->cap - c->len < 4096) {
      c->cap = c->cap * 2 + 8192;
      c->buf = realloc(c->buf, c->cap);
      ck_assert_ptr_nonnull(c->buf);
    }
    int n = uva_await(uva_stream_read(c->s, c->buf + c->len, c->cap - c->len - 1), NULL);
    if (n < 0) break;
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (c->on && strstr(c->buf, c->on->text)) {
      httpd_gate_pass(c->on->h, 1);
      c->on = NULL;
    }
  }
  c->buf[c->len] = '\0';
  return 0;
}

static run_t run_tool_on(const char *const *args, const char *input, const on_output_t *on);

/* Run uvfetch with args (NULL-terminated, without argv[0]); input, if not
 * NULL, is written to its stdin (else stdin is /dev/null). */
static run_t run_tool(const char *const *args, const char *input) {
  return run_tool_on(args, input, NULL);
}

/* The same, doing what `on` says when its stdout shows on->text. */
static run_t run_tool_on(const char *const *args, const char *input, const on_output_t *on) {
  const char *exe = getenv("UVFETCH");
  ck_assert_msg(exe != NULL, "UVFETCH is not set (run through meson test)");
  char *argv[64] = {"uvfetch"};
  size_t n = 1;
  for (; args[n - 1]; n++) {
    ck_assert_uint_lt(n, 63);
    argv[n] = (char *)args[n - 1];
  }
  argv[n] = NULL;
  uva_process_opts_t o = {.file = exe, .args = argv,
                          .stdio = {input ? UVA_STDIO_PIPE : UVA_STDIO_IGNORE, UVA_STDIO_PIPE,
                                    UVA_STDIO_PIPE}};
  uva_process_t *p;
  ck_assert_int_eq(uva_process_spawn(&p, &o), 0);
  collect_t out = {.s = uva_process_stdio(p, 1), .on = on}, err = {.s = uva_process_stdio(p, 2)};
  uva_future_t *tasks[2] = {uva_spawn(collect_task, &out), uva_spawn(collect_task, &err)};
  if (input) {
    uva_stream_t *in = uva_process_stdio(p, 0);
    ck_assert_int_eq(uva_await(uva_stream_write(in, input, strlen(input)), NULL), 0);
    ck_assert_int_eq(uva_await(uva_stream_shutdown(in), NULL), 0);
  }
  ck_assert_int_eq(uva_await(uva_gather(tasks, 2, 0), NULL), 0);
  run_t r = {.out = out.buf, .err = err.buf};
  r.status = uva_await(uva_process_wait(p), NULL);
  uva_process_free(p);
  return r;
}

static void run_free(run_t *r) {
  free(r->out);
  free(r->err);
}

static int count_lines(const char *s) {
  int n = 0;
  for (; (s = strchr(s, '\n')) != NULL; s++) n++;
  return n;
}

/* Line k (from 0) of s, copied into buf. */
static const char *nth_line(const char *s, int k, char *buf, size_t cap) {
  for (; k > 0 && s; k--) s = (s = strchr(s, '\n')) ? s + 1 : NULL;
  ck_assert_msg(s && *s, "no line %d", k);
  size_t len = strcspn(s, "\n");
  ck_assert_uint_lt(len, cap);
  memcpy(buf, s, len);
  buf[len] = '\0';
  return buf;
}

/* The line about url (the tool writes "url" first), copied into buf. */
static const char *line_for(const char *out, const char *url, char *buf, size_t cap) {
  char needle[1200];
  snprintf(needle, sizeof needle, "{\"url\": \"%s\",", url);
  for (int k = 0, n = count_lines(out); k < n; k++)
    if (strncmp(nth_line(out, k, buf, cap), needle, strlen(needle)) == 0) return buf;
  ck_abort_msg("no line for %s in:\n%s", url, out);
  return NULL;
}

/* Field key of a JSON line: a number, or -1 for null. */
static long jnum(const char *line, const char *key) {
  char needle[64];
  snprintf(needle, sizeof needle, "\"%s\": ", key);
  const char *p = strstr(line, needle);
  ck_assert_msg(p != NULL, "no \"%s\" in %s", key, line);
  p += strlen(needle);
  return strncmp(p, "null", 4) == 0 ? -1 : strtol(p, NULL, 10);
}

/* Field key as a string (still escaped) in buf, or NULL if null/absent. */
static const char *jstr(const char *line, const char *key, char *buf, size_t cap) {
  char needle[64];
  snprintf(needle, sizeof needle, "\"%s\": \"", key);
  const char *p = strstr(line, needle);
  if (p == NULL) return NULL;
  p += strlen(needle);
  size_t len = 0;
  while (p[len] && !(p[len] == '"' && p[len - 1] != '\\')) len++;
  ck_assert_uint_lt(len, cap);
  memcpy(buf, p, len);
  buf[len] = '\0';
  return buf;
}

static int no_conn(uva_stream_t *s, void *arg) {
  (void)s, (void)arg;
  return 0;
}

/* A TCP port with nothing listening on it (any more). */
static int refused_port(void) {
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, no_conn, NULL), 0);
  int port = uva_server_port(srv);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 1), NULL), 0);
  return port;
}

static void assert_error_starts(const char *line, int err) {
  char msg[1200];
  ck_assert_int_eq(jnum(line, "status"), -1);
  ck_assert_ptr_nonnull(jstr(line, "error", msg, sizeof msg));
  ck_assert_msg(strncmp(msg, uva_strerror(err), strlen(uva_strerror(err))) == 0,
                "error \"%s\" does not start with \"%s\"", msg, uva_strerror(err));
}

TASK_TEST(test_ok_urls) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  char u1[128], u2[128], u3[128], line[2048];
  snprintf(u1, sizeof u1, "%s", httpd_url(h, "/ok"));
  snprintf(u2, sizeof u2, "%s", httpd_url(h, "/bytes/1234"));
  snprintf(u3, sizeof u3, "%s", httpd_url(h, "/bytes/0"));
  run_t r = run_tool((const char *[]){u1, u2, u3, NULL}, NULL);
  ck_assert_int_eq(r.status, 0);
  ck_assert_int_eq(count_lines(r.out), 3);
  line_for(r.out, u1, line, sizeof line);
  ck_assert_int_eq(jnum(line, "status"), 200);
  ck_assert_int_eq(jnum(line, "bytes"), 5);
  ck_assert_int_eq(jnum(line, "attempts"), 1);
  ck_assert_ptr_nonnull(strstr(line, "\"error\": null"));
  ck_assert_ptr_null(strstr(line, "final_url")); /* not redirected */
  ck_assert_int_eq(jnum(line_for(r.out, u2, line, sizeof line), "bytes"), 1234);
  ck_assert_int_eq(jnum(line_for(r.out, u3, line, sizeof line), "bytes"), 0);
  /* stderr is a pipe: a summary, and no progress bar */
  ck_assert_ptr_nonnull(strstr(r.err, "3 ok, 0 failed"));
  ck_assert_ptr_null(strchr(r.err, '\r'));
  run_free(&r);
  httpd_stop(h);
  return 0;
}

TASK_TEST(test_404_and_fail) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  char u[128], line[2048], msg[256];
  snprintf(u, sizeof u, "%s", httpd_url(h, "/status/404"));
  run_t r = run_tool((const char *[]){u, NULL}, NULL);
  ck_assert_int_eq(r.status, 0); /* an HTTP error is a response */
  line_for(r.out, u, line, sizeof line);
  ck_assert_int_eq(jnum(line, "status"), 404);
  ck_assert_int_eq(jnum(line, "bytes"), 10); /* "status 404" */
  ck_assert_ptr_null(jstr(line, "error", msg, sizeof msg));
  run_free(&r);
  r = run_tool((const char *[]){"--fail", u, NULL}, NULL);
  ck_assert_int_eq(r.status, 1);
  line_for(r.out, u, line, sizeof line);
  ck_assert_int_eq(jnum(line, "status"), 404);
  ck_assert_ptr_nonnull(jstr(line, "error", msg, sizeof msg));
  run_free(&r);
  httpd_stop(h);
  return 0;
}

TASK_TEST(test_failed_fetches) {
  char refused[64], line[2048];
  snprintf(refused, sizeof refused, "http://127.0.0.1:%d/", refused_port());
  const char *bad = "http://[zz/", *ftp = "ftp://127.0.0.1/file";
  run_t r = run_tool((const char *[]){refused, bad, ftp, "", NULL}, NULL);
  ck_assert_int_eq(r.status, 1);
  ck_assert_int_eq(count_lines(r.out), 4);
  assert_error_starts(line_for(r.out, refused, line, sizeof line), UV_ECONNREFUSED);
  ck_assert_int_eq(jnum(line, "bytes"), -1);
  assert_error_starts(line_for(r.out, bad, line, sizeof line), UV_EINVAL);
  assert_error_starts(line_for(r.out, ftp, line, sizeof line), UV_EPROTONOSUPPORT);
  assert_error_starts(line_for(r.out, "", line, sizeof line), UV_EINVAL);
  ck_assert_ptr_nonnull(strstr(r.err, "0 ok, 4 failed"));
  run_free(&r);
  return 0;
}

TASK_TEST(test_timeout) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  char u[128], line[2048];
  snprintf(u, sizeof u, "%s", httpd_url(h, "/hold")); /* never answered */
  run_t r = run_tool((const char *[]){"--timeout", "0.3", u, NULL}, NULL);
  ck_assert_int_eq(r.status, 1);
  assert_error_starts(line_for(r.out, u, line, sizeof line), UV_ETIMEDOUT);
  ck_assert_int_eq(jnum(line, "attempts"), 1);
  run_free(&r);
  httpd_stop(h);
  return 0;
}

/* The after-response hook of check_order: the first answer (the fast
 * one's: the slow one waits at the gate) lets the slow one through. */
static void pass_gate(void *h) { httpd_gate_pass(h, 1); }

/* The slow URL's body waits at the server's gate until the fast one is
 * done, so the fast one completes first on any machine: with "completion"
 * the gate opens when the tool has printed the fast line; with "input",
 * where that line waits for the slow one, once the server has answered
 * the fast one (which the input order must not show). */
static void check_order(const char *order, const char *first) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  char slow[128], fast[128], line[2048], want[160];
  snprintf(slow, sizeof slow, "%s", httpd_url(h, "/gate/5/0"));
  snprintf(fast, sizeof fast, "%s", httpd_url(h, "/ok"));
  snprintf(want, sizeof want, "{\"url\": \"%s\",", fast);
  on_output_t on = {.text = want, .h = h};
  bool completion = strcmp(order, "completion") == 0;
  if (!completion) httpd_set_after_response(h, pass_gate, h);
  run_t r = run_tool_on((const char *[]){"--order", order, slow, fast, NULL}, NULL,
                        completion ? &on : NULL);
  ck_assert_int_eq(r.status, 0);
  ck_assert_int_eq(count_lines(r.out), 2);
  snprintf(want, sizeof want, "{\"url\": \"%s\",", strcmp(first, "slow") ? fast : slow);
  nth_line(r.out, 0, line, sizeof line);
  ck_assert_msg(strncmp(line, want, strlen(want)) == 0, "--order %s: first line %s", order, line);
  run_free(&r);
  httpd_stop(h);
}

TASK_TEST(test_order_input) {
  check_order("input", "slow");
  return 0;
}

TASK_TEST(test_order_completion) {
  check_order("completion", "fast");
  return 0;
}

/* n copies of path, fetched with extra options; returns the server's
 * max_active after checking that all n were fetched. */
static long fetch_many(const char *path, int n, const char *const *opts) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  const char *args[40];
  char urls[16][128];
  int k = 0;
  for (; opts[k]; k++) args[k] = opts[k];
  for (int i = 0; i < n; i++) {
    snprintf(urls[i], sizeof urls[i], "%s", httpd_url(h, path));
    args[k++] = urls[i];
  }
  args[k] = NULL;
  run_t r = run_tool(args, NULL);
  ck_assert_int_eq(r.status, 0);
  ck_assert_int_eq(count_lines(r.out), n);
  ck_assert_int_eq(httpd_stats(h)->requests, n);
  long max = httpd_stats(h)->max_active;
  run_free(&r);
  httpd_stop(h);
  return max;
}

TASK_TEST(test_concurrency) {
  ck_assert_int_eq(fetch_many("/delay/50", 5, (const char *[]){"-c", "1", NULL}), 1);
  /* the control: without the limit the same fetches overlap (the server
   * answers none of the four before all four are in) */
  ck_assert_int_gt(fetch_many("/barrier/4/5", 4, (const char *[]){"--concurrency", "4", NULL}), 1);
  return 0;
}

TASK_TEST(test_per_host) {
  long max = fetch_many("/delay/100", 10, (const char *[]){"--per-host", "2", NULL});
  ck_assert_int_le(max, 2);
  ck_assert_int_ge(max, 1);
  /* the control: 16 workers and no per-host limit overlap more (all ten
   * are in before any is answered) */
  ck_assert_int_gt(fetch_many("/barrier/10/5", 10, (const char *[]){NULL}), 2);
  return 0;
}

TASK_TEST(test_retries_status) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  char u503[128], u404[128], line[2048];
  snprintf(u503, sizeof u503, "%s", httpd_url(h, "/status/503"));
  snprintf(u404, sizeof u404, "%s", httpd_url(h, "/status/404"));
  run_t r = run_tool((const char *[]){"--retries", "2", u503, u404, NULL}, NULL);
  ck_assert_int_eq(r.status, 0); /* without --fail, a 503 is an answer */
  line_for(r.out, u503, line, sizeof line);
  ck_assert_int_eq(jnum(line, "status"), 503);
  ck_assert_int_eq(jnum(line, "attempts"), 3);
  /* a 404 is not worth another try */
  ck_assert_int_eq(jnum(line_for(r.out, u404, line, sizeof line), "attempts"), 1);
  ck_assert_int_eq(httpd_stats(h)->requests, 4);
  run_free(&r);
  httpd_stop(h);
  return 0;
}

TASK_TEST(test_retries_errors) {
  char refused[64], line[2048];
  snprintf(refused, sizeof refused, "http://127.0.0.1:%d/x", refused_port());
  const char *bad = "http://[zz/", *ftp = "ftp://127.0.0.1/";
  run_t r = run_tool((const char *[]){"-r", "2", refused, bad, ftp, NULL}, NULL);
  ck_assert_int_eq(r.status, 1);
  line_for(r.out, refused, line, sizeof line);
  assert_error_starts(line, UV_ECONNREFUSED);
  ck_assert_int_eq(jnum(line, "attempts"), 3);
  /* never retried: no request is even made */
  ck_assert_int_le(jnum(line_for(r.out, bad, line, sizeof line), "attempts"), 1);
  ck_assert_int_le(jnum(line_for(r.out, ftp, line, sizeof line), "attempts"), 1);
  run_free(&r);
  return 0;
}

static void check_file(const char *path, const char *want, size_t len) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  char *got = malloc(len + 2);
  size_t n = fread(got, 1, len + 1, f);
  fclose(f);
  ck_assert_uint_eq(n, len);
  ck_assert_int_eq(memcmp(got, want, len), 0);
  free(got);
}

static void remove_dir(const char *dir) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

TASK_TEST(test_output_dir) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  char tmp[] = "/tmp/uvfetch-test-XXXXXX", dir[64], u1[128], u2[128], u3[128];
  char line[2048], file[1200], bytes[3000];
  ck_assert_ptr_nonnull(mkdtemp(tmp));
  snprintf(dir, sizeof dir, "%s/out", tmp); /* made by the tool */
  snprintf(u1, sizeof u1, "%s", httpd_url(h, "/bytes/3000"));
  snprintf(u2, sizeof u2, "%s", httpd_url(h, "/ok"));
  snprintf(u3, sizeof u3, "%s", httpd_url(h, "/ok/../../../etc/x?a=/../.."));
  run_t r = run_tool((const char *[]){"--output", dir, u1, u2, u3, NULL}, NULL);
  ck_assert_int_eq(r.status, 0);
  for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = httpd_pattern(i);
  ck_assert_ptr_nonnull(jstr(line_for(r.out, u1, line, sizeof line), "file", file, sizeof file));
  ck_assert_msg(strncmp(file, dir, strlen(dir)) == 0 && strncmp(file + strlen(dir), "/0001-", 6) == 0,
                "file %s", file);
  check_file(file, bytes, sizeof bytes);
  ck_assert_ptr_nonnull(jstr(line_for(r.out, u2, line, sizeof line), "file", file, sizeof file));
  ck_assert_msg(strncmp(file + strlen(dir), "/0002-", 6) == 0, "file %s", file);
  check_file(file, "hello", 5);
  /* the path cannot climb out of the directory */
  ck_assert_ptr_nonnull(jstr(line_for(r.out, u3, line, sizeof line), "file", file, sizeof file));
  ck_assert_ptr_null(strchr(file + strlen(dir) + 1, '/'));
  ck_assert_ptr_null(strstr(file + strlen(dir), ".."));
  check_file(file, "not found", 9);
  run_free(&r);
  remove_dir(tmp);
  httpd_stop(h);
  return 0;
}

TASK_TEST(test_stdin) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  char input[512], u1[128], u2[128], line[2048];
  snprintf(u1, sizeof u1, "%s", httpd_url(h, "/bytes/10"));
  snprintf(u2, sizeof u2, "%s", httpd_url(h, "/ok"));
  snprintf(input, sizeof input, "# a comment\n\n  %s  \r\n%s\n", u1, u2);
  run_t r = run_tool((const char *[]){NULL}, input); /* no URLs: stdin */
  ck_assert_int_eq(r.status, 0);
  ck_assert_int_eq(count_lines(r.out), 2);
  ck_assert_int_eq(jnum(line_for(r.out, u1, line, sizeof line), "bytes"), 10);
  ck_assert_int_eq(jnum(line_for(r.out, u2, line, sizeof line), "status"), 200);
  run_free(&r);
  r = run_tool((const char *[]){u2, "-", NULL}, input); /* "-" among URLs */
  ck_assert_int_eq(r.status, 0);
  ck_assert_int_eq(count_lines(r.out), 3);
  run_free(&r);
  httpd_stop(h);
  return 0;
}

TASK_TEST(test_input_file) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  char path[] = "/tmp/uvfetch-input-XXXXXX", u1[128], u2[128], line[2048], want[200];
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  snprintf(u1, sizeof u1, "%s", httpd_url(h, "/bytes/7"));
  snprintf(u2, sizeof u2, "%s", httpd_url(h, "/status/201"));
  FILE *f = fdopen(fd, "w");
  fprintf(f, "#urls\n%s\n\n%s\n", u1, u2);
  fclose(f);
  run_t r = run_tool((const char *[]){"--input", path, NULL}, NULL);
  ck_assert_int_eq(r.status, 0);
  ck_assert_int_eq(count_lines(r.out), 2);
  ck_assert_int_eq(jnum(line_for(r.out, u1, line, sizeof line), "bytes"), 7);
  ck_assert_int_eq(jnum(line_for(r.out, u2, line, sizeof line), "status"), 201);
  run_free(&r);
  /* arguments and files keep their order on the command line */
  r = run_tool((const char *[]){u2, "-i", path, NULL}, NULL);
  ck_assert_int_eq(count_lines(r.out), 3);
  snprintf(want, sizeof want, "{\"url\": \"%s\",", u2);
  ck_assert_int_eq(strncmp(nth_line(r.out, 0, line, sizeof line), want, strlen(want)), 0);
  snprintf(want, sizeof want, "{\"url\": \"%s\",", u1);
  ck_assert_int_eq(strncmp(nth_line(r.out, 1, line, sizeof line), want, strlen(want)), 0);
  run_free(&r);
  unlink(path);
  httpd_stop(h);
  return 0;
}

TASK_TEST(test_redirect) {
  httpd_t *h;
  ck_assert_int_eq(httpd_start(&h, 0), 0);
  char u[128], line[2048], final[1200];
  snprintf(u, sizeof u, "%s", httpd_url(h, "/redirect/2"));
  run_t r = run_tool((const char *[]){u, NULL}, NULL);
  ck_assert_int_eq(r.status, 0);
  line_for(r.out, u, line, sizeof line);
  ck_assert_int_eq(jnum(line, "status"), 200);
  ck_assert_ptr_nonnull(jstr(line, "final_url", final, sizeof final));
  ck_assert_str_eq(final, httpd_url(h, "/redirect/0"));
  run_free(&r);
  httpd_stop(h);
  return 0;
}

TASK_TEST(test_json_escaping) {
  char path[] = "/tmp/uvfetch-input-XXXXXX", line[2048];
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  /* a quote, a backslash, a control character, a byte that is not UTF-8 */
  static const char input[] = "http://127.0.0.1:1/\"q\\b\x01\xff\xc3\xa9\n";
  ck_assert_int_eq(write(fd, input, sizeof input - 1), (ssize_t)sizeof input - 1);
  close(fd);
  run_t r = run_tool((const char *[]){"-i", path, NULL}, NULL);
  ck_assert_int_eq(r.status, 1);
  ck_assert_int_eq(count_lines(r.out), 1);
  const char *want = "{\"url\": \"http://127.0.0.1:1/\\\"q\\\\b\\u0001\\ufffd\xc3\xa9\", ";
  nth_line(r.out, 0, line, sizeof line);
  ck_assert_msg(strncmp(line, want, strlen(want)) == 0, "%s", line);
  run_free(&r);
  unlink(path);
  return 0;
}

TASK_TEST(test_help_and_version) {
  static const char *const options[] = {"--concurrency", "--per-host", "--timeout", "--retries",
                                        "--output", "--input", "--order", "--fail",
                                        "--user-agent", "--help", "--version", "--quiet"};
  run_t r = run_tool((const char *[]){"--help", NULL}, NULL);
  ck_assert_int_eq(r.status, 0);
  for (size_t i = 0; i < sizeof options / sizeof *options; i++)
    ck_assert_msg(strstr(r.out, options[i]) != NULL, "--help does not mention %s", options[i]);
  ck_assert_ptr_nonnull(strstr(r.out, "Example"));
  run_free(&r);
  r = run_tool((const char *[]){"--version", NULL}, NULL);
  ck_assert_int_eq(r.status, 0);
  ck_assert_ptr_nonnull(strstr(r.out, "uvfetch"));
  run_free(&r);
  return 0;
}

TASK_TEST(test_usage_errors) {
  static const char *const cases[][3] = {
    {"--bogus", "http://127.0.0.1:1/", NULL},
    {"-Z", NULL, NULL},
    {"--concurrency", "0", NULL},
    {"--concurrency", "many", NULL},
    {"--timeout", "-1", NULL},
    {"--timeout", NULL, NULL},
    {"--order", "random", NULL},
    {"--input", "/nonexistent/urls.txt", NULL},
    {"--input", "/", NULL},
    {"--output", "/dev/null", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const char *args[5] = {cases[i][0], cases[i][1], cases[i][2], NULL};
    if (strcmp(cases[i][0], "--output") == 0) args[2] = "http://127.0.0.1:1/";
    run_t r = run_tool(args, NULL);
    ck_assert_msg(r.status == 2, "%s %s: exit %d", cases[i][0], cases[i][1], r.status);
    ck_assert_msg(strncmp(r.err, "uvfetch: ", 9) == 0, "%s: stderr %s", cases[i][0], r.err);
    ck_assert_str_eq(r.out, ""); /* nothing fetched */
    run_free(&r);
  }
  return 0;
}

static Suite *suite(void) {
  Suite *s = suite_create("uvfetch");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_ok_urls);
  tcase_add_test(tc, test_404_and_fail);
  tcase_add_test(tc, test_failed_fetches);
  tcase_add_test(tc, test_timeout);
  tcase_add_test(tc, test_order_input);
  tcase_add_test(tc, test_order_completion);
  tcase_add_test(tc, test_concurrency);
  tcase_add_test(tc, test_per_host);
  tcase_add_test(tc, test_retries_status);
  tcase_add_test(tc, test_retries_errors);
  tcase_add_test(tc, test_output_dir);
  tcase_add_test(tc, test_stdin);
  tcase_add_test(tc, test_input_file);
  tcase_add_test(tc, test_redirect);
  tcase_add_test(tc, test_json_escaping);
  tcase_add_test(tc, test_help_and_version);
  tcase_add_test(tc, test_usage_errors);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
