/* crawler.c: a breadth-first web crawler that keeps several pages in flight.
 *
 * Shows: each level of the crawl is a batch of tasks, one per URL, joined
 * with uva_gather(); a uva semaphore caps how many fetch at once. Each task
 * is plain sequential code (acquire, wait its turn, uva_http_get, parse,
 * release); the HTTP client runs the transfers side by side. Links are
 * resolved with curl's URL API, pages parsed with gumbo.
 *
 * usage: crawler URL [--depth N] [--concurrency N] [--delay MS]
 *   --depth N        follow links N times from URL (default 2)
 *   --concurrency N  fetch at most N pages at once (default 8)
 *   --delay MS       at least MS ms between two request starts (default 0)
 * Only URLs with the start URL's scheme, host and port are followed;
 * "#fragments" are dropped, so a page is fetched once. Responses that are
 * not text/html are fetched and counted, not parsed.
 * stdout: one line per fetch: HTTP status (0 if it failed), final URL
 * (after redirects), title, tab-separated. stderr: a summary. Exit 0; 1 if
 * the start URL failed (no answer, or a 4xx/5xx) or on Ctrl-C; 2 on usage.
 *
 * asyncio original (aiohttp):
 *   async def fetch(url):
 *       async with sem:
 *           async with session.get(url) as r: html = await r.text()
 *       return [urljoin(str(r.url), a["href"]) for a in soup(html, "a")]
 *   while level and depth <= max_depth:
 *       found = await asyncio.gather(*(fetch(u) for u in level))
 *       level = [u for links in found for u in links if new(u)]
 */
#include <curl/curl.h>
#include <gumbo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uvasync.h>

typedef struct list { char **url; size_t n, cap; } list_t; /* URLs from curl_url_get */
typedef struct node { struct node *next; char url[]; } node_t; /* in the visited set */
typedef struct job { char *url; int depth; } job_t;            /* one fetch task's */

#define NBUCKETS 4096
static struct {
  int depth, concurrency, delay_ms;
  char *origin; /* "scheme://host:port" of the start URL */
  uva_http_client_t *client;
  uva_sem_t *sem;
  double next_start; /* politeness: the earliest start of the next request */
  list_t next;       /* new links found on the level being fetched */
  node_t *seen[NBUCKETS]; /* the visited set: a chained hash table */
  long pages, errors;
  unsigned long long bytes;
} C = {.depth = 2, .concurrency = 8};

static void drop(list_t *l) {
  for (size_t i = 0; i < l->n; i++) curl_free(l->url[i]);
  free(l->url);
  *l = (list_t){0};
}

static int push(list_t *l, char *url) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    char **v = realloc(l->url, cap * sizeof *v);
    if (!v) return -1;
    l->url = v, l->cap = cap;
  }
  l->url[l->n++] = url;
  return 0;
}

/* 1 if url was not seen before (it is now), 0 if it was. */
static int visit(const char *url) {
  size_t h = 5381, len = strlen(url) + 1;
  for (const char *p = url; *p; p++) h = h * 33 + (unsigned char)*p;
  node_t **b = &C.seen[h % NBUCKETS];
  for (node_t *n = *b; n; n = n->next)
    if (strcmp(n->url, url) == 0) return 0;
  node_t *n = malloc(sizeof *n + len);
  if (!n) return 0;
  memcpy(n->url, url, len);
  n->next = *b, *b = n;
  return 1;
}

/* href resolved against base (NULL: href is absolute), without its
 * #fragment, or NULL unless it is an http(s) URL of the crawl's origin.
 * The first URL resolved sets the origin. Free the result with curl_free. */
static char *resolve(const char *base, const char *href) {
  CURLU *u = curl_url();
  char *url = NULL, *scheme = NULL, *host = NULL, *port = NULL;
  if (u && (!base || !curl_url_set(u, CURLUPART_URL, base, 0)) &&
      !curl_url_set(u, CURLUPART_URL, href, 0) && !curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) &&
      !curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) && !curl_url_get(u, CURLUPART_HOST, &host, 0) &&
      !curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) &&
      (!strcmp(scheme, "http") || !strcmp(scheme, "https"))) {
    char origin[512];
    snprintf(origin, sizeof origin, "%s://%s:%s", scheme, host, port);
    if (!C.origin) C.origin = strdup(origin);
    if (C.origin && !strcmp(origin, C.origin)) curl_url_get(u, CURLUPART_URL, &url, 0);
  }
  curl_free(scheme), curl_free(host), curl_free(port);
  curl_url_cleanup(u);
  return url;
}

/* A link on the page at base: queue it for the next level if it is new. */
static void add_link(const char *base, const char *href) {
  href += strspn(href, " \t\r\n\f");
  if (!*href || *href == '#') return; /* this page (curl 7.88 mis-resolves "#x") */
  char *url = resolve(base, href);
  if (url && visit(url) && push(&C.next, url) == 0) return;
  curl_free(url);
}

/* Walk the parsed document: the first <title>'s text, and <a href> links
 * when follow is set. */
static void walk(const GumboNode *n, const char *base, int follow, char *title, size_t cap) {
  if (n->type != GUMBO_NODE_ELEMENT) return;
  const GumboElement *e = &n->v.element;
  if (e->tag == GUMBO_TAG_TITLE && !title[0] && e->children.length > 0) {
    const GumboNode *t = e->children.data[0];
    size_t len = 0;
    for (const char *p = t->type == GUMBO_NODE_TEXT ? t->v.text.text : ""; *p && len + 1 < cap; p++) {
      int space = *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f';
      if (!space) title[len++] = *p;
      else if (len && title[len - 1] != ' ') title[len++] = ' '; /* a run becomes one space */
    }
    while (len && title[len - 1] == ' ') len--;
    title[len] = '\0';
  }
  const GumboAttribute *href;
  if (follow && e->tag == GUMBO_TAG_A && (href = gumbo_get_attribute(&e->attributes, "href")))
    add_link(base, href->value);
  for (unsigned i = 0; i < e->children.length; i++)
    walk(e->children.data[i], base, follow, title, cap);
}

