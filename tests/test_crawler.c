/* The crawler sample (samples/crawler.c, path in $CRAWLER), run as a
 * subprocess against the generated site of tools/demo/site.c, served from
 * the test's own loop. The site's link structure (site.h) gives the exact
 * set of documents a correct crawl fetches at each depth, and its request
 * log shows what the crawler asked for and when. */
#include "helpers.h"
#include "site.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

/* Run $CRAWLER with the arguments given (NULL-terminated) and collect its
 * output, each stdout line split into status, URL and title. */
static void run(crawl_t *c, const char *arg, ...) {
  const char *path = getenv("CRAWLER");
  ck_assert_msg(path != NULL, "CRAWLER is not set");
  char *args[32] = {(char *)path};
  int n = 1;
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a && n < 31; a = va_arg(ap, const char *)) args[n++] = (char *)a;
  va_end(ap);
  uva_process_opts_t o = {.file = path, .args = args,
                          .stdio = {UVA_STDIO_IGNORE, UVA_STDIO_PIPE, UVA_STDIO_PIPE}};
  uva_process_t *p;
  ck_assert_int_eq(uva_process_spawn(&p, &o), 0);
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
 * than one (the levels are wide enough). */
TASK_TEST(test_crawler_concurrency) {
  site_t *s = start_site(0);
  crawl_t c;
  run(&c, site_url(s, "/"), "--depth", "3", "--concurrency", "1", NULL);
  check_crawl(s, &c, 3, 44);
  ck_assert_int_eq(site_stats(s)->max_in_flight, 1);
  crawl_free(&c);
  site_reset_stats(s);
  run(&c, site_url(s, "/"), "--depth", "3", "--concurrency", "4", NULL);
  check_crawl(s, &c, 3, 44);
  ck_assert_int_le(site_stats(s)->max_in_flight, 4);
  ck_assert_int_ge(site_stats(s)->max_in_flight, 2);
  crawl_free(&c);
  site_stop(s);
  return 0;
}

/* --delay 250: request starts to the host at least 250 ms apart, even with
 * four allowed at once (without it, pages 1-3 start together).
 *
 * Measured where the requests arrive, at the server: arrival = start +
 * latency, and latency varies (a new connection takes longer than a reused
 * one; with the CPUs busy, one arrival now and then comes 50-80 ms late,
 * which shortens the gap after it as much as it lengthens the one before).
 * So the checks are: the i-th request arrives at least i x 250 - 100 ms
 * after the first (only the first one's lateness counts), and no two
 * arrive less than 125 ms apart (no bunching). */
static void check_delay(site_t *s, int delay_ms) {
  size_t n;
  const site_request_t *log = site_log(s, &n);
  char gaps[256] = "";
  for (size_t i = 1, used = 0; i < n && used < sizeof gaps; i++)
    used += (size_t)snprintf(gaps + used, sizeof gaps - used, " %.1f",
                             (double)(log[i].t_ns - log[i - 1].t_ns) / 1e6);
  for (size_t i = 1; i < n; i++) {
    double since_first = (double)(log[i].t_ns - log[0].t_ns) / 1e6;
    double gap = (double)(log[i].t_ns - log[i - 1].t_ns) / 1e6;
    if (delay_ms == 0) { /* the requests of level 1 start together */
      ck_assert_msg(i < 2 || log[i].t_ns - log[1].t_ns < 100 * 1000000, "without --delay, gaps:%s", gaps);
    } else {
      ck_assert_msg(since_first >= (double)i * delay_ms - 100, "--delay %d, gaps:%s", delay_ms, gaps);
      ck_assert_msg(gap >= delay_ms / 2.0, "--delay %d, gaps:%s", delay_ms, gaps);
    }
  }
}

TASK_TEST(test_crawler_delay) {
  site_t *s = start_site(0);
  crawl_t c;
  run(&c, site_url(s, "/"), "--depth", "1", "--concurrency", "4", NULL);
  check_crawl(s, &c, 1, 5);
  check_delay(s, 0);
  crawl_free(&c);
  site_reset_stats(s);
  run(&c, site_url(s, "/"), "--depth", "1", "--concurrency", "4", "--delay", "250", NULL);
  check_crawl(s, &c, 1, 5);
  check_delay(s, 250);
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
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
