/* The crawler sample (samples/crawler.c, path in $CRAWLER), run as a
 * subprocess against the generated site of tools/demo/site.c, served from
 * the test's own loop. The site's link structure (site.h) gives the exact
 * set of documents a correct crawl fetches at each depth, and its request
 * log shows what the crawler asked for and when. Pages site.c cannot
 * produce (deep nesting, <base href>, odd hrefs, redirects, other host
 * names) come from a small server of routes each test writes (below). */
#include "helpers.h"
#include "site.h"

#include <ctype.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define PAGES 40
#define MAX_LINES 512

typedef struct line {
  int status;
  char *url, *title;
} line_t;

typedef struct crawl {
  int exit_code;
  char *out, *err; /* stdout (split in place into lines) and stderr */
  line_t line[MAX_LINES];
  size_t n;
} crawl_t;

static site_t *start_site(int broken_page) {
  site_opts_t o = {.pages = PAGES, .min_delay_ms = 5, .max_delay_ms = 20, .seed = 7,
                   .broken_page = broken_page};
  site_t *s;
  ck_assert_int_eq(site_start(&s, &o), 0);
  return s;
}

static char *read_all(uva_stream_t *s) {
  size_t len = 0, cap = 1 << 16;
  char *b = malloc(cap);
  ck_assert_ptr_nonnull(b);
  for (;;) {
    if (cap - len < 4096) ck_assert_ptr_nonnull(b = realloc(b, cap *= 2));
    int r = uva_await(uva_stream_read(s, b + len, cap - len - 1), NULL);
    if (r == UV_EOF) break;
    ck_assert_int_gt(r, 0);
    len += (size_t)r;
  }
  b[len] = '\0';
  return b;
}

/* Start $CRAWLER with args (NULL-terminated) and env (NULL: ours). */
static uva_process_t *spawn(char **args, char **env) {
  uva_process_opts_t o = {.file = args[0], .args = args, .env = env,
                          .stdio = {UVA_STDIO_IGNORE, UVA_STDIO_PIPE, UVA_STDIO_PIPE}};
  uva_process_t *p;
  ck_assert_int_eq(uva_process_spawn(&p, &o), 0);
  return p;
}

/* Read p's output to the end, wait for it, and split each stdout line into
 * status, URL and title. */
