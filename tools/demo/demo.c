/* demo.c: the crawl demo (tools/demo.sh runs it).
 *
 * Serves a generated web site on 127.0.0.1 from this process (site.c: every
 * answer comes after 100-300 ms, like a server far away), then runs the
 * crawler sample against it as a subprocess, first one page at a time
 * (--concurrency 1), then with 16 and 64 pages in flight, and prints what
 * each run took. Both the site and the subprocesses run on one uvasync loop:
 * the site's connection tasks answer while the main task reads the
 * crawler's output.
 *
 * Checks that every run fetched the same pages (its output lines, sorted),
 * as many as the site's link structure says, and that --concurrency 1 never
 * had more than one request in flight; exits 1 otherwise. Ctrl-C stops the
 * crawler running (SIGTERM, then SIGKILL if it lingers) and the site, and
 * exits 130.
 *
 * usage: demo [--crawler PATH] [--pages N] [--quick]
 *   --crawler PATH  the crawler program (default: the one built with this)
 *   --pages N       pages on the site (default 36: 45 documents, ~10 s one at a
 *                   time)
 *   --quick         a small, fast site (13 pages, 10-30 ms), for CI
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvasync.h>

#include "site.h"

#ifndef DEMO_CRAWLER
#define DEMO_CRAWLER "build/samples/crawler"
#endif

static const char *crawler = DEMO_CRAWLER;
static site_opts_t opts = {.pages = 36, .min_delay_ms = 100, .max_delay_ms = 300, .seed = 1};

typedef struct run {
  const char *mode;
  int concurrency;
  int exit_code;   /* the crawler's exit status (128 + N: ended by signal
                    * N); -1 if it did not run to its end on its own */
  double secs;
  long max_in_flight;
  char *out, *err; /* the crawler's stdout and stderr */
  char **lines;    /* stdout's lines, sorted */
  size_t n;
} run_t;

/* Read s to its end into a malloc'd string. */
static int read_all(uva_stream_t *s, char **out) {
  size_t len = 0, cap = 4096;
  char *b = malloc(cap);
  while (b) {
    if (cap - len < 1024) {
      char *nb = realloc(b, cap *= 2);
      if (!nb) {
        free(b);
        break;
      }
      b = nb;
    }
    int r = uva_await(uva_stream_read(s, b + len, cap - len - 1), NULL);
    if (r < 0) {
      b[len] = '\0';
      *out = b;
      return r == UV_EOF ? 0 : r;
    }
    len += (size_t)r;
  }
  *out = NULL;
  return UV_ENOMEM;
}

