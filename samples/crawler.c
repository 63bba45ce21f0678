/* crawler.c: a breadth-first web crawler that keeps several pages in flight.
 *
 * Shows: each level of the crawl is a batch of tasks, one per URL, joined
 * with uva_gather(); a uva semaphore caps how many fetch at once. Each task
 * is plain sequential code (acquire, wait its turn, request, follow
 * redirects, release, parse, queue links): the HTTP client runs transfers
 * side by side, uva_to_thread() runs the parsing on libuv's thread pool.
 * URLs are handled with curl's URL API, pages parsed with gumbo.
 *
 * usage: crawler URL [--depth N] [--concurrency N] [--delay MS]
 *   --depth N        follow links N times from URL (default 2)
 *   --concurrency N  fetch at most N pages at once (default 8)
 *   --delay MS       at least MS ms between two request starts (default 0)
 * Only links and redirects (10 in a row at most) within the crawl's origin
 * (scheme, host, port: the start URL's, or where it redirects to) are
 * followed. URLs are normalised (lower-case scheme and host, no default
 * port, no #fragment), so a page is fetched once. Links resolve against
 * <base href> if any. Only text/html is parsed; a body over 10 MiB fails.
 * stdout: one line per fetch: HTTP status (0 if it failed), final URL
 * (after redirects; a 3xx we do not follow is the answer), title,
 * tab-separated. stderr: a summary. Exit 0; 1 if the start URL failed (no
 * answer, or a 4xx/5xx) or on Ctrl-C; 2 on usage.
 *
 * asyncio original (aiohttp):
 *   async def fetch(url):
 *       async with sem:
 *           async with session.get(url) as r: html = await r.text()
 *       title, base, hrefs = await asyncio.to_thread(parse, html)
 *       return [urljoin(urljoin(str(r.url), base), h) for h in hrefs]
 *   while level and depth <= max_depth:
 *       found = await asyncio.gather(*(fetch(u) for u in level))
 *       level = [u for links in found for u in links if new(u)]
 */
#include <ctype.h>
#include <curl/curl.h>
#include <gumbo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uvasync.h>

typedef struct list { void **item; size_t n, cap; } list_t; /* malloc'd strings, or nodes */
typedef struct node { struct node *next; char url[]; } node_t; /* in the visited set */
typedef struct job { char *url; int depth; } job_t;            /* one fetch task's */
typedef struct page { /* a parse job's input (borrowed from the response)... */
  const char *html; size_t len; int follow; /* follow: collect the links */
  char title[256], *base; list_t links; /* ...and output: first <title>, <base href>, <a href>s */
} page_t;

#define NBUCKETS 4096
#define ORIGIN_MAX 512
#define MAX_HOPS 10
static struct {
  int depth, concurrency, delay_ms;
  char origin[ORIGIN_MAX]; /* "scheme://host[:port]" of the crawl */
  uva_http_client_t *client;
  uva_sem_t *sem;
  double next_start; /* politeness: the earliest start of the next request */
  list_t next;       /* new links found on the level being fetched */
  node_t *seen[NBUCKETS]; /* the visited set: a chained hash table */
  long pages, errors;
  unsigned long long bytes;
} C = {.depth = 2, .concurrency = 8};

static void drop(list_t *l) {
  for (size_t i = 0; i < l->n; i++) free(l->item[i]);
  free(l->item);
  *l = (list_t){0};
}

static int push(list_t *l, void *item) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    void **v = realloc(l->item, cap * sizeof *v);
    if (!v) return UV_ENOMEM;
    l->item = v, l->cap = cap;
  }
  l->item[l->n++] = item;
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

/* As browsers do with an href: no spaces or control characters at either
 * end, no tab, CR or LF inside (an attribute may wrap). In place. */
static char *clean(char *s) {
  while (*s && (unsigned char)*s <= ' ') s++;
  char *out = s;
  for (const char *p = s; *p; p++)
    if (*p != '\t' && *p != '\r' && *p != '\n') *out++ = *p;
  while (out > s && (unsigned char)out[-1] <= ' ') out--;
  *out = '\0';
  return s;
}

/* href resolved against base (NULL: href is absolute) and normalised, so
 * that one page has one spelling (for the visited set and the origin rule):
 * lower-case scheme and host, no default port, no #fragment. NULL unless it
 * is http(s). Its "scheme://host[:port]" goes to origin. Free with free. */
