/* The demo's generated web site: see site.h for the link structure. */
#include "site.h"

#include "http1.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uvasync.h>

/* Requests: the largest head (request line, fields, line ends; empty
 * lines before the request line count too) and the largest body dropped
 * (bodies are not expected; larger ones get 413). */
#define SITE_HEAD_MAX 16384
#define SITE_BODY_MAX (1 << 20)
#define SITE_HEAD_TIMEOUT_MS 10000

struct site {
  uva_server_t *srv;
  site_opts_t o;       /* head_timeout_ms resolved: < 0 none */
  site_stats_t st;
  site_request_t *log;
  size_t nlog, caplog;
  long active;         /* connection tasks running (site_stop waits) */
  int together;        /* site_hold_together: requests still to come */
  long together_round; /* rounds of site_hold_together let go */
};

/* ------------------------------------------------------ link structure */

int site_page_depth(int page) {
  int d = 0;
  for (long first = 1, width = 3; page >= first; first += width, width *= 3) d++;
  return d;
}

char *site_page_path(int page, char *buf, size_t len) {
  if (page == 0) snprintf(buf, len, "/");
  else snprintf(buf, len, "/page/%d.html", page);
  return buf;
}

char *site_resource_path(int page, char *buf, size_t len) {
  if (page % 4 != 0) return NULL;
  if (page % 8 == 0) snprintf(buf, len, "/files/%d.txt", page);
  else snprintf(buf, len, "/img/%d.png", page);
  return buf;
}

int site_page_redirected(int page) { return page > 0 && page % 12 == 5; }

long site_expected(int pages, int depth) {
  long n = 0;
  for (int p = 0; p < pages; p++) {
    int d = site_page_depth(p);
    n += d <= depth;
    n += p % 4 == 0 && d + 1 <= depth;
  }
  return n;
}

/* --------------------------------------------------------------- buffers */

typedef struct buf {
  char *p;
  size_t len, cap;
} buf_t;

static int bprintf(buf_t *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if (b->p && b->len + (size_t)n < b->cap) {
      b->len += (size_t)n;
      return 0;
    }
    size_t cap = b->cap ? b->cap * 2 : 1024;
    while (cap <= b->len + (size_t)n) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
  }
}

static int bappend(buf_t *b, const void *data, size_t len) {
  if (b->len + len + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + len + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, len);
  b->len += len;
  b->p[b->len] = '\0';
  return 0;
}

/* ---------------------------------------------------------------- pages */

/* The href of child c as written on page `from` (see site.h). */
static void child_href(const site_t *s, int from, int c, char *h, size_t len) {
  const char *dir = from == 0 ? "page/" : ""; /* relative forms from "/" */
  switch (c % 6) {
  case 0: snprintf(h, len, "%s%d.html", dir, c); break;
  case 1: snprintf(h, len, "/page/%d.html", c); break;
  case 2: snprintf(h, len, "http://127.0.0.1:%d/page/%d.html", site_port(s), c); break;
  case 3: snprintf(h, len, "./%s%d.html#top", dir, c); break;
  case 4: snprintf(h, len, "../page/%d.html", c); break;
  default:
    if (c % 12 == 5) snprintf(h, len, "/go/%d", c);
    else snprintf(h, len, "HTTP://127.0.0.1:%d/page/./%d.html", site_port(s), c);
  }
}

