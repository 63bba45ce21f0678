/* The tests' HTTP/1.1 server (see httpd.h), on uvasync's own streams.
 *
 * One task per connection (uva_tcp_listen) serves requests in turn until
 * the client closes, asks for "Connection: close", a route closes on
 * purpose, or httpd_stop cancels it. Every buffer the server makes is
 * plain malloc, not the library's allocator: the tests count library
 * allocations and inject failures into them, and neither must be disturbed
 * (or satisfied) by the server's own memory. Every path out of a
 * connection, cancellation included, goes through conn_main's cleanup. */
#include "httpd.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADERS 64
#define MAX_BODY ((size_t)256 << 20)
#define STORED_MAX 65535 /* largest deflate stored block */
/* A multiple of 26: any slice starting at a multiple of 26 is the
 * pattern from there. */
#define PATTERN_LEN (26 * 2520)

struct httpd {
  uva_server_t *srv;
  int port;
  httpd_stats_t stats;
  unsigned char *gzip; /* the /gzip body, built once per server */
  size_t gzip_len;
  char *pattern;       /* PATTERN_LEN bytes of the /bytes pattern */
  httpd_hook_fn after_response;
  void *after_response_data;
};

/* ------------------------------------------------------------ buffers */

/* A growable byte string; an allocation failure is remembered and
 * reported once, by buf_ok, instead of after every append. */
typedef struct buf {
  char *p;
  size_t len, cap;
  bool oom;
} buf_t;

