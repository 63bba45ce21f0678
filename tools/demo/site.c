/* The demo's generated web site: see site.h for the link structure. */
#include "site.h"

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

/* What serve needs of a request head. */
typedef struct head {
  int version;            /* 10 or 11 (HTTP/1.x, x >= 1) */
  int head_only;          /* HEAD */
  int close, keep_alive;  /* Connection tokens seen */
  int has_length, chunked;
  unsigned long long length;
  char path[1024];        /* the request target */
} head_t;

static uint64_t deadline_in(int ms) { return ms < 0 ? UINT64_MAX : uva_now() + (uint64_t)ms; }

/* Await f, but no later than deadline (then UV_ETIMEDOUT, f cancelled). */
static int await_until(uva_future_t *f, uint64_t deadline, void **out) {
  if (deadline == UINT64_MAX) return uva_await(f, out);
  uint64_t now = uva_now();
  return uva_await(uva_wait_for(f, now >= deadline ? 0 : (int64_t)(deadline - now)), out);
}

static int is_blank(char c) { return c == ' ' || c == '\t'; }

/* RFC 9110 5.6.2: token = 1*tchar. */
static int is_token(const char *p, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          (c && strchr("!#$%&'*+-.^_`|~", c))))
      return 0;
  }
  return 1;
}

/* METHOD SP TARGET SP HTTP/D.D. Returns 0 or the status to refuse with. */
static int parse_request_line(char *line, head_t *h) {
  char *sp1 = strchr(line, ' ');
  char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
  if (!sp2 || strchr(sp2 + 1, ' ') || !is_token(line, (size_t)(sp1 - line)) || sp2 == sp1 + 1)
    return 400;
  const char *v = sp2 + 1;
  if (strncmp(v, "HTTP/", 5) || v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' ||
      v[7] > '9' || v[8])
    return 400;
  if (v[5] != '1') return 505;
  h->version = v[7] == '0' ? 10 : 11;
  h->head_only = sp1 - line == 4 && strncmp(line, "HEAD", 4) == 0;
  size_t tlen = (size_t)(sp2 - sp1 - 1);
  if (tlen >= sizeof h->path) return 414;
  memcpy(h->path, sp1 + 1, tlen);
  h->path[tlen] = '\0';
  return strchr(h->path, '\t') ? 400 : 0;
}

/* Name: value. Only Connection, Content-Length and Transfer-Encoding
 * matter here. Returns 0 or the status to refuse with. */
static int parse_field(char *line, head_t *h) {
  char *colon = strchr(line, ':');
  /* a name is a token: no blank before the colon (RFC 9112 5.1) */
  if (!colon || !is_token(line, (size_t)(colon - line))) return 400;
  *colon = '\0';
  const char *v = colon + 1;
  if (!strcasecmp(line, "Connection")) {
    /* a comma-separated list of tokens */
    while (*v) {
      while (is_blank(*v) || *v == ',') v++;
      size_t n = strcspn(v, ","), m = n;
      while (m && is_blank(v[m - 1])) m--;
      if (m == 5 && !strncasecmp(v, "close", 5)) h->close = 1;
      if (m == 10 && !strncasecmp(v, "keep-alive", 10)) h->keep_alive = 1;
      v += n;
    }
  } else if (!strcasecmp(line, "Content-Length")) {
    /* digits only; repeated (as fields or "5, 5"), the values must agree */
    for (;;) {
      while (is_blank(*v)) v++;
      if (*v < '0' || *v > '9') return 400;
      unsigned long long n = 0;
      for (; *v >= '0' && *v <= '9'; v++) /* saturating: too large anyway */
        n = n > (ULLONG_MAX - 9) / 10 ? ULLONG_MAX : n * 10 + (unsigned)(*v - '0');
      if (h->has_length && n != h->length) return 400;
      h->has_length = 1;
      h->length = n;
      while (is_blank(*v)) v++;
      if (!*v) break;
      if (*v++ != ',') return 400;
    }
  } else if (!strcasecmp(line, "Transfer-Encoding")) {
    h->chunked = 1; /* whatever the coding: request bodies are not expected */
  }
  return 0;
}

/* Read a request head, line by line (LF or CRLF line ends; empty lines
 * before the request line skipped), within SITE_HEAD_MAX bytes and before
 * the head timeout. Returns 0, an HTTP status to refuse the request with,
 * or a negative error (close without an answer). */