static int page_html(const site_t *s, int p, buf_t *b) {
  int port = site_port(s), P = s->o.pages, rc = 0;
  char h[160];
  rc |= bprintf(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                   "<title>Page %d of %d\n\tuvasync crawl site</title>\n</head>\n<body>\n"
                   "<a id=\"top\"></a>\n<h1>Page %d</h1>\n"
                   "<p>A generated page, %d link%s from the home page. It was answered after a "
                   "delay, as a real web server far away would be.</p>\n<nav id=\"nav\">\n<ul>\n",
                p, P, p, site_page_depth(p), site_page_depth(p) == 1 ? "" : "s");
  if (p == 0 || p % 3 == 0) snprintf(h, sizeof h, "/");
  else if (p % 3 == 1) snprintf(h, sizeof h, "../");
  else snprintf(h, sizeof h, "http://127.0.0.1:%d/#top", port);
  rc |= bprintf(b, "<li><a href=\"%s\">Home</a></li>\n", h);
  if (p > 0) {
    int q = (p - 1) / 3;
    if (q == 0) snprintf(h, sizeof h, "../#nav");
    else if (p % 2) snprintf(h, sizeof h, "%d.html", q);
    else snprintf(h, sizeof h, "../page/%d.html#top", q);
    rc |= bprintf(b, "<li><a href=\"%s\">Up</a></li>\n", h);
  }
  rc |= bprintf(b, "<li><a href=\"#top\">This page</a></li>\n</ul>\n</nav>\n<h2>Further</h2>\n<ul>\n");
  int first = 1;
  for (int c = 3 * p + 1; c <= 3 * p + 3 && c < P; c++) {
    child_href(s, p, c, h, sizeof h);
    rc |= bprintf(b, "<li><a class=\"child\" href=\"%s\">Page %d</a></li>\n", h, c);
    if (first) {
      first = 0;
      /* the same page once more, with another fragment */
      if (!strchr(h, '#')) rc |= bprintf(b, "<li><a href=\"%s#comments\">Comments on page %d</a></li>\n", h, c);
      else rc |= bprintf(b, "<li><a href=\"%.*s#comments\">Comments on page %d</a></li>\n",
                         (int)(strchr(h, '#') - h), h, c);
    }
  }
  rc |= bprintf(b, "</ul>\n");
  char res[64];
  if (site_resource_path(p, res, sizeof res)) {
    /* "files/0.txt" from "/", "/files/p.txt", "../img/p.png" */
    const char *href = p == 0 ? res + 1 : res;
    if (p != 0 && p % 8 != 0) {
      snprintf(h, sizeof h, "..%s", res);
      href = h;
    }
    rc |= bprintf(b, "<p>Attached: <a href=\"%s\">%s</a></p>\n", href, res);
  }
  rc |= bprintf(b, "<footer>\n<a href=\"http://example.invalid/\">Another site</a> |\n"
                   "<a href=\"mailto:webmaster@example.invalid\">Write to us</a> |\n"
                   "<a href=\"http://localhost:%d/page/%d.html\">This page on localhost</a> |\n"
                   "<a href=\"http://127.0.0.1:1/\">Another port</a>\n</footer>\n</body>\n</html>\n",
                port, p);
  return rc;
}

/* -------------------------------------------------------------- serving */

static uint64_t delay_for(const site_t *s, const char *path) {
  uint32_t h = 2166136261u ^ s->o.seed;
  for (const char *c = path; *c; c++) h = (h ^ (unsigned char)*c) * 16777619u;
  h ^= h >> 15;
  h *= 0x2c1b3c6du;
  h ^= h >> 12;
  unsigned span = (unsigned)(s->o.max_delay_ms - s->o.min_delay_ms) + 1;
  return (uint64_t)s->o.min_delay_ms + h % span;
}

/* Parse "/page/N.html"-like paths: N if path is prefix N suffix exactly. */
static int number_in(const char *path, const char *prefix, const char *suffix) {
  size_t pl = strlen(prefix), sl = strlen(suffix), len = strlen(path);
  if (len <= pl + sl || strncmp(path, prefix, pl) || strcmp(path + len - sl, suffix)) return -1;
  int n = 0;
  for (size_t i = pl; i < len - sl; i++) {
    if (path[i] < '0' || path[i] > '9' || n > 100000000 || (i == pl && path[i] == '0' && i + 1 < len - sl))
      return -1;
    n = n * 10 + (path[i] - '0');
  }
  return n;
}

/* text with &, <, >, " and ' escaped, for HTML text and attributes. */
static int html_escaped(buf_t *b, const char *text) {
  int rc = 0;
  for (const char *c = text; *c && rc == 0; c++) {
    switch (*c) {
    case '&': rc = bappend(b, "&amp;", 5); break;
    case '<': rc = bappend(b, "&lt;", 4); break;
    case '>': rc = bappend(b, "&gt;", 4); break;
    case '"': rc = bappend(b, "&quot;", 6); break;
    case '\'': rc = bappend(b, "&#39;", 5); break;
    default: rc = bappend(b, c, 1);
    }
  }
  return rc;
}

enum { BROKEN = -2 };

/* Build the response for path into out. conn: a "Connection: ...\r\n"
 * line or "". Returns 0, BROKEN or -1 (ENOMEM). */