static void collect(crawl_t *c, uva_process_t *p) {
  c->out = read_all(uva_process_stdio(p, 1));
  c->err = read_all(uva_process_stdio(p, 2)); /* a short summary */
  c->exit_code = uva_await(uva_process_wait(p), NULL);
  uva_process_free(p);
  c->n = 0;
  for (char *s = c->out, *nl; (nl = strchr(s, '\n')) != NULL; s = nl + 1) {
    *nl = '\0';
    ck_assert_int_lt(c->n, MAX_LINES);
    line_t *l = &c->line[c->n++];
    char *t1 = strchr(s, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    ck_assert_msg(t1 && t2, "not 3 tab-separated fields: %s", s);
    *t1 = *t2 = '\0';
    l->status = atoi(s), l->url = t1 + 1, l->title = t2 + 1;
    ck_assert_msg(!strchr(l->title, '\t'), "a tab in a title");
  }
}

/* $CRAWLER's argv: its path, then the arguments given. */
static void crawler_args(char *args[32], const char *arg, va_list ap) {
  const char *path = getenv("CRAWLER");
  ck_assert_msg(path != NULL, "CRAWLER is not set");
  int n = 0;
  args[n++] = (char *)path;
  for (const char *a = arg; a && n < 31; a = va_arg(ap, const char *)) args[n++] = (char *)a;
  args[n] = NULL;
}

/* Run $CRAWLER with the arguments given (NULL-terminated) and collect its
 * output. */
static void run(crawl_t *c, const char *arg, ...) {
  char *args[32];
  va_list ap;
  va_start(ap, arg);
  crawler_args(args, arg, ap);
  va_end(ap);
  collect(c, spawn(args, NULL));
}

static void crawl_free(crawl_t *c) {
  free(c->out);
  free(c->err);
}

static int by_string(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The paths a correct crawl with depth limit `depth` fetches (site.h). */
static size_t expected_paths(int depth, char out[][32]) {
  size_t n = 0;
  for (int p = 0; p < PAGES; p++) {
    if (site_page_depth(p) <= depth) site_page_path(p, out[n++], 32);
    if (site_page_depth(p) + 1 <= depth && site_resource_path(p, out[n], 32)) n++;
  }
  return n;
}

static int path_expected(const char *path, int depth) {
  char exp[2 * PAGES][32];
  size_t n = expected_paths(depth, exp);
  for (size_t i = 0; i < n; i++)
    if (strcmp(exp[i], path) == 0) return 1;
  return 0;
}

/* The crawl fetched exactly the documents of depth <= depth, each once,
 * with the right status and title, and asked the site for nothing else. */
static void check_crawl(site_t *s, const crawl_t *c, int depth, long count) {
  ck_assert_msg(c->exit_code == 0, "exit %d, stderr: %s", c->exit_code, c->err);
  ck_assert_int_eq(site_expected(PAGES, depth), count);
  ck_assert_int_eq((long)c->n, count);
  /* the final URLs, sorted, are the expected paths, sorted */
  char exp[2 * PAGES][32];
  size_t ne = expected_paths(depth, exp);
  ck_assert_uint_eq(ne, c->n);
  const char *got[MAX_LINES], *want[MAX_LINES];
  const char *prefix = site_url(s, "");
  for (size_t i = 0; i < c->n; i++) {
    const line_t *l = &c->line[i];
    ck_assert_msg(l->status == 200, "%d %s %s", l->status, l->url, l->title);
    ck_assert_msg(strncmp(l->url, prefix, strlen(prefix)) == 0, "off-site URL %s", l->url);
    got[i] = l->url + strlen(prefix);
    want[i] = exp[i];
    /* titles: "Page p of 40\n\tuvasync crawl site", whitespace runs
     * collapsed; none for the text and image files */
    int p = 0;
    char title[64] = "";
    if (strcmp(got[i], "/") == 0 || sscanf(got[i], "/page/%d.html", &p) == 1)
      snprintf(title, sizeof title, "Page %d of %d uvasync crawl site", p, PAGES);
    ck_assert_str_eq(l->title, title);
  }
  qsort(got, c->n, sizeof *got, by_string);
  qsort(want, ne, sizeof *want, by_string);
  for (size_t i = 0; i < ne; i++) ck_assert_str_eq(got[i], want[i]);
  /* the request log: nothing twice, nothing unexpected */
  size_t nlog;
  const site_request_t *log = site_log(s, &nlog);
  long redirects = 0;
  for (size_t i = 0; i < nlog; i++) {
    int p = -1;
    if (sscanf(log[i].path, "/go/%d", &p) == 1) {
      char page[32];
      ck_assert_msg(site_page_redirected(p) && path_expected(site_page_path(p, page, sizeof page), depth),
                    "unexpected request %s", log[i].path);
      redirects++;
    } else {
      ck_assert_msg(path_expected(log[i].path, depth), "unexpected request %s", log[i].path);
    }
    for (size_t j = 0; j < i; j++)
      ck_assert_msg(strcmp(log[i].path, log[j].path) != 0, "%s requested twice", log[i].path);
  }
  const site_stats_t *st = site_stats(s);
  ck_assert_int_eq(st->requests, (long)c->n + redirects);
  ck_assert_int_eq(st->not_found, 0);
  ck_assert_int_eq(st->redirects, redirects);
}

static void crawl_depth(int depth, long count) {
  site_t *s = start_site(0);
  char d[16];
  snprintf(d, sizeof d, "%d", depth);
  crawl_t c;
  run(&c, site_url(s, "/"), "--depth", d, NULL);
  check_crawl(s, &c, depth, count);
  crawl_free(&c);
  site_stop(s);
}

/* Depth 0: the start page only. */
TASK_TEST(test_crawler_depth_0) {
  crawl_depth(0, 1);
  return 0;
}

/* Depth 1: "/", pages 1-3 (absolute-path, full and ./...#top links) and
 * /files/0.txt; "#top", "../#nav" and the "#comments" copy are "/" and
 * page 1 again. */
TASK_TEST(test_crawler_depth_1) {
  crawl_depth(1, 5);
  return 0;
}

/* Depth 2: + pages 4-12, among them page 5 through /go/5 (a redirect) and
 * page 11 through HTTP://...:PORT/page/./11.html. */
TASK_TEST(test_crawler_depth_2) {
  crawl_depth(2, 14);
  return 0;
}

/* Depth 3: + pages 13-39 and three files. Pages 16 and 18 are relative
 * links on page 5, reached by a redirect: they resolve against its final
 * URL (/page/5.html), not /go/5 (which would give 404s). */
TASK_TEST(test_crawler_depth_3) {
  crawl_depth(3, 44);
  return 0;
}

/* No --depth means 2; a start URL without its "/" works. */
TASK_TEST(test_crawler_default_depth) {
  site_t *s = start_site(0);
  crawl_t c;
  run(&c, site_url(s, ""), NULL);
  check_crawl(s, &c, 2, 14);
  ck_assert_ptr_nonnull(strstr(c.err, "14 pages, 0 errors"));
  crawl_free(&c);
  site_stop(s);
  return 0;
}

/* Other hosts (example.invalid, localhost: the same server under another
 * name), another port, mailto: and fragments are not followed; text and
 * image files are fetched, counted, and not parsed (their /secret/ links
 * would be 404s). */
TASK_TEST(test_crawler_skips_and_non_html) {
  site_t *s = start_site(0);
  crawl_t c;
  run(&c, site_url(s, "/"), "--depth", "4", NULL);
  check_crawl(s, &c, 4, 50);
  const char *bad[] = {"example.invalid", "localhost", "mailto", "127.0.0.1:1/", "#", "secret"};
  for (size_t i = 0; i < c.n; i++)
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++)
      ck_assert_msg(!strstr(c.line[i].url, bad[k]), "followed %s", c.line[i].url);
  ck_assert_int_eq(site_stats(s)->files, 10);
  ck_assert_int_eq(site_stats(s)->pages, PAGES);
  int files = 0;
  for (size_t i = 0; i < c.n; i++)
    if (strstr(c.line[i].url, "/files/") || strstr(c.line[i].url, "/img/")) {
      ck_assert_str_eq(c.line[i].title, "");
      files++;
    }
  ck_assert_int_eq(files, 10);
  crawl_free(&c);
  site_stop(s);
  return 0;
}

/* --concurrency 1: never two requests at once; 4: at most four, and more
 * than one (the levels are wide enough; the site holds the first two
 * requests after "/" until both are in, so that is not left to timing). */
TASK_TEST(test_crawler_concurrency) {
  site_t *s = start_site(0);
  crawl_t c;
  run(&c, site_url(s, "/"), "--depth", "3", "--concurrency", "1", NULL);
  check_crawl(s, &c, 3, 44);
  ck_assert_int_eq(site_stats(s)->max_in_flight, 1);
  crawl_free(&c);
  site_reset_stats(s);
  site_hold_together(s, 2);
  run(&c, site_url(s, "/"), "--depth", "3", "--concurrency", "4", NULL);
  check_crawl(s, &c, 3, 44);
  ck_assert_int_le(site_stats(s)->max_in_flight, 4);
  ck_assert_int_ge(site_stats(s)->max_in_flight, 2);
  crawl_free(&c);
  site_stop(s);
  return 0;
}

/* --delay 250: request starts to the host at least 250 ms apart, even with
 * four allowed at once (without it, the four of level 1 start together).
 *
 * The server sees arrivals, not starts, and an arrival comes any time
 * after its start (later on a busy or slow machine: valgrind, CI), so a
 * gap between two arrivals bounds nothing. What does hold, whatever the
 * speed, comes from causality (uv_hrtime is CLOCK_MONOTONIC, one clock
 * for the crawler and the site): request i (log[0] is "/") starts at
 * least i x 250 ms after the crawler was spawned (t_spawn, taken before:
 * "/" starts after it), and at least (i - 1) x 250 ms after "/" arrived
 * (its links are known only once it is answered); it arrives after it
 * starts. Without --delay, the level-1 requests are held at the site
 * until all four are in (site_hold_together): they overlapped, or the
 * crawl never ends. */
static void check_delay(site_t *s, int delay_ms, uint64_t t_spawn) {
  size_t n;
  const site_request_t *log = site_log(s, &n);
  ck_assert_uint_eq(n, 5);
  if (delay_ms == 0) {
    ck_assert_int_ge(site_stats(s)->max_in_flight, 4);
    return;
  }
  char gaps[256] = "";
  for (size_t i = 1, used = 0; i < n && used < sizeof gaps; i++)
    used += (size_t)snprintf(gaps + used, sizeof gaps - used, " %.1f",
                             (double)(log[i].t_ns - log[i - 1].t_ns) / 1e6);
  const uint64_t d = (uint64_t)delay_ms * 1000000;
  for (size_t i = 1; i < n; i++) {
    ck_assert_msg(log[i].t_ns >= t_spawn + i * d, "--delay %d: request %zu %.1f ms after the "
                  "spawn, gaps:%s", delay_ms, i, (double)(log[i].t_ns - t_spawn) / 1e6, gaps);
    ck_assert_msg(log[i].t_ns >= log[0].t_ns + (i - 1) * d, "--delay %d: request %zu, gaps:%s",
                  delay_ms, i, gaps);
  }
}

TASK_TEST(test_crawler_delay) {
  site_t *s = start_site(0);
  crawl_t c;
  site_hold_together(s, 4);
  run(&c, site_url(s, "/"), "--depth", "1", "--concurrency", "4", NULL);
  check_crawl(s, &c, 1, 5);
  check_delay(s, 0, 0);
  crawl_free(&c);
  site_reset_stats(s);
  uint64_t t_spawn = uv_hrtime();
  run(&c, site_url(s, "/"), "--depth", "1", "--concurrency", "4", "--delay", "250", NULL);
  check_crawl(s, &c, 1, 5);
  check_delay(s, 250, t_spawn);
  crawl_free(&c);
  site_stop(s);
  return 0;
}

/* A page that fails (the server closes the connection) is a line with
 * status 0, counted as an error; its links are lost; the exit is 0. */
TASK_TEST(test_crawler_error_page) {
  site_t *s = start_site(2);
  crawl_t c;
  run(&c, site_url(s, "/"), NULL);
  ck_assert_int_eq(c.exit_code, 0);
  ck_assert_int_eq(c.n, 14 - 3); /* page 2 failed, so no pages 7-9 */
  int failed = 0;
  for (size_t i = 0; i < c.n; i++) {
    if (strcmp(c.line[i].url, site_url(s, "/page/2.html")) == 0) {
      ck_assert_int_eq(c.line[i].status, 0);
      failed++;
    } else {
      ck_assert_int_eq(c.line[i].status, 200);
    }
  }
  ck_assert_int_eq(failed, 1);
  ck_assert_msg(strstr(c.err, "11 pages, 1 errors") != NULL, "summary: %s", c.err);
  crawl_free(&c);
  site_stop(s);
  return 0;
}

/* A start URL nobody answers: one line with status 0, exit 1. */
TASK_TEST(test_crawler_refused_start) {
  site_t *s = start_site(0);
  char url[64];
  snprintf(url, sizeof url, "%s", site_url(s, "/"));
  site_stop(s); /* nothing listens on that port any more */
  crawl_t c;
  run(&c, url, NULL);
  ck_assert_int_eq(c.exit_code, 1);
  ck_assert_int_eq(c.n, 1);
  ck_assert_int_eq(c.line[0].status, 0);
  ck_assert_str_eq(c.line[0].url, url);
  ck_assert_ptr_nonnull(strstr(c.err, "1 pages, 1 errors"));
  crawl_free(&c);
  return 0;
}

/* Usage errors exit 2 and say how to call it. */
TASK_TEST(test_crawler_usage) {
  const char *u = "http://127.0.0.1:1/";
  const char *cases[][4] = {
      {NULL},
      {"--depth", "1", NULL},
      {u, "--depth", NULL},
      {u, "--depth", "-1", NULL},
      {u, "--depth", "x", NULL},
      {u, "--concurrency", "0", NULL},
      {u, "--delay", "1.5", NULL},
      {u, "--bogus", NULL},
      {u, u, NULL},
      {"ftp://127.0.0.1/", NULL},
      {"mailto:someone@example.invalid", NULL},
      {"not a url", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    crawl_t c;
    run(&c, cases[i][0], cases[i][0] ? cases[i][1] : NULL, cases[i][1] ? cases[i][2] : NULL,
        cases[i][2] ? cases[i][3] : NULL, NULL);
    ck_assert_msg(c.exit_code == 2, "case %zu: exit %d", i, c.exit_code);
    ck_assert_int_eq(c.n, 0);
    ck_assert_ptr_nonnull(strstr(c.err, "usage: crawler URL"));
    crawl_free(&c);
  }
  return 0;
}

/* --------------------------------------------- a server of pages of our own
 *
 * For pages site.c cannot produce: routes written by each test, served on
 * 127.0.0.1 by a task per connection (uva_tcp_listen). A route is a whole
 * URL. A request names it with its Host header, or with the whole URL when
 * the crawler uses this server as its HTTP proxy (run_proxied): made-up
 * host names (crawl.test) and port 80 then need neither DNS nor privileges.
 * Requests are logged as the server normalises them (host lower-case, no
 * ":80"), so two spellings of one page show up as one URL asked twice. */

#define MAX_ROUTES 48
#define MAX_LOG 64

typedef struct route {
  const char *url;      /* "http://host[:port]/path", host lower-case */
  int status;           /* 0: 200 */
  const char *location; /* a Location header, or NULL */
  const char *body;     /* text/html; NULL: none */
  size_t len;           /* 0: strlen(body) */
  int hang;             /* never answer (until the server stops) */
} route_t;

typedef struct server {
  uva_server_t *srv;
  int port;
  route_t route[MAX_ROUTES];
  size_t nroutes;
  char log[MAX_LOG][256]; /* the URLs asked for, in order */
  size_t nlog;
  char str[MAX_ROUTES * 2][256]; /* strings made by str() */
  size_t nstr;
} server_t;

/* A printf-made string that lives as long as s. */
static const char *str(server_t *s, const char *fmt, ...) {
  ck_assert_uint_lt(s->nstr, MAX_ROUTES * 2);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->str[s->nstr], sizeof s->str[0], fmt, ap);
  va_end(ap);
  return s->str[s->nstr++];
}

/* "http://127.0.0.1:PORT" + path. */
static const char *url(server_t *s, const char *path) {
  return str(s, "http://127.0.0.1:%d%s", s->port, path);
}

static route_t *route(server_t *s, const char *u, int status, const char *location, const char *body) {
  ck_assert_uint_lt(s->nroutes, MAX_ROUTES);
  route_t *r = &s->route[s->nroutes++];
  *r = (route_t){.url = u, .status = status, .location = location, .body = body};
  return r;
}

/* The URL a request asks for, normalised as routes are written. */
static void request_url(const char *head, char *out, size_t len) {
  char target[1024] = "", host[256] = "";
  sscanf(head, "%*s %1023s", target);
  for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n"))
    if (strncasecmp(p + 2, "Host:", 5) == 0 && sscanf(p + 7, " %255[^\r\n]", host) == 1) break;
  if (target[0] == '/') snprintf(out, len, "http://%s%s", host, target);
  else snprintf(out, len, "%s", target); /* as a proxy: the whole URL */
  char *h = strstr(out, "://");
  if (!h) return;
  char *end = h + 3 + strcspn(h + 3, "/");
  for (char *p = out; p < end; p++) *p = (char)tolower((unsigned char)*p);
  if (end - h > 6 && strncmp(end - 3, ":80", 3) == 0) memmove(end - 3, end, strlen(end) + 1);
}

static int serve(uva_stream_t *conn, void *arg) {
  server_t *s = arg;
  for (;;) {
    void *v;
    if (uva_await(uva_stream_read_until(conn, "\r\n\r\n", 4, 16384), &v) < 0) break;
    char u[256];
    request_url(((uva_bytes_t *)v)->data, u, sizeof u);
    uva_free(v);
    if (s->nlog < MAX_LOG) snprintf(s->log[s->nlog++], sizeof s->log[0], "%s", u);
    const route_t *r = NULL;
    for (size_t i = 0; i < s->nroutes && !r; i++)
      if (strcmp(s->route[i].url, u) == 0) r = &s->route[i];
    if (r && r->hang) {
      uva_await(uva_sleep(FOREVER_MS), NULL); /* until server_stop cancels us */
      break;
    }
    const char *body = !r ? "<title>Not found</title>" : r->body ? r->body : "";
    size_t len = r && r->len ? r->len : strlen(body);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d Whatever\r\nContent-Type: text/html\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                     !r ? 404 : r->status ? r->status : 200, len, r && r->location ? "Location: " : "",
                     r && r->location ? r->location : "", r && r->location ? "\r\n" : "");
    if (uva_await(uva_stream_write(conn, head, (size_t)n), NULL) < 0 ||
        uva_await(uva_stream_write(conn, body, len), NULL) < 0)
      break;
  }
  return 0;
}