static char *resolve(const char *base, const char *href, char origin[ORIGIN_MAX]) {
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL, *port = NULL, *s = NULL, *url = NULL;
  if (u && (!base || !curl_url_set(u, CURLUPART_URL, base, 0)) &&
      !curl_url_set(u, CURLUPART_URL, href, 0) && !curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) &&
      !curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) && !curl_url_get(u, CURLUPART_HOST, &host, 0) &&
      (!strcmp(scheme, "http") || !strcmp(scheme, "https"))) { /* curl lower-cases the scheme */
    for (char *p = host; *p; p++) *p = (char)tolower((unsigned char)*p);
    curl_url_get(u, CURLUPART_PORT, &port, CURLU_NO_DEFAULT_PORT); /* none if :80 for http */
    int n = snprintf(origin, ORIGIN_MAX, "%s://%s%s%s", scheme, host, port ? ":" : "", port ? port : "");
    if (n < ORIGIN_MAX && !curl_url_set(u, CURLUPART_HOST, host, 0) &&
        !curl_url_get(u, CURLUPART_URL, &s, CURLU_NO_DEFAULT_PORT))
      url = strdup(s);
  }
  curl_free(scheme), curl_free(host), curl_free(port), curl_free(s);
  curl_url_cleanup(u);
  return url;
}

/* A link on a page whose links resolve against base: queue it for the next
 * level if it is new and of the crawl's origin. */
static void add_link(const char *base, char *href) {
  char origin[ORIGIN_MAX];
  href = clean(href);
  if (!*href || *href == '#') return; /* this page (curl 7.88 mis-resolves "#x") */
  char *url = resolve(base, href, origin);
  if (url && !strcmp(origin, C.origin) && visit(url) && push(&C.next, url) == 0) return;
  free(url);
}

/* A <title>'s text with each whitespace run made one space, into title. */
static void get_title(const GumboElement *e, char *title, size_t cap) {
  const GumboNode *t = e->children.data[0];
  size_t len = 0;
  for (const char *p = t->type == GUMBO_NODE_TEXT ? t->v.text.text : ""; *p && len + 1 < cap; p++) {
    if (!strchr(" \t\n\r\f", *p)) title[len++] = *p;
    else if (len && title[len - 1] != ' ') title[len++] = ' ';
  }
  while (len && title[len - 1] == ' ') len--;
  title[len] = '\0';
}

/* The parse job, asyncio's to_thread idea: it is CPU work, so it runs on a
 * pool thread and the loop keeps serving the other transfers meanwhile.
 * That thread also has a big stack: gumbo_destroy_output recurses once per
 * level of nesting, which 8,000 nested <div>s would make overflow a task's
 * 256 KiB. Our own walk keeps an explicit stack, so depth costs only heap.
 * The job sees nothing but its page: the crawl's state is the loop's. */
static int parse(void *arg, void **value) {
  page_t *pg = arg;
  (void)value;
  GumboOutput *doc = gumbo_parse_with_options(&kGumboDefaultOptions, pg->html, pg->len);
  list_t todo = {0}; /* nodes still to visit, the next one last */
  int rc = push(&todo, doc->root);
  while (rc == 0 && todo.n > 0) {
    const GumboNode *n = todo.item[--todo.n];
    if (n->type != GUMBO_NODE_ELEMENT) continue;
    const GumboElement *e = &n->v.element;
    const GumboAttribute *href = gumbo_get_attribute(&e->attributes, "href");
    char *copy = NULL;
    if (e->tag == GUMBO_TAG_TITLE && !pg->title[0] && e->children.length > 0)
      get_title(e, pg->title, sizeof pg->title);
    else if (e->tag == GUMBO_TAG_BASE && href && !pg->base && !(pg->base = strdup(href->value)))
      rc = UV_ENOMEM; /* the first <base href> counts */
    else if (e->tag == GUMBO_TAG_A && href && pg->follow)
      rc = (copy = strdup(href->value)) ? push(&pg->links, copy) : UV_ENOMEM;
    if (rc < 0) free(copy);
    for (unsigned i = e->children.length; rc == 0 && i-- > 0;) /* first child on top */
      rc = push(&todo, e->children.data[i]);
  }
  free(todo.item); /* the nodes belong to doc */
  gumbo_destroy_output(&kGumboDefaultOptions, doc);
  return rc;
}

/* Run parse(pg) on the pool. pg (and the body it reads) is borrowed until
 * the await returns, which is once the job has returned even when we are
 * cancelled meanwhile: a job that has started cannot be stopped. A cancel
 * that came while it ran still stops the crawl. */