static int respond(site_t *s, const char *path, int head_only, const char *conn, buf_t *out) {
  buf_t body = {0};
  const char *status = "200 OK", *type = "text/html; charset=utf-8";
  char extra[160] = "", res[64];
  int p, rc = 0;
  if (strcmp(path, "/") == 0) p = 0;
  else if ((p = number_in(path, "/page/", ".html")) < 1) p = -1;
  if (p >= 0 && p < s->o.pages) {
    if (p == s->o.broken_page && p > 0) return BROKEN;
    rc = page_html(s, p, &body);
    s->st.pages++;
  } else if ((p = number_in(path, "/go/", "")) > 0 && p < s->o.pages) {
    status = "302 Found";
    snprintf(extra, sizeof extra, "Location: /page/%d.html\r\n", p);
    rc = bprintf(&body, "<p>Moved to <a href=\"/page/%d.html\">page %d</a></p>\n", p, p);
    s->st.redirects++;
  } else if ((p = number_in(path, "/files/", ".txt")) >= 0 && p < s->o.pages &&
             site_resource_path(p, res, sizeof res) && strcmp(res, path) == 0) {
    type = "text/plain; charset=utf-8";
    rc = bprintf(&body, "Notes for page %d. Not HTML, even if it looks like it:\n"
                        "<a href=\"/secret/%d.html\">a link nobody should follow</a>\n", p, p);
    s->st.files++;
  } else if ((p = number_in(path, "/img/", ".png")) >= 0 && p < s->o.pages &&
             site_resource_path(p, res, sizeof res) && strcmp(res, path) == 0) {
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 0,
                                        'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
    type = "image/png";
    rc = bappend(&body, png, sizeof png);
    rc |= bprintf(&body, "<a href=\"/secret/%d.html\">", p);
    s->st.files++;
  } else {
    status = "404 Not Found";
    rc = bprintf(&body, "<!DOCTYPE html>\n<title>Not found</title>\n<p>No ");
    rc |= html_escaped(&body, path); /* the path is the client's: no markup from it */
    rc |= bprintf(&body, " here.</p>\n");
    s->st.not_found++;
  }
  rc |= bprintf(out, "HTTP/1.1 %s\r\nServer: uvasync-demo-site\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n%s%s\r\n", status, type, body.len, conn, extra);
  if (!head_only && body.len) rc |= bappend(out, body.p, body.len);
  free(body.p);
  return rc ? -1 : 0;
}

static void log_request(site_t *s, const char *path) {
  s->st.requests++;
  if (s->nlog == s->caplog) {
    size_t cap = s->caplog ? s->caplog * 2 : 64;
    site_request_t *l = realloc(s->log, cap * sizeof *l);
    if (!l) return;
    s->log = l;
    s->caplog = cap;
  }
  site_request_t *r = &s->log[s->nlog++];
  size_t len = strnlen(path, sizeof r->path - 1); /* truncated */
  memcpy(r->path, path, len);
  r->path[len] = '\0';
  r->t_ns = uv_hrtime();
}

/* ------------------------------------------------------------ requests */

/* Content-Length is judged as each field comes (a bad one refuses the
 * request at once); the rest once the head is complete. */
typedef struct lengths {
  bool has;
  unsigned long long n;
} lengths_t;

static int on_field(void *arg, const char *name, const char *value) {
  lengths_t *l = arg;
  return strcasecmp(name, "Content-Length") ? 0 : http1_length_value(value, &l->has, &l->n);
}

/* Read a request head (http1_read_head: every bad line refused at once),
 * within SITE_HEAD_MAX bytes and before the head timeout. Returns 0, an
 * HTTP status to refuse the request with, or a negative error (close
 * without an answer). */
static int read_head(site_t *s, uva_stream_t *conn, http1_head_t *h, lengths_t *len) {
  const http1_opts_t o = {.head_max = SITE_HEAD_MAX,
                          .target_max = 1024,
                          .timeout_ms = s->o.head_timeout_ms,
                          .eager = true,
                          .on_field = on_field,
                          .arg = len};
  int rc = http1_read_head(conn, h, &o);
  if (h->timed_out) s->st.timeouts++;
  return rc;
}

/* Read and drop n body bytes, each read under the head timeout (idle). */
static int skip_body(site_t *s, uva_stream_t *conn, unsigned long long n) {
  char scratch[4096];
  while (n > 0) {
    size_t want = n < sizeof scratch ? (size_t)n : sizeof scratch;
    uint64_t deadline = http1_deadline_in(s->o.head_timeout_ms);
    int rc = http1_await_until(uva_stream_read(conn, scratch, want), deadline, NULL);
    if (rc < 0) return rc;
    n -= (unsigned long long)rc;
  }
  return 0;
}

/* site_hold_together: wait for the round's last request (which lets the
 * round go). A cancel (site_stop) ends the wait. */
static int hold_together(site_t *s) {
  long round = s->together_round;
  if (--s->together == 0) {
    s->together_round++;
    return 0;
  }
  while (s->together_round == round) {
    int rc = uva_await(uva_sleep(1), NULL);
    if (rc < 0) return rc;
  }
  return 0;
}