static server_t *server_start(void) {
  server_t *s = calloc(1, sizeof *s);
  ck_assert_ptr_nonnull(s);
  ck_assert_int_eq(uva_tcp_listen(&s->srv, "127.0.0.1", 0, 0, serve, s), 0);
  s->port = uva_server_port(s->srv);
  return s;
}

static void server_stop(server_t *s) {
  uva_await(uva_server_close(s->srv, 1), NULL); /* the tasks use s until they end */
  free(s);
}

/* The server was asked for each URL of want (NULL-terminated) once, and
 * for nothing else. */
static void check_requests(const server_t *s, const char *const *want) {
  ck_assert_uint_lt(s->nlog, MAX_LOG); /* the log did not overflow */
  size_t n = 0;
  for (; want[n]; n++) {
    int times = 0;
    for (size_t i = 0; i < s->nlog; i++) times += strcmp(s->log[i], want[n]) == 0;
    ck_assert_msg(times == 1, "%s asked for %d times", want[n], times);
  }
  for (size_t i = 0; i < s->nlog; i++) {
    int wanted = 0;
    for (size_t k = 0; k < n; k++) wanted |= strcmp(s->log[i], want[k]) == 0;
    ck_assert_msg(wanted, "unexpected request %s", s->log[i]);
  }
}