static double now_ms(void) { return (double)uv_hrtime() / 1e6; }

/* Politeness: take the next start slot for the (one) host, sleep until it. */
static int wait_turn(void) {
  double now = now_ms(), slot = now > C.next_start ? now : C.next_start;
  C.next_start = slot + C.delay_ms;
  int rc = 0;
  while (rc == 0 && (now = now_ms()) < slot) rc = uva_await(uva_sleep((uint64_t)(slot - now) + 1), NULL);
  return rc;
}

/* One URL: fetch it, print its line, queue its links. Returns 0, 1 (HTTP
 * error status) or a negative error. */
static int fetch(void *arg) {
  job_t *j = arg;
  void *v = NULL;
  int rc = uva_await(uva_sem_acquire(C.sem), NULL);
  if (rc < 0) return rc;
  if ((rc = wait_turn()) == 0) rc = uva_await(uva_http_get(C.client, j->url), &v);
  uva_sem_release(C.sem);
  C.pages++;
  if (rc < 0) {
    C.errors++;
    printf("0\t%s\t(%s)\n", j->url, uva_strerror(rc)); /* the title column says why */
    return rc;
  }
  uva_http_response_t *r = v;
  C.bytes += r->body_len;
  C.errors += r->status >= 400;
  /* After a redirect, remember where we landed; if another URL already led
   * there, do not follow its links a second time. */
  char *final = resolve(NULL, r->effective_url);
  int fresh = !final || !strcmp(final, j->url) || visit(final);
  curl_free(final);
  char title[256] = "";
  const char *type = uva_http_response_header(r, "Content-Type");
  if (type && strncasecmp(type, "text/html", 9) == 0) {
    GumboOutput *doc = gumbo_parse_with_options(&kGumboDefaultOptions, r->body, r->body_len);
    walk(doc->root, r->effective_url, fresh && j->depth < C.depth, title, sizeof title);
    gumbo_destroy_output(&kGumboDefaultOptions, doc);
  }
  printf("%d\t%s\t%s\n", r->status, r->effective_url, title);
  rc = r->status >= 400;
  uva_http_response_free(r);
  return rc;
}

static int crawl(void *arg) {
  list_t level = {0};
  uva_http_client_opts_t o = {.user_agent = "uvasync-crawler/0.1", .timeout_ms = 15000,
                              .connect_timeout_ms = 5000};
  int rc = uva_http_client_new(&C.client, &o);
  if (rc < 0 || !(C.sem = uva_sem_new((unsigned)C.concurrency, 0)) || push(&level, arg) < 0) {
    fprintf(stderr, "crawler: %s\n", uva_strerror(rc < 0 ? rc : UV_ENOMEM));
    uva_http_client_free(C.client), uva_sem_free(C.sem), curl_free(arg);
    return 1;
  }
  visit(arg);
  int start_failed = 0;
  for (int depth = 0; depth <= C.depth && level.n > 0 && rc >= 0; depth++) {
    job_t *jobs = calloc(level.n, sizeof *jobs);
    uva_future_t **fs = calloc(level.n, sizeof *fs);
    for (size_t i = 0; jobs && fs && i < level.n; i++) {
      jobs[i] = (job_t){level.url[i], depth};
      fs[i] = uva_spawn(fetch, &jobs[i]);
    }
    void *res = NULL; /* every task ends before the gather does */
    rc = jobs && fs ? uva_await(uva_gather(fs, level.n, UVA_RETURN_EXCEPTIONS), &res) : UV_ENOMEM;
    if (depth == 0) start_failed = rc < 0 || ((uva_results_t *)res)->item[0].status != 0;
    uva_results_free(res);
    free(jobs), free(fs);
    drop(&level);
    level = C.next; /* the links found on this level make the next one */
    C.next = (list_t){0};
  }
  drop(&level);
  uva_sem_free(C.sem);
  uva_http_client_free(C.client);
  return start_failed || rc < 0;
}

static int number(const char *s, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < 0 || v > 1000000) return 0;
  *out = (int)v;
  return 1;
}

int main(int argc, char **argv) {
  const char *start = NULL;
  int ok = 1;
  for (int i = 1; i < argc && ok; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--depth")) ok = number(val, &C.depth), i++;
    else if (!strcmp(a, "--concurrency")) ok = number(val, &C.concurrency) && C.concurrency > 0, i++;
    else if (!strcmp(a, "--delay")) ok = number(val, &C.delay_ms), i++;
    else if (a[0] != '-' && !start) start = a;
    else ok = 0;
  }
  char *url = ok && start ? resolve(NULL, start) : NULL;
  if (!url) {
    if (ok && start) fprintf(stderr, "crawler: not an http(s) URL: %s\n", start);
    fprintf(stderr, "usage: crawler URL [--depth N] [--concurrency N] [--delay MS]\n");
    return 2;
  }
  double t0 = now_ms();
  int rc = uva_run(crawl, url);
  fprintf(stderr, "crawler: %ld pages, %ld errors, %llu bytes, %.2f s\n", C.pages, C.errors,
          C.bytes, (now_ms() - t0) / 1000);
  for (size_t i = 0; i < NBUCKETS; i++)
    for (node_t *n = C.seen[i], *next; n; n = next) next = n->next, free(n);
  free(C.origin);
  return rc == 0 ? 0 : 1;
}