/* Room for n more bytes and a NUL. */
static int buf_reserve(buf_t *b, size_t n) {
  if (b->oom) return UV_ENOMEM;
  if (b->len + n + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap * 2 : 256;
  while (cap < b->len + n + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (p == NULL) {
    b->oom = true;
    return UV_ENOMEM;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

static void buf_add(buf_t *b, const void *data, size_t n) {
  if (buf_reserve(b, n) < 0) return;
  memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_printf(buf_t *b, const char *fmt, ...) {
  char tmp[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    b->oom = true; /* only header lines go through here: never that long */
    return;
  }
  buf_add(b, tmp, (size_t)n);
}

static int buf_ok(const buf_t *b) { return b->oom ? UV_ENOMEM : 0; }

static void buf_free(buf_t *b) {
  free(b->p);
  *b = (buf_t){0};
}

/* --------------------------------------------------------------- gzip */

/* Bitwise CRC-32 (gzip's, reflected 0xEDB88320): slow and table-free,
 * plenty for a 1 KiB test body. */
static uint32_t crc32_of(const unsigned char *p, size_t n) {
  uint32_t c = 0xffffffffu;
  while (n--) {
    c ^= *p++;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

static unsigned char *put_le32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) *p++ = (unsigned char)(v >> (8 * i));
  return p;
}

/* A gzip member (RFC 1952) whose deflate stream (RFC 1951) is only
 * stored blocks: valid gzip without zlib. */
static unsigned char *gzip_stored(const unsigned char *data, size_t n, size_t *out_len) {
  size_t blocks = n / STORED_MAX + 1;
  unsigned char *out = malloc(10 + blocks * 5 + n + 8);
  if (out == NULL) return NULL;
  static const unsigned char head[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
  unsigned char *p = out;
  memcpy(p, head, sizeof head);
  p += sizeof head;
  size_t off = 0;
  do {
    size_t m = n - off < STORED_MAX ? n - off : STORED_MAX;
    unsigned len = (unsigned)m, nlen = ~len & 0xffffu;
    *p++ = off + m == n; /* BFINAL; BTYPE 00 = stored; rest of byte padding */
    *p++ = (unsigned char)len;
    *p++ = (unsigned char)(len >> 8);
    *p++ = (unsigned char)nlen;
    *p++ = (unsigned char)(nlen >> 8);
    memcpy(p, data + off, m);
    p += m;
    off += m;
  } while (off < n);
  p = put_le32(p, crc32_of(data, n));
  p = put_le32(p, (uint32_t)n); /* ISIZE: length mod 2^32 */
  *out_len = (size_t)(p - out);
  return out;
}

static int gzip_build(httpd_t *h) {
  size_t line = strlen(HTTPD_GZIP_TEXT_LINE), n = line * HTTPD_GZIP_TEXT_REPEAT;
  unsigned char *text = malloc(n);
  if (text == NULL) return UV_ENOMEM;
  for (size_t i = 0; i < HTTPD_GZIP_TEXT_REPEAT; i++)
    memcpy(text + i * line, HTTPD_GZIP_TEXT_LINE, line);
  h->gzip = gzip_stored(text, n, &h->gzip_len);
  free(text);
  return h->gzip ? 0 : UV_ENOMEM;
}

/* ----------------------------------------------------------- requests */

typedef struct header {
  const char *name, *value;
} header_t;

typedef struct req {
  uva_bytes_t *head;   /* request line and headers, split in place */
  const char *method, *target, *version;
  char path[1024];     /* target without its query string */
  header_t hdr[MAX_HEADERS];
  size_t nhdr;
  buf_t body;
  bool head_only;      /* HEAD: the head of the answer, never its body */
} req_t;

typedef struct conn {
  httpd_t *h;
  uva_stream_t *s;
  req_t rq;
  bool close;          /* after this answer, close the connection */
} conn_t;

static void req_clear(req_t *rq) {
  uva_free(rq->head);
  buf_free(&rq->body);
  *rq = (req_t){0};
}

static const char *req_header(const req_t *rq, const char *name) {
  for (size_t i = 0; i < rq->nhdr; i++)
    if (strcasecmp(rq->hdr[i].name, name) == 0) return rq->hdr[i].value;
  return NULL;
}

static int put(conn_t *k, const void *p, size_t n) {
  return n ? uva_await(uva_stream_write(k->s, p, n), NULL) : 0;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
  return s;
}

/* Split the head (NUL-terminated, ends in CRLFCRLF) into the request line
 * and headers. Headers beyond MAX_HEADERS are dropped. */
static int parse_head(req_t *rq) {
  char *line = rq->head->data, *end, *save;
  bool first = true;
  while ((end = strstr(line, "\r\n")) != NULL && end != line) {
    *end = '\0';
    if (first) {
      rq->method = strtok_r(line, " ", &save);
      rq->target = strtok_r(NULL, " ", &save);
      rq->version = strtok_r(NULL, " ", &save);
      if (!rq->method || !rq->target || !rq->version || strtok_r(NULL, " ", &save))
        return UV_EINVAL;
      first = false;
    } else {
      char *colon = strchr(line, ':');
      if (colon == NULL) return UV_EINVAL;
      *colon = '\0';
      if (rq->nhdr < MAX_HEADERS) rq->hdr[rq->nhdr++] = (header_t){line, trim(colon + 1)};
    }
    line = end + 2;
  }
  if (first) return UV_EINVAL;
  size_t plen = strcspn(rq->target, "?");
  if (plen >= sizeof rq->path) return UV_EINVAL;
  memcpy(rq->path, rq->target, plen);
  rq->path[plen] = '\0';
  rq->head_only = strcmp(rq->method, "HEAD") == 0;
  return 0;
}

static bool wants_close(const req_t *rq) {
  const char *c = req_header(rq, "Connection");
  if (strcmp(rq->version, "HTTP/1.0") == 0) return !c || strcasecmp(c, "keep-alive") != 0;
  return c && strcasecmp(c, "close") == 0;
}

/* Read exactly n more body bytes onto rq->body. The read borrows the
 * buffer's tail until it is done; nothing else touches the buffer then. */
static int read_body_bytes(conn_t *k, size_t n) {
  buf_t *b = &k->rq.body;
  if (n == 0) return 0;
  if (b->len + n > MAX_BODY) return UV_E2BIG;
  if (buf_reserve(b, n) < 0) return UV_ENOMEM;
  int rc = uva_await(uva_stream_read_exactly(k->s, b->p + b->len, n), NULL);
  if (rc < 0) return rc;
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

static int read_line(conn_t *k, uva_bytes_t **out) {
  void *v = NULL;
  int rc = uva_await(uva_stream_read_until(k->s, "\r\n", 2, 4096), &v);
  *out = v;
  return rc < 0 ? rc : 0;
}

/* A chunked body: hex size lines, data, CRLF; then trailers up to an
 * empty line (ignored). */
static int read_chunked(conn_t *k) {
  for (;;) {
    uva_bytes_t *line;
    int rc = read_line(k, &line);
    if (rc < 0) return rc;
    char *end;
    unsigned long long n = strtoull(line->data, &end, 16);
    bool bad = end == line->data || n > MAX_BODY;
    uva_free(line);
    if (bad) return UV_EINVAL;
    if (n == 0) break;
    if ((rc = read_body_bytes(k, (size_t)n)) < 0) return rc;
    char crlf[2];
    if ((rc = uva_await(uva_stream_read_exactly(k->s, crlf, 2), NULL)) < 0) return rc;
    if (memcmp(crlf, "\r\n", 2) != 0) return UV_EINVAL;
  }
  for (;;) {
    uva_bytes_t *line;
    int rc = read_line(k, &line);
    if (rc < 0) return rc;
    bool last = line->len == 2;
    uva_free(line);
    if (last) return 0;
  }
}

/* curl holds back a large body after "Expect: 100-continue" until told to
 * go on (or a second passes): answer at once so tests stay fast. */
static int maybe_continue(conn_t *k) {
  const char *e = req_header(&k->rq, "Expect");
  if (e == NULL || strcasecmp(e, "100-continue") != 0) return 0;
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  k->h->stats.continues++;
  return put(k, cont, sizeof cont - 1);
}

static int read_body(conn_t *k) {
  const char *te = req_header(&k->rq, "Transfer-Encoding");
  const char *cl = req_header(&k->rq, "Content-Length");
  bool chunked = te && strcasecmp(te, "chunked") == 0;
  if (te && !chunked) return UV_EINVAL;
  size_t n = 0;
  if (!chunked && cl) {
    char *end;
    unsigned long long v = strtoull(cl, &end, 10);
    if (end == cl || *end != '\0' || cl[0] == '-') return UV_EINVAL;
    if (v > MAX_BODY) return UV_E2BIG;
    n = (size_t)v;
  }
  if (!chunked && n == 0) return 0;
  int rc = maybe_continue(k);
  if (rc < 0) return rc;
  return chunked ? read_chunked(k) : read_body_bytes(k, n);
}

static int read_request(conn_t *k) {
  void *v = NULL;
  int rc = uva_await(uva_stream_read_until(k->s, "\r\n\r\n", 4, 0), &v);
  if (rc < 0) return rc;
  k->rq.head = v;
  if ((rc = parse_head(&k->rq)) < 0) return rc;
  k->h->stats.requests++;
  k->close = wants_close(&k->rq);
  return read_body(k);
}

/* ---------------------------------------------------------- responses */

static const char *reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 413: return "Payload Too Large";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  default: return "Status";
  }
}

/* Status line and headers. clen < 0: no Content-Length (the caller's
 * extra headers say how the body ends). extra: whole "Name: v\r\n" lines. */
static int send_head(conn_t *k, int status, const char *extra, long long clen) {
  buf_t b = {0};
  buf_printf(&b, "HTTP/1.1 %d %s\r\n", status, reason(status));
  if (clen >= 0) buf_printf(&b, "Content-Length: %lld\r\n", clen);
  if (k->close) buf_add(&b, "Connection: close\r\n", 19);
  if (extra) buf_add(&b, extra, strlen(extra));
  buf_add(&b, "\r\n", 2);
  int rc = buf_ok(&b);
  if (rc == 0) rc = put(k, b.p, b.len);
  buf_free(&b);
  return rc;
}

static int respond(conn_t *k, int status, const char *extra, const void *body, size_t len) {
  int rc = send_head(k, status, extra, (long long)len);
  if (rc == 0 && !k->rq.head_only) rc = put(k, body, len);
  return rc;
}

static int respond_text(conn_t *k, int status, const char *extra, const char *text) {
  return respond(k, status, extra, text, strlen(text));
}

/* Wait ms, but notice meanwhile that the client hung up (a cancelled or
 * timed-out transfer) rather than at the next write, so the connection
 * ends at once and tests can see it go. The watch is a read for a
 * delimiter no client sends: it completes only on end of stream or an
 * error, and consumes nothing when cancelled. */
static int pause_watch(conn_t *k, uint64_t ms) {
  static const char never[] = "\x01\xfe" "httpd: never sent" "\xfe\x01";
  uva_future_t *watch = uva_stream_read_until(k->s, never, sizeof never - 1, 0);
  if (watch == NULL) return UV_ENOMEM;
  uint64_t t0 = uva_now();
  int rc = uva_await(uva_wait(&watch, 1, UVA_FIRST_COMPLETED, (int64_t)ms), NULL);
  int st = uva_future_status(watch);
  uva_cancel(watch);
  uva_release(watch);
  if (rc < 0) return rc;
  if (st == UVA_EPENDING) return 0;
  if (st != UVA_ELIMIT) return st < 0 ? st : UV_EINVAL;
  /* A pipelined request longer than the watch's limit: just sleep. */
  uint64_t spent = uva_now() - t0;
  return spent >= ms ? 0 : uva_await(uva_sleep(ms - spent), NULL);
}

/* Write n bytes of the /bytes pattern, starting at byte `from`. */
static int put_pattern(conn_t *k, size_t from, size_t n) {
  while (n > 0) {
    size_t off = from % 26, m = PATTERN_LEN - off;
    if (m > n) m = n;
    int rc = put(k, k->h->pattern + off, m);
    if (rc < 0) return rc;
    from += m;
    n -= m;
  }
  return 0;
}

/* ------------------------------------------------------------- routes */

/* Each route answers one request; a negative return closes the
 * connection. rest: what follows the route's prefix in the path. */
typedef int (*route_fn)(conn_t *k, const char *rest);

/* A decimal number that is all of s (and fits). */
static bool parse_num(const char *s, const char *stop, unsigned long long *out) {
  char *end;
  if (*s < '0' || *s > '9') return false;
  *out = strtoull(s, &end, 10);
  return *end == '\0' || (stop && strchr(stop, *end));
}

static int route_ok(conn_t *k, const char *rest) {
  (void)rest;
  /* blanks around the value: clients must trim them */
  return respond_text(k, 200, "Content-Type: text/plain\r\nX-Test:  yes \r\n", "hello");
}

static int route_not_found(conn_t *k, const char *rest) {
  (void)rest;
  return respond_text(k, 404, NULL, "not found");
}

static int route_status(conn_t *k, const char *rest) {
  unsigned long long n;
  if (!parse_num(rest, NULL, &n) || n < 200 || n > 999)
    return respond_text(k, 400, NULL, "bad status");
  /* these never have a body: sending one would corrupt the connection */
  if (n == 204 || n == 304) return respond(k, (int)n, NULL, NULL, 0);
  char body[32];
  snprintf(body, sizeof body, "status %llu", n);
  return respond_text(k, (int)n, NULL, body);
}

static int route_delay(conn_t *k, const char *rest) {
  unsigned long long ms;
  if (!parse_num(rest, NULL, &ms)) return route_not_found(k, rest);
  int rc = pause_watch(k, ms);
  if (rc < 0) {
    if (rc != UV_ECANCELED) k->h->stats.aborted++; /* not httpd_stop */
    return rc;
  }
  return respond_text(k, 200, NULL, "delayed");
}

static int route_redirect(conn_t *k, const char *rest) {
  unsigned long long n;
  if (!parse_num(rest, NULL, &n)) return route_not_found(k, rest);
  if (n == 0) return respond_text(k, 200, NULL, "done");
  char loc[64];
  snprintf(loc, sizeof loc, "Location: /redirect/%llu\r\n", n - 1);
  return respond_text(k, 302, loc, "redirecting");
}

static int route_loop(conn_t *k, const char *rest) {
  (void)rest;
  return respond_text(k, 302, "Location: /loop\r\n", "redirecting");
}

static int route_chunked(conn_t *k, const char *rest) {
  unsigned long long n;
  if (!parse_num(rest, NULL, &n)) return route_not_found(k, rest);
  int rc = send_head(k, 200, "Transfer-Encoding: chunked\r\n", -1);
  if (k->rq.head_only) return rc;
  for (unsigned long long i = 0; rc == 0 && i < n; i++) {
    char chunk[64], data[32];
    int len = snprintf(data, sizeof data, "chunk %llu\n", i);
    int clen = snprintf(chunk, sizeof chunk, "%x\r\n%s\r\n", (unsigned)len, data);
    rc = put(k, chunk, (size_t)clen);
  }
  return rc == 0 ? put(k, "0\r\n\r\n", 5) : rc;
}

static int route_bytes(conn_t *k, const char *rest) {
  unsigned long long n;
  if (!parse_num(rest, NULL, &n)) return route_not_found(k, rest);
  int rc = send_head(k, 200, "Content-Type: application/octet-stream\r\n", (long long)n);
  return rc == 0 && !k->rq.head_only ? put_pattern(k, 0, (size_t)n) : rc;
}

static int route_reset(conn_t *k, const char *rest) {
  (void)rest;
  int rc = send_head(k, 200, NULL, 100000);
  if (rc == 0 && !k->rq.head_only) rc = put_pattern(k, 0, 1000);
  return rc < 0 ? rc : UV_ECONNRESET; /* close: the body stays short */
}

static int route_drip(conn_t *k, const char *rest) {
  unsigned long long n, ms;
  const char *slash = strchr(rest, '/');
  if (!parse_num(rest, "/", &n) || slash == NULL || !parse_num(slash + 1, NULL, &ms))
    return route_not_found(k, rest);
  int rc = send_head(k, 200, NULL, (long long)n);
  if (k->rq.head_only) return rc;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    rc = pause_watch(k, ms);
    if (rc == 0) rc = put_pattern(k, i, 1);
  }
  /* a hang-up shows up in the pause or, racing it, as a failed write */
  if (rc < 0 && rc != UV_ECANCELED) k->h->stats.aborted++;
  return rc;
}

static int route_gzip(conn_t *k, const char *rest) {
  (void)rest;
  return respond(k, 200, "Content-Type: text/plain\r\nContent-Encoding: gzip\r\n", k->h->gzip,
                 k->h->gzip_len);
}

static int route_echo(conn_t *k, const char *rest) {
  (void)rest;
  buf_t extra = {0};
  buf_printf(&extra, "X-Echo-Method: %s\r\n", k->rq.method);
  for (size_t i = 0; i < k->rq.nhdr; i++) {
    buf_add(&extra, "X-Echo-", 7);
    buf_add(&extra, k->rq.hdr[i].name, strlen(k->rq.hdr[i].name));
    buf_add(&extra, ": ", 2);
    buf_add(&extra, k->rq.hdr[i].value, strlen(k->rq.hdr[i].value));
    buf_add(&extra, "\r\n", 2);
  }
  int rc = buf_ok(&extra);
  if (rc == 0) rc = respond(k, 200, extra.p, k->rq.body.p, k->rq.body.len);
  buf_free(&extra);
  return rc;
}

static int route_set_cookie(conn_t *k, const char *rest) {
  const char *slash = strchr(rest, '/');
  if (slash == NULL || slash == rest || strlen(rest) > 512) return route_not_found(k, rest);
  char line[600];
  snprintf(line, sizeof line, "Set-Cookie: %.*s=%s; Path=/\r\n", (int)(slash - rest), rest,
           slash + 1);
  return respond_text(k, 200, line, "ok");
}

static int route_close(conn_t *k, const char *rest) {
  (void)k;
  (void)rest;
  return UV_ECONNRESET;
}

static const struct route {
  const char *path; /* ending in '/': a prefix followed by arguments */
  route_fn fn;
} routes[] = {
    {"/ok", route_ok},           {"/status/", route_status},
    {"/delay/", route_delay},    {"/redirect/", route_redirect},
    {"/loop", route_loop},       {"/chunked/", route_chunked},
    {"/bytes/", route_bytes},    {"/reset", route_reset},
    {"/drip/", route_drip},      {"/gzip", route_gzip},
    {"/echo", route_echo},       {"/set-cookie/", route_set_cookie},
    {"/close", route_close},
};

static int dispatch(conn_t *k) {
  const char *path = k->rq.path;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    const char *r = routes[i].path;
    size_t n = strlen(r);
    bool prefix = r[n - 1] == '/';
    if (prefix ? strncmp(path, r, n) == 0 : strcmp(path, r) == 0)
      return routes[i].fn(k, path + (prefix ? n : 0));
  }
  return route_not_found(k, path);
}

/* --------------------------------------------------------- connections */

/* One request and its answer. Nonzero: stop serving this connection. */
static int serve_one(conn_t *k) {
  int rc = read_request(k);
  if (rc == UV_EINVAL || rc == UV_E2BIG) {
    k->close = true;
    respond_text(k, rc == UV_E2BIG ? 413 : 400, NULL, "bad request");
    return rc;
  }
  if (rc == 0) rc = dispatch(k);
  if (rc == 0 && k->h->after_response) k->h->after_response(k->h->after_response_data);
  if (rc == 0 && k->close) rc = UV_EOF;
  return rc;
}

static int conn_main(uva_stream_t *s, void *arg) {
  httpd_t *h = arg;
  h->stats.connections++;
  if (++h->stats.active > h->stats.max_active) h->stats.max_active = h->stats.active;
  conn_t k = {.h = h, .s = s};
  int rc;
  do {
    rc = serve_one(&k);
    req_clear(&k.rq);
  } while (rc == 0);
  h->stats.active--; /* last touch of h: httpd_stop waits for this */
  return 0;
}

/* ----------------------------------------------------------------- API */

int httpd_start(httpd_t **out, int port) {
  *out = NULL;
  httpd_t *h = calloc(1, sizeof *h);
  if (h == NULL) return UV_ENOMEM;
  int rc = gzip_build(h);
  if (rc == 0 && (h->pattern = malloc(PATTERN_LEN)) == NULL) rc = UV_ENOMEM;
  for (size_t i = 0; rc == 0 && i < PATTERN_LEN; i++) h->pattern[i] = httpd_pattern(i);
  if (rc == 0) rc = uva_tcp_listen(&h->srv, "127.0.0.1", port, 0, conn_main, h);
  if (rc < 0) {
    free(h->pattern);
    free(h->gzip);
    free(h);
    return rc;
  }
  h->port = uva_server_port(h->srv);
  *out = h;
  return 0;
}

int httpd_port(const httpd_t *h) { return h->port; }

const char *httpd_url(const httpd_t *h, const char *path) {
  static char buf[8][1100];
  static unsigned k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "http://127.0.0.1:%d%s", h->port, path);
  return buf[k];
}

const httpd_stats_t *httpd_stats(const httpd_t *h) { return &h->stats; }

void httpd_set_after_response(httpd_t *h, httpd_hook_fn fn, void *data) {
  h->after_response = fn;
  h->after_response_data = data;
}

void httpd_stop(httpd_t *h) {
  if (h == NULL) return;
  /* uva_server_close is NULL only when an allocation failed (a test that
   * left failure injection on): nothing was done, so retry. */
  uva_future_t *f;
  for (int i = 0; (f = uva_server_close(h->srv, 1)) == NULL; i++) {
    if (i == 1000) {
      fprintf(stderr, "httpd_stop: cannot allocate (failure injection left on?)\n");
      abort();
    }
    uva_yield();
  }
  uva_await(f, NULL);
  /* If the caller was cancelled during that await, the connections may
   * still be ending: they touch h until the very end, so wait for them. */
  while (h->stats.active > 0) uva_await(uva_sleep(1), NULL);
  free(h->pattern);
  free(h->gzip);
  free(h);
}