static int read_head(site_t *s, uva_stream_t *conn, head_t *h) {
  uint64_t deadline = deadline_in(s->o.head_timeout_ms);
  size_t used = 0;
  int lines = 0;
  for (;;) {
    if (used >= SITE_HEAD_MAX) return 431;
    void *v = NULL;
    int rc = await_until(uva_stream_read_until(conn, "\n", 1, SITE_HEAD_MAX - used), deadline, &v);
    if (rc == UVA_ELIMIT) return 431;
    if (rc == UV_ETIMEDOUT) {
      s->st.timeouts++;
      /* part of a request came: say why; an idle connection just ends */
      return used || uva_stream_buffered(conn) ? 408 : rc;
    }
    if (rc < 0) return rc;
    uva_bytes_t *b = v;
    used += b->len;
    size_t n = b->len - 1; /* the LF */
    if (n && b->data[n - 1] == '\r') n--;
    b->data[n] = '\0';
    int status = 0;
    for (size_t i = 0; i < n; i++) { /* control characters (a lone CR, NUL...) */
      unsigned char c = (unsigned char)b->data[i];
      if ((c < 0x20 && c != '\t') || c == 0x7f) status = 400;
    }
    if (status == 0 && n > 0)
      status = lines++ == 0 ? parse_request_line(b->data, h) : parse_field(b->data, h);
    uva_free(b);
    if (status) return status;
    if (n == 0 && lines > 0) return 0;
  }
}

/* Read and drop n body bytes, each read under the head timeout (idle). */
static int skip_body(site_t *s, uva_stream_t *conn, unsigned long long n) {
  char scratch[4096];
  while (n > 0) {
    size_t want = n < sizeof scratch ? (size_t)n : sizeof scratch;
    uint64_t deadline = deadline_in(s->o.head_timeout_ms);
    int rc = await_until(uva_stream_read(conn, scratch, want), deadline, NULL);
    if (rc < 0) return rc;
    n -= (unsigned long long)rc;
  }
  return 0;
}

/* Before closing a connection whose client may still be sending: half
 * close after the answer, then read and drop what still comes, for a while
 * and up to a limit. Closing with unread data would reset the connection,
 * and a reset can destroy the answer before the client has read it. */
static void linger(site_t *s, uva_stream_t *conn) {
  if (uva_await(uva_stream_shutdown(conn), NULL) < 0) return;
  int ms = s->o.head_timeout_ms;
  uint64_t deadline = deadline_in(ms < 0 || ms > 2000 ? 2000 : ms);
  char scratch[4096];
  for (size_t total = 0; total < SITE_BODY_MAX;) {
    int rc = await_until(uva_stream_read(conn, scratch, sizeof scratch), deadline, NULL);
    if (rc <= 0) return;
    total += (size_t)rc;
  }
}

/* Answer a refused request with status, then close (after linger). */
static void refuse(site_t *s, uva_stream_t *conn, int status, int head_only) {
  const char *reason;
  switch (status) {
  case 400: reason = "Bad Request"; break;
  case 408: reason = "Request Timeout"; break;
  case 413: reason = "Content Too Large"; break;
  case 414: reason = "URI Too Long"; break;
  case 431: reason = "Request Header Fields Too Large"; break;
  case 501: reason = "Not Implemented"; break;
  default: status = 505, reason = "HTTP Version Not Supported";
  }
  s->st.refused++;
  char msg[320];
  int n = snprintf(msg, sizeof msg,
                   "HTTP/1.1 %d %s\r\nServer: uvasync-demo-site\r\nContent-Type: text/plain\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n%s%s",
                   status, reason, strlen(reason) + 1, head_only ? "" : reason, head_only ? "" : "\n");
  if (uva_await(uva_stream_write(conn, msg, (size_t)n), NULL) == 0) linger(s, conn);
}

static int serve(uva_stream_t *conn, void *arg) {
  site_t *s = arg;
  s->active++;
  s->st.connections++;
  for (;;) {
    head_t h = {0};
    int rc = read_head(s, conn, &h);
    if (rc == 0 && h.chunked) rc = 501; /* request bodies are not expected */
    else if (rc == 0 && h.length > SITE_BODY_MAX) rc = 413;
    if (rc > 0) {
      refuse(s, conn, rc, h.head_only);
      break;
    }
    if (rc < 0) break; /* the client left, cancelled, idle */
    int close_after = h.close || (h.version == 10 && !h.keep_alive);
    log_request(s, h.path);
    if (++s->st.in_flight > s->st.max_in_flight) s->st.max_in_flight = s->st.in_flight;
    buf_t out = {0};
    rc = skip_body(s, conn, h.length);
    if (rc == 0) rc = uva_await(uva_sleep(delay_for(s, h.path)), NULL);
    const char *connection = close_after       ? "Connection: close\r\n"
                             : h.version == 10 ? "Connection: keep-alive\r\n"
                                               : "";
    if (rc == 0) rc = respond(s, h.path, h.head_only, connection, &out);
    if (rc == 0) rc = uva_await(uva_stream_write(conn, out.p, out.len), NULL);
    s->st.in_flight--;
    free(out.p);
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