typedef struct want {
  int status;
  const char *url, *title;
} want_t;

/* c's lines, for failure messages (a static buffer). */
static const char *lines_of(const crawl_t *c) {
  static char buf[4096];
  size_t used = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < c->n && used < sizeof buf; i++)
    used += (size_t)snprintf(buf + used, sizeof buf - used, "\n  %d %s %s", c->line[i].status,
                             c->line[i].url, c->line[i].title);
  return buf;
}

/* The crawl printed exactly these lines (in any order) and exited 0. */
static void check_lines(const crawl_t *c, const want_t *want, size_t n) {
  ck_assert_msg(c->exit_code == 0, "exit %d, stderr: %s", c->exit_code, c->err);
  ck_assert_msg(c->n == n, "%zu lines, not %zu:%s", c->n, n, lines_of(c));
  for (size_t k = 0; k < n; k++) {
    int found = 0;
    for (size_t i = 0; i < c->n; i++)
      if (strcmp(c->line[i].url, want[k].url) == 0) {
        ck_assert_int_eq(c->line[i].status, want[k].status);
        ck_assert_str_eq(c->line[i].title, want[k].title);
        found++;
      }
    ck_assert_msg(found == 1, "%s printed %d times:%s", want[k].url, found, lines_of(c));
  }
}