static int parse_on_thread(page_t *pg) {
  int rc = uva_await(uva_to_thread(NULL, parse, pg, NULL), NULL);
  return rc == 0 && uva_cancelling() > 0 ? UV_ECANCELED : rc;
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

/* GET url (ours, seen), following its redirects ourselves: curl would
 * follow them anywhere. A hop to a page of the origin not seen yet is
 * fetched in this task (same depth); one that leaves the origin (except
 * from the start URL: its final origin becomes the crawl's) or leads to a
 * page already seen ends here: the 3xx is the answer. *url: the final URL. */
static int get(char **url, int start, uva_http_response_t **out) {
  for (int hops = 0;; hops++) {
    void *v = NULL;
    int rc = wait_turn();
    uva_http_request_t rq = {.url = *url, .follow_redirects = UVA_HTTP_NO_FOLLOW};
    if (rc == 0) rc = uva_await(uva_http_request(C.client, &rq), &v);
    if ((*out = v) == NULL) return rc;
    C.bytes += (*out)->body_len;
    const char *loc = uva_http_response_header(*out, "Location");
    if ((*out)->status / 100 != 3 || !loc || hops == MAX_HOPS) return 0;
    char origin[ORIGIN_MAX], *to = resolve(*url, loc, origin);
    if (to && start) memcpy(C.origin, origin, sizeof origin);
    if (!to || strcmp(origin, C.origin) || !visit(to)) {
      free(to);
      return 0;
    }
    uva_http_response_free(*out);
    free(*url), *url = to;
  }
}

/* One URL: fetch it, print its line, queue its links. Returns 0, 1 (HTTP
 * error status) or a negative error. A fetch cancelled by Ctrl-C is not a
 * page: it prints nothing and counts nothing. */
static int fetch(void *arg) {
  job_t *j = arg;
  uva_http_response_t *r = NULL;
  int rc = uva_await(uva_sem_acquire(C.sem), NULL);
  if (rc < 0) return rc;
  rc = get(&j->url, j->depth == 0, &r);
  uva_sem_release(C.sem);
  if (rc == UV_ECANCELED) return rc;
  if (rc < 0) {
    C.pages++, C.errors++;
    printf("0\t%s\t(%s)\n", j->url, uva_strerror(rc)); /* the title column says why */
    return rc;
  }
  page_t pg = {.html = r->body, .len = r->body_len, .follow = j->depth < C.depth};
  const char *type = uva_http_response_header(r, "Content-Type");
  if (r->status / 100 != 3 && type && strncasecmp(type, "text/html", 9) == 0 &&
      parse_on_thread(&pg) == UV_ECANCELED) {
    rc = UV_ECANCELED;
  } else {
    C.pages++, C.errors += r->status >= 400;
    printf("%d\t%s\t%s\n", r->status, j->url, pg.title);
    /* <base href> resolves against the page's URL; links against it */
    char origin[ORIGIN_MAX], *base = pg.base ? resolve(j->url, clean(pg.base), origin) : NULL;
    for (size_t i = 0; i < pg.links.n; i++) add_link(base ? base : j->url, pg.links.item[i]);
    free(base);
    rc = r->status >= 400;
  }
  free(pg.base), drop(&pg.links);
  uva_http_response_free(r);
  return rc;
}

static int crawl(void *arg) {
  list_t level = {0};
  uva_http_client_opts_t o = {.user_agent = "uvasync-crawler/0.1", .timeout_ms = 15000,
                              .connect_timeout_ms = 5000, .max_body = 10 << 20};
  int rc = uva_http_client_new(&C.client, &o);
  if (rc < 0 || !(C.sem = uva_sem_new((unsigned)C.concurrency, 0)) || push(&level, arg) < 0) {
    fprintf(stderr, "crawler: %s\n", uva_strerror(rc < 0 ? rc : UV_ENOMEM));
    uva_http_client_free(C.client), uva_sem_free(C.sem), free(arg);
    return 1;
  }
  visit(arg);
  int start_failed = 0;
  for (int depth = 0; depth <= C.depth && level.n > 0 && rc >= 0; depth++) {
    job_t *jobs = calloc(level.n, sizeof *jobs);
    uva_future_t **fs = calloc(level.n, sizeof *fs);
    for (size_t i = 0; jobs && fs && i < level.n; i++) {
      jobs[i] = (job_t){level.item[i], depth};
      fs[i] = uva_spawn(fetch, &jobs[i]);
    }
    void *res = NULL; /* every task ends before the gather does */
    rc = jobs && fs ? uva_await(uva_gather(fs, level.n, UVA_RETURN_EXCEPTIONS), &res) : UV_ENOMEM;
    if (depth == 0) start_failed = rc < 0 || ((uva_results_t *)res)->item[0].status != 0;
    uva_results_free(res);
    for (size_t i = 0; jobs && i < level.n; i++) /* redirects moved the URLs */
      if (jobs[i].url) level.item[i] = jobs[i].url;
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
  char *url = ok && start ? resolve(NULL, start, C.origin) : NULL;
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
  return rc == 0 ? 0 : 1;
}