static int serve(uva_stream_t *conn, void *arg) {
  site_t *s = arg;
  s->active++;
  s->st.connections++;
  for (;;) {
    http1_head_t h = {0};
    lengths_t len = {0};
    int rc = read_head(s, conn, &h, &len);
    int head_only = h.version && strcmp(h.method, "HEAD") == 0;
    /* request bodies are not expected: chunked ones are not read */
    if (rc == 0 && http1_field(&h, "Transfer-Encoding")) rc = 501;
    else if (rc == 0 && len.n > SITE_BODY_MAX) rc = 413;
    if (rc > 0) {
      s->st.refused++;
      char body[64];
      snprintf(body, sizeof body, "%s\n", http1_reason(rc));
      http1_refuse(conn, rc, "Server: uvasync-demo-site\r\nContent-Type: text/plain\r\n", body,
                   head_only, s->o.head_timeout_ms);
    }
    if (rc != 0) {
      http1_head_free(&h);
      break; /* refused, or the client left, cancelled, idle */
    }
    int close_after = http1_has_token(&h, "Connection", "close") ||
                      (h.version == 10 && !http1_has_token(&h, "Connection", "keep-alive"));
    const char *path = h.target;
    log_request(s, path);
    if (++s->st.in_flight > s->st.max_in_flight) s->st.max_in_flight = s->st.in_flight;
    buf_t out = {0};
    rc = skip_body(s, conn, len.n);
    if (rc == 0 && s->together > 0 && strcmp(path, "/") != 0) rc = hold_together(s);
    if (rc == 0) rc = uva_await(uva_sleep(delay_for(s, path)), NULL);
    const char *connection = close_after       ? "Connection: close\r\n"
                             : h.version == 10 ? "Connection: keep-alive\r\n"
                                               : "";
    if (rc == 0) rc = respond(s, path, head_only, connection, &out);
    if (rc == 0) rc = uva_await(uva_stream_write(conn, out.p, out.len), NULL);
    s->st.in_flight--;
    free(out.p);
    http1_head_free(&h);
    if (rc < 0 || close_after) break; /* cancelled, broken, write error */
  }
  s->active--; /* the last touch of s: site_stop waits for it */
  return 0;    /* the library closes conn */
}

/* ------------------------------------------------------------------ API */

int site_start(site_t **out, const site_opts_t *opts) {
  static const site_opts_t defaults = SITE_OPTS_DEFAULT;
  if (!out) return UV_EINVAL;
  *out = NULL;
  if (!opts) opts = &defaults;
  if (opts->pages < 1 || opts->min_delay_ms < 0 || opts->max_delay_ms < opts->min_delay_ms)
    return UV_EINVAL;
  site_t *s = calloc(1, sizeof *s);
  if (!s) return UV_ENOMEM;
  s->o = *opts;
  if (s->o.head_timeout_ms == 0) s->o.head_timeout_ms = SITE_HEAD_TIMEOUT_MS;
  else if (s->o.head_timeout_ms < 0) s->o.head_timeout_ms = -1;
  int rc = uva_tcp_listen(&s->srv, "127.0.0.1", opts->port, 0, serve, s);
  if (rc < 0) {
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

int site_port(const site_t *s) { return uva_server_port(s->srv); }

const char *site_url(const site_t *s, const char *path) {
  static char bufs[8][256];
  static unsigned next;
  char *b = bufs[next++ % 8];
  snprintf(b, sizeof bufs[0], "http://127.0.0.1:%d%s", site_port(s), path);
  return b;
}

const site_stats_t *site_stats(const site_t *s) { return &s->st; }

const site_request_t *site_log(const site_t *s, size_t *n) {
  *n = s->nlog;
  return s->log;
}

void site_reset_stats(site_t *s) {
  long in_flight = s->st.in_flight;
  memset(&s->st, 0, sizeof s->st);
  s->st.in_flight = s->st.max_in_flight = in_flight;
  s->nlog = 0;
}

void site_hold_together(site_t *s, int n) { s->together = n > 0 ? n : 0; }

void site_stop(site_t *s) {
  if (!s) return;
  /* uva_server_close is NULL only when an allocation failed, and then
   * nothing was done: retry a while; rather leak than free what the
   * connections still use */
  uva_future_t *f;
  for (int i = 0; (f = uva_server_close(s->srv, 1)) == NULL; i++) {
    if (i == 1000) {
      fprintf(stderr, "site_stop: out of memory, the site is left running\n");
      return;
    }
    uva_await(uva_sleep(1), NULL);
  }
  uva_await(f, NULL);
  /* If the caller was cancelled during that await, the connection tasks
   * may still be ending, and they use s until the very end: wait for them
   * (they were cancelled, so they end soon). */
  while (s->active > 0) uva_await(uva_sleep(1), NULL);
  free(s->log);
  free(s);
}