/* Our environment, with http_proxy pointing at s (and no other proxy
 * setting). Free with free(). */
static char **proxy_env(const server_t *s) {
  extern char **environ;
  size_t n = 0;
  while (environ[n]) n++;
  char **env = calloc(n + 2, sizeof *env), **e = env;
  ck_assert_ptr_nonnull(env);
  static const char *const drop[] = {"http_proxy=", "https_proxy=", "all_proxy=", "no_proxy="};
  for (size_t i = 0; i < n; i++) {
    int keep = 1;
    for (size_t k = 0; k < sizeof drop / sizeof *drop; k++)
      keep &= strncasecmp(environ[i], drop[k], strlen(drop[k])) != 0;
    if (keep) *e++ = environ[i];
  }
  static char proxy[64];
  snprintf(proxy, sizeof proxy, "http_proxy=http://127.0.0.1:%d", s->port);
  *e = proxy;
  return env;
}

/* run, with s as the crawler's HTTP proxy. */
static void run_proxied(crawl_t *c, const server_t *s, const char *arg, ...) {
  char *args[32];
  va_list ap;
  va_start(ap, arg);
  crawler_args(args, arg, ap);
  va_end(ap);
  char **env = proxy_env(s);
  collect(c, spawn(args, env));
  free(env);
}