static int by_string(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Stop the crawler now rather than wait for it to finish: SIGTERM, then
 * SIGKILL if it is still there after a second. Waits for it to end. */
static void stop_crawler(uva_process_t *p) {
  uva_process_kill(p, SIGTERM);
  int st = uva_await(uva_wait_for(uva_process_wait(p), 1000), NULL);
  if (st == UV_ETIMEDOUT || st == UV_ECANCELED || st == UV_ENOMEM) {
    uva_process_kill(p, SIGKILL);
    uva_await(uva_process_wait(p), NULL);
  }
}

/* Crawl the site with `concurrency` requests at most, as a subprocess.
 * Returns 0 once the crawler has exited (r->exit_code says how) and its
 * output is split, or a negative error: the crawler could not start,
 * its output could not be read, or the task was cancelled (UV_ECANCELED:
 * Ctrl-C); a crawler still running then is stopped. */
static int crawl(site_t *site, int depth, run_t *r) {
  char url[64], depth_s[16], conc_s[16];
  snprintf(url, sizeof url, "%s", site_url(site, "/"));
  snprintf(depth_s, sizeof depth_s, "%d", depth);
  snprintf(conc_s, sizeof conc_s, "%d", r->concurrency);
  char *args[] = {(char *)crawler, url, "--depth", depth_s, "--concurrency", conc_s, NULL};
  uva_process_opts_t po = {.file = crawler, .args = args,
                           .stdio = {UVA_STDIO_IGNORE, UVA_STDIO_PIPE, UVA_STDIO_PIPE}};
  uva_process_t *p;
  r->exit_code = -1;
  site_reset_stats(site);
  uint64_t t0 = uv_hrtime();
  int rc = uva_process_spawn(&p, &po);
  if (rc < 0) {
    fprintf(stderr, "demo: cannot run %s: %s (build it, or pass --crawler PATH)\n", crawler,
            uva_strerror(rc));
    return rc;
  }
  /* the summary on stderr is short: reading stdout first cannot block it */
  if ((rc = read_all(uva_process_stdio(p, 1), &r->out)) == 0)
    rc = read_all(uva_process_stdio(p, 2), &r->err);
  if (rc == 0) { /* both pipes at their end: the crawler is (about) done */
    int st = uva_await(uva_process_wait(p), NULL);
    if (st >= 0) r->exit_code = st;
    else rc = st; /* cancelled while waiting */
  }
  if (rc < 0) stop_crawler(p); /* interrupted: do not wait for it to finish */
  r->secs = (double)(uv_hrtime() - t0) / 1e9;
  r->max_in_flight = site_stats(site)->max_in_flight;
  uva_process_free(p);
  if (rc < 0) return rc;
  for (char *s = r->out; *s; s++) r->n += *s == '\n';
  if (!(r->lines = malloc((r->n + 1) * sizeof *r->lines))) return UV_ENOMEM;
  size_t i = 0;
  for (char *s = strtok(r->out, "\n"); s && i < r->n; s = strtok(NULL, "\n")) r->lines[i++] = s;
  r->n = i;
  qsort(r->lines, r->n, sizeof *r->lines, by_string);
  return 0;
}

static int same_pages(const run_t *a, const run_t *b) {
  if (a->n != b->n) return 0;
  for (size_t i = 0; i < a->n; i++)
    if (strcmp(a->lines[i], b->lines[i]) != 0) return 0;
  return 1;
}

static int demo(void *arg) {
  (void)arg;
  run_t runs[] = {{.mode = "one page at a time", .concurrency = 1},
                  {.mode = "concurrent", .concurrency = 16},
                  {.mode = "concurrent", .concurrency = 64}};
  size_t nruns = sizeof runs / sizeof runs[0];
  site_t *site;
  int rc = site_start(&site, &opts), ok = 1, interrupted = 0;
  if (rc < 0) {
    fprintf(stderr, "demo: site: %s\n", uva_strerror(rc));
    return 1;
  }
  int depth = site_page_depth(opts.pages - 1) + 1; /* every page and file */
  long expected = site_expected(opts.pages, depth);
  printf("A generated site on %s: %d pages and %ld files, each answered after %d-%d ms.\n"
         "%s URL --depth %d --concurrency N, against it:\n\n",
         site_url(site, "/"), opts.pages, expected - opts.pages, opts.min_delay_ms,
         opts.max_delay_ms, crawler, depth);
  printf("%-28s %8s %10s %8s %8s %8s\n", "mode", "fetched", "in flight", "wall s", "fetch/s", "speedup");
  for (size_t i = 0; i < nruns && ok; i++) {
    run_t *r = &runs[i];
    char mode[64];
    snprintf(mode, sizeof mode, "%s (-c %d)", r->mode, r->concurrency);
    printf("%-28s ", mode);
    fflush(stdout);
    rc = crawl(site, depth, r);
    if (rc == UV_ECANCELED) {
      printf("interrupted: crawler stopped\n");
      interrupted = 1;
      ok = 0;
      break;
    }
    if (rc < 0 || r->exit_code != 0) {
      if (r->exit_code > 0) printf("failed: the crawler exited with status %d\n", r->exit_code);
      else if (r->exit_code == 0) printf("failed after the crawl: %s\n", uva_strerror(rc));
      else printf("failed: %s\n", uva_strerror(rc)); /* it did not start, or its output broke */
      if (r->err) printf("%s", r->err);
      ok = 0;
      break;
    }
    printf("%8zu %10ld %8.2f %8.1f %7.1fx\n", r->n, r->max_in_flight, r->secs, (double)r->n / r->secs,
           runs[0].secs / r->secs);
    if ((long)r->n != expected) {
      printf("  expected %ld pages\n", expected);
      ok = 0;
    }
    if (i > 0 && !same_pages(&runs[0], r)) {
      printf("  found other pages than the first run\n");
      ok = 0;
    }
  }
  if (ok && runs[0].max_in_flight != 1) {
    printf("--concurrency 1 had %ld requests in flight at once\n", runs[0].max_in_flight);
    ok = 0;
  }
  if (ok)
    printf("\nEvery run fetched the same %zu URLs (output lines compared, sorted).\n"
           "The seed's Python crawler on its site: sync ~45 s / threads ~8 s / async ~2 s.\n",
           runs[0].n);
  for (size_t i = 0; i < nruns; i++) free(runs[i].out), free(runs[i].err), free(runs[i].lines);
  site_stop(site);
  return interrupted ? 130 : ok ? 0 : 1;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--crawler") && i + 1 < argc) {
      crawler = argv[++i];
    } else if (!strcmp(argv[i], "--pages") && i + 1 < argc && atoi(argv[i + 1]) > 0) {
      opts.pages = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--quick")) {
      opts.pages = 13, opts.min_delay_ms = 10, opts.max_delay_ms = 30;
    } else {
      fprintf(stderr, "usage: demo [--crawler PATH] [--pages N] [--quick]\n");
      return 2;
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  int rc = uva_run(demo, NULL);
  return rc == 0 ? 0 : rc == 130 || rc == UV_ECANCELED ? 130 : 1;
}