/* 8,000 nested <div>s (a link at the bottom) used to overflow the task's
 * stack: the walk recursed per level, and so does gumbo_destroy_output.
 * Both now run on a pool thread, the walk with a stack of its own. */
TASK_TEST(test_crawler_deep_html) {
  server_t *s = server_start();
  enum { DEPTH = 8000 };
  size_t cap = DEPTH * 11 + 256, len = 0;
  char *deep = malloc(cap);
  ck_assert_ptr_nonnull(deep);
  len += (size_t)sprintf(deep, "<!DOCTYPE html><title>Deep</title>");
  for (int i = 0; i < DEPTH; i++) len += (size_t)sprintf(deep + len, "<div>");
  len += (size_t)sprintf(deep + len, "<a href=\"bottom.html\">bottom</a>");
  for (int i = 0; i < DEPTH; i++) len += (size_t)sprintf(deep + len, "</div>");
  route(s, url(s, "/"), 0, NULL, deep);
  route(s, url(s, "/bottom.html"), 0, NULL, "<title>Bottom</title>");
  crawl_t c;
  run(&c, url(s, "/"), NULL);
  const want_t want[] = {{200, url(s, "/"), "Deep"}, {200, url(s, "/bottom.html"), "Bottom"}};
  check_lines(&c, want, 2);
  crawl_free(&c);
  server_stop(s);
  free(deep);
  return 0;
}

/* A body over 10 MiB is not buffered whole: that fetch fails (status 0,
 * an error), the others go on. */
TASK_TEST(test_crawler_max_body) {
  server_t *s = server_start();
  size_t len = (10u << 20) + 1;
  char *huge = malloc(len + 1);
  ck_assert_ptr_nonnull(huge);
  memset(huge, 'x', len);
  memcpy(huge, "<title>Huge</title>", 19);
  huge[len] = '\0';
  route(s, url(s, "/"), 0, NULL, "<title>Home</title><a href=huge.html>h</a><a href=next.html>n</a>");
  route(s, url(s, "/huge.html"), 0, NULL, huge)->len = len;
  route(s, url(s, "/next.html"), 0, NULL, "<title>Next</title>");
  crawl_t c;
  run(&c, url(s, "/"), NULL);
  const want_t want[] = {{200, url(s, "/"), "Home"},
                         {0, url(s, "/huge.html"), str(s, "(%s)", uva_strerror(UV_E2BIG))},
                         {200, url(s, "/next.html"), "Next"}};
  check_lines(&c, want, 3);
  ck_assert_msg(strstr(c.err, "3 pages, 1 errors") != NULL, "summary: %s", c.err);
  crawl_free(&c);
  server_stop(s);
  free(huge);
  return 0;
}

/* Links resolve against the first <base href>, itself resolved against the
 * page's final URL (after a redirect here). A base on another host makes
 * the page's relative links off-site. */
TASK_TEST(test_crawler_base_href) {
  server_t *s = server_start();
  route(s, url(s, "/start"), 302, "/a/b/index.html", NULL);
  route(s, url(s, "/a/b/index.html"), 0, NULL,
        "<head><base href=\" sub/\n\"><base href=\"/wrong/\"><title>Index</title></head>"
        "<body><a href=\"x.html\">x</a> <a href=\"/abs.html\">abs</a></body>");
  route(s, url(s, "/a/b/sub/x.html"), 0, NULL,
        "<base href=\"http://other.invalid/\"><title>X</title><a href=\"y.html\">y</a>");
  route(s, url(s, "/abs.html"), 0, NULL, "<title>Abs</title>");
  crawl_t c;
  run(&c, url(s, "/start"), NULL);
  const want_t want[] = {{200, url(s, "/a/b/index.html"), "Index"},
                         {200, url(s, "/a/b/sub/x.html"), "X"},
                         {200, url(s, "/abs.html"), "Abs"}};
  check_lines(&c, want, 3);
  const char *asked[] = {url(s, "/start"), url(s, "/a/b/index.html"), url(s, "/a/b/sub/x.html"),
                         url(s, "/abs.html"), NULL};
  check_requests(s, asked);
  crawl_free(&c);
  server_stop(s);
  return 0;
}

/* As browsers do: an href loses the blanks at its ends and the tabs and
 * newlines inside (" t1.html " is t1.html, not t1.html%20). */
TASK_TEST(test_crawler_href_whitespace) {
  server_t *s = server_start();
  route(s, url(s, "/"), 0, NULL,
        "<title>Home</title><a href=\" t1.html \">1</a><a href=\"\tt2.html\r\n\">2</a>"
        "<a href=\"t3\n.html\">3</a><a href=\"/t4.h\ttml  \">4</a><a href=\"&#32;t5.html&#9;\">5</a>");
  char path[16];
  const char *asked[7] = {url(s, "/")};
  want_t want[6] = {{200, url(s, "/"), "Home"}};
  for (int i = 1; i <= 5; i++) {
    snprintf(path, sizeof path, "/t%d.html", i);
    asked[i] = url(s, path);
    want[i] = (want_t){200, asked[i], str(s, "T%d", i)};
    route(s, asked[i], 0, NULL, str(s, "<title>T%d</title>", i));
  }
  crawl_t c;
  run(&c, url(s, "/"), NULL);
  check_lines(&c, want, 6);
  check_requests(s, asked);
  crawl_free(&c);
  server_stop(s);
  return 0;
}

/* One page, one spelling: the host's case and the default port do not make
 * another page or another origin. (Through the proxy: crawl.test, port 80.) */
TASK_TEST(test_crawler_normalised_urls) {
  server_t *s = server_start();
  route(s, "http://crawl.test/", 0, NULL,
        "<title>Home</title>"
        "<a href=\"http://crawl.test/a\">a</a> <a href=\"http://CRAWL.TEST:80/a\">a again</a>"
        "<a href=\"/b\">b</a> <a href=\"http://Crawl.Test:80/b#x\">b again</a>"
        "<a href=\"HTTP://crawl.test/c\">c</a> <a href=\"http://crawl.test:8080/\">another port</a>"
        "<a href=\"http://other.test/\">another host</a>");
  route(s, "http://crawl.test/a", 0, NULL, "<title>A</title><a href=\"http://CRAWL.test/\">home</a>");
  route(s, "http://crawl.test/b", 0, NULL, "<title>B</title>");
  route(s, "http://crawl.test/c", 0, NULL, "<title>C</title>");
  crawl_t c;
  run_proxied(&c, s, "http://Crawl.TEST:80/", NULL);
  const want_t want[] = {{200, "http://crawl.test/", "Home"},
                         {200, "http://crawl.test/a", "A"},
                         {200, "http://crawl.test/b", "B"},
                         {200, "http://crawl.test/c", "C"}};
  check_lines(&c, want, 4);
  const char *asked[] = {"http://crawl.test/", "http://crawl.test/a", "http://crawl.test/b",
                         "http://crawl.test/c", NULL};
  check_requests(s, asked);
  crawl_free(&c);
  server_stop(s);
  return 0;
}

/* Redirects are followed by the crawler, not curl: within the origin, to
 * pages not seen yet, relative Locations against the current URL, 10 hops
 * at most. The others end there, printed as the 3xx they are. */
TASK_TEST(test_crawler_redirects) {
  server_t *s = server_start();
  route(s, "http://crawl.test/", 0, NULL,
        "<title>Home</title><a href=/away>1</a> <a href=/back>2</a> <a href=/twice>3</a>"
        "<a href=/target>4</a> <a href=/chain/0>5</a> <a href=/rel/a/b>6</a>");
  route(s, "http://crawl.test/away", 302, "http://other.test/x", NULL);
  route(s, "http://other.test/x", 0, NULL, "<title>Elsewhere</title>");
  route(s, "http://crawl.test/back", 302, "http://CRAWL.test:80/#top", NULL);
  route(s, "http://crawl.test/twice", 302, "/target", NULL);
  route(s, "http://crawl.test/target", 0, NULL, "<title>Target</title>");
  const char *asked[32] = {"http://crawl.test/", "http://crawl.test/away", "http://crawl.test/back",
                           "http://crawl.test/twice", "http://crawl.test/target",
                           "http://crawl.test/rel/a/b", "http://crawl.test/rel/c"};
  size_t n = 7;
  for (int i = 0; i < 15; i++) {
    const char *from = str(s, "http://crawl.test/chain/%d", i);
    route(s, from, 302, str(s, "/chain/%d", i + 1), NULL);
    if (i <= 10) asked[n++] = from; /* 10 hops from /chain/0 */
  }
  route(s, "http://crawl.test/rel/a/b", 301, "../c", NULL);
  route(s, "http://crawl.test/rel/c", 0, NULL, "<title>Rel C</title>");
  crawl_t c;
  run_proxied(&c, s, "http://crawl.test/", "--depth", "1", NULL);
  const want_t want[] = {{200, "http://crawl.test/", "Home"},
                         {302, "http://crawl.test/away", ""},
                         {302, "http://crawl.test/back", ""},
                         {302, "http://crawl.test/twice", ""},
                         {200, "http://crawl.test/target", "Target"},
                         {302, "http://crawl.test/chain/10", ""},
                         {200, "http://crawl.test/rel/c", "Rel C"}};
  check_lines(&c, want, 7);
  check_requests(s, asked);
  ck_assert_msg(strstr(c.err, "7 pages, 0 errors") != NULL, "summary: %s", c.err);
  crawl_free(&c);
  server_stop(s);
  return 0;
}

/* The start URL may move to another origin (another host here): the crawl
 * then stays on the one it landed on. */
TASK_TEST(test_crawler_start_redirect) {
  server_t *s = server_start();
  route(s, "http://crawl.test/", 301, "http://WWW.crawl.test/home", NULL);
  route(s, "http://www.crawl.test/home", 0, NULL,
        "<title>Home</title><a href=\"/a\">a</a> <a href=\"http://crawl.test/b\">old host</a>"
        "<a href=\"http://www.crawl.test/home#x\">itself</a>");
  route(s, "http://www.crawl.test/a", 0, NULL, "<title>A</title>");
  route(s, "http://crawl.test/b", 0, NULL, "<title>B</title>");
  crawl_t c;
  run_proxied(&c, s, "http://crawl.test/", NULL);
  const want_t want[] = {{200, "http://www.crawl.test/home", "Home"}, {200, "http://www.crawl.test/a", "A"}};
  check_lines(&c, want, 2);
  const char *asked[] = {"http://crawl.test/", "http://www.crawl.test/home", "http://www.crawl.test/a", NULL};
  check_requests(s, asked);
  crawl_free(&c);
  server_stop(s);
  return 0;
}

/* Ctrl-C: the fetches it cancels (waiting for the semaphore, for their
 * turn or for an answer) are neither printed nor counted; exit 1.
 *
 * "/", then /h1 and /h2 a delay apart (they never get an answer); /h3
 * waits for its turn, /h4 for the semaphore. The Ctrl-C comes once /h2 is
 * at the server; a test slower than the delay to send it lets /h3 start
 * too (it waits for an answer then, and the outcome is the same), but
 * then the try is repeated with twice the delay, until one had /h3 still
 * waiting for its turn. */
TASK_TEST(test_crawler_ctrl_c) {
  for (int delay = 300;; delay *= 2) {
    server_t *s = server_start();
    route(s, url(s, "/"), 0, NULL,
          "<title>Home</title><a href=h1>1</a><a href=h2>2</a><a href=h3>3</a><a href=h4>4</a>");
    for (int i = 1; i <= 4; i++) route(s, url(s, str(s, "/h%d", i)), 0, NULL, NULL)->hang = 1;
    char d[16];
    snprintf(d, sizeof d, "%d", delay);
    char *args[] = {getenv("CRAWLER"), (char *)url(s, "/"), "--concurrency", "3", "--delay", d, NULL};
    ck_assert_ptr_nonnull(args[0]);
    uva_process_t *p = spawn(args, NULL);
    WAIT_UNTIL(s->nlog >= 3);
    ck_assert_int_eq(uva_process_kill(p, SIGINT), 0);
    crawl_t c;
    collect(&c, p);
    ck_assert_msg(c.exit_code == 1, "exit %d, stderr: %s", c.exit_code, c.err);
    ck_assert_msg(c.n == 1, "%zu lines:%s", c.n, lines_of(&c));
    ck_assert_str_eq(c.line[0].url, url(s, "/"));
    ck_assert_msg(strstr(c.err, "1 pages, 0 errors") != NULL, "summary: %s", c.err);
    crawl_free(&c);
    size_t asked = s->nlog; /* the crawler has exited: final */
    server_stop(s);
    if (asked == 3) break; /* /h3 was still waiting for its turn */
    ck_assert_uint_eq(asked, 4);
  }
  return 0;
}

static Suite *suite(void) {
  Suite *s = suite_create("crawler");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_crawler_depth_0);
  tcase_add_test(tc, test_crawler_depth_1);
  tcase_add_test(tc, test_crawler_depth_2);
  tcase_add_test(tc, test_crawler_depth_3);
  tcase_add_test(tc, test_crawler_default_depth);
  tcase_add_test(tc, test_crawler_skips_and_non_html);
  tcase_add_test(tc, test_crawler_concurrency);
  tcase_add_test(tc, test_crawler_delay);
  tcase_add_test(tc, test_crawler_error_page);
  tcase_add_test(tc, test_crawler_refused_start);
  tcase_add_test(tc, test_crawler_usage);
  tcase_add_test(tc, test_crawler_deep_html);
  tcase_add_test(tc, test_crawler_max_body);
  tcase_add_test(tc, test_crawler_base_href);
  tcase_add_test(tc, test_crawler_href_whitespace);
  tcase_add_test(tc, test_crawler_normalised_urls);
  tcase_add_test(tc, test_crawler_redirects);
  tcase_add_test(tc, test_crawler_start_redirect);
  tcase_add_test(tc, test_crawler_ctrl_c);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
