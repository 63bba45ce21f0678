/* The tests' HTTP/1.1 server (see httpd.h), on uvasync's own streams.
 *
 * One task per connection (uva_tcp_listen) serves requests in turn until
 * the client closes, asks for "Connection: close" (or speaks HTTP/1.0
 * without keep-alive), a route closes on purpose, a request is refused
 * (an error status, then a lingering close), the head timeout passes, or
 * httpd_stop cancels it. The head is read by http1_read_head (the demo
 * site's reader, tools/demo/http1.h), the whole head before it is judged.
 *
 * Every buffer the server makes is plain malloc, not the library's
 * allocator: the tests count library allocations and inject failures into
 * them, and neither must be disturbed (or satisfied) by the server's own
 * memory. Every path out of a connection, cancellation included, goes
 * through conn_main's cleanup. */
#include "httpd.h"

#include "http1.h"

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
  int64_t timeout_ms;  /* httpd_set_head_timeout */
  long gate_passes;    /* httpd_gate_pass: requests that may pass /gate */
  long barrier_round;  /* /barrier: rounds released so far */
  long barrier_in;     /* /barrier: requests waiting in this round */
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

typedef struct req {
  http1_head_t head;   /* method, target, version, fields (http1.h) */
  char path[1024];     /* target without its query string */
  buf_t body;
  bool head_only;      /* HEAD: the head of the answer, never its body */
} req_t;

typedef struct conn {
  httpd_t *h;
  uva_stream_t *s;
  req_t rq;
  bool close;          /* after this answer, close the connection */
  bool linger;         /* ...after a half-close and a drain (see http1_linger) */
  long barrier_round;  /* /barrier: the round this request waits in */
} conn_t;

/* A positive return of the reading functions below is an HTTP status to
 * answer before closing the connection; negative ones are errors that
 * close it without an answer (the client left, httpd_stop...). */

static void req_clear(req_t *rq) {
  http1_head_free(&rq->head);
  buf_free(&rq->body);
  *rq = (req_t){0};
}

static int put(conn_t *k, const void *p, size_t n) {
  return n ? uva_await(uva_stream_write(k->s, p, n), NULL) : 0;
}

/* Read one line, LF-terminated, of at most limit bytes (its end
 * included), before deadline. On success *out holds it with its line end
 * (LF, or CRLF) cut off, *raw the bytes it took. */
static int read_line_by(conn_t *k, size_t limit, uint64_t deadline, uva_bytes_t **out,
                        size_t *raw) {
  void *v = NULL;
  int rc = http1_await_until(uva_stream_read_until(k->s, "\n", 1, limit), deadline, &v);
  *out = NULL;
  if (rc < 0) return rc;
  uva_bytes_t *l = v;
  *raw = l->len;
  l->len--; /* the LF */
  if (l->len && l->data[l->len - 1] == '\r') l->len--;
  l->data[l->len] = '\0';
  *out = l;
  return 0;
}

/* A line of a request body (chunk size, chunk end, trailer), under the
 * idle timeout. */
static int read_body_line(conn_t *k, size_t limit, uva_bytes_t **out, size_t *raw) {
  int rc = read_line_by(k, limit, http1_deadline_in(k->h->timeout_ms), out, raw);
  if (rc == UVA_ELIMIT) return 400;
  if (rc == UV_ETIMEDOUT) return 408;
  return rc;
}

/* Read and parse the head, then take the path out of the target. */
static int read_head(conn_t *k) {
  req_t *rq = &k->rq;
  const http1_opts_t o = {.head_max = HTTPD_HEAD_MAX,
                          .max_fields = HTTPD_MAX_HEADERS,
                          .timeout_ms = k->h->timeout_ms};
  int rc = http1_read_head(k->s, &rq->head, &o);
  if (rq->head.timed_out) k->h->stats.timeouts++;
  if (rc != 0) return rc;
  size_t plen = strcspn(rq->head.target, "?");
  if (plen >= sizeof rq->path) return 414;
  memcpy(rq->path, rq->head.target, plen);
  rq->path[plen] = '\0';
  rq->head_only = strcmp(rq->head.method, "HEAD") == 0;
  return 0;
}

static bool wants_close(const req_t *rq) {
  if (http1_has_token(&rq->head, "Connection", "close")) return true;
  return rq->head.version == 10 && !http1_has_token(&rq->head, "Connection", "keep-alive");
}

/* Transfer-Encoding, over every such field: 0 if absent, 1 for exactly
 * "chunked", else the status to refuse it with: 400 when chunked is not
 * the final coding once (the body's end cannot be found, RFC 9112 6.3),
 * 501 for a coding the server does not decode ("gzip, chunked"). */
static int transfer_coding(const req_t *rq) {
  bool seen = false, other = false, last_chunked = false;
  int chunked = 0;
  for (size_t i = 0; i < rq->head.nfields; i++) {
    if (strcasecmp(rq->head.fields[i].name, "Transfer-Encoding") != 0) continue;
    seen = true;
    for (const char *p = rq->head.fields[i].value; *p;) {
      while (http1_is_blank(*p) || *p == ',') p++;
      size_t n = strcspn(p, ","), m = n;
      while (m && http1_is_blank(p[m - 1])) m--;
      if (m == 0) break;
      last_chunked = m == 7 && strncasecmp(p, "chunked", 7) == 0;
      if (last_chunked) chunked++;
      else other = true;
      p += n;
    }
  }
  if (!seen) return 0;
  if (!last_chunked || chunked != 1) return 400;
  return other ? 501 : 1;
}

/* Read exactly n more body bytes onto rq->body, each read under the idle
 * timeout. A read borrows the buffer's tail until it is done; nothing
 * else touches the buffer then. */
static int read_body_bytes(conn_t *k, size_t n) {
  buf_t *b = &k->rq.body;
  if (n == 0) return 0;
  if (b->len + n > MAX_BODY) return 413;
  if (buf_reserve(b, n) < 0) return UV_ENOMEM;
  while (n > 0) {
    int rc = http1_await_until(uva_stream_read(k->s, b->p + b->len, n),
                               http1_deadline_in(k->h->timeout_ms), NULL);
    if (rc == UV_ETIMEDOUT) return 408;
    if (rc < 0) return rc;
    b->len += (size_t)rc;
    n -= (size_t)rc;
  }
  b->p[b->len] = '\0';
  return 0;
}

/* chunk-size [chunk-ext]: 1*HEXDIG, then nothing or blanks and ";..."
 * extensions (ignored). No sign, no "0x", no other trailing bytes. */
static bool parse_chunk_size(const char *s, unsigned long long *out) {
  unsigned long long v = 0;
  const char *p = s;
  for (;; p++) {
    unsigned d;
    if (*p >= '0' && *p <= '9') d = (unsigned)(*p - '0');
    else if (*p >= 'a' && *p <= 'f') d = (unsigned)(*p - 'a' + 10);
    else if (*p >= 'A' && *p <= 'F') d = (unsigned)(*p - 'A' + 10);
    else break;
    v = v > (ULLONG_MAX - d) / 16 ? ULLONG_MAX : v * 16 + d;
  }
  if (p == s) return false;
  while (http1_is_blank(*p)) p++;
  if (*p != '\0' && *p != ';') return false;
  *out = v;
  return true;
}

/* A chunked body: size lines, data, line end; then a trailer section up
 * to an empty line (ignored). */
static int read_chunked(conn_t *k) {
  uva_bytes_t *l;
  size_t raw = 0;
  int rc;
  for (;;) {
    if ((rc = read_body_line(k, 4096, &l, &raw)) != 0) return rc;
    unsigned long long n;
    bool ok = parse_chunk_size(l->data, &n);
    uva_free(l);
    if (!ok) return 400;
    if (n == 0) break;
    if (n > MAX_BODY) return 413;
    if ((rc = read_body_bytes(k, (size_t)n)) != 0) return rc;
    /* the data's CRLF (or LF), nothing before it */
    if ((rc = read_body_line(k, 2, &l, &raw)) != 0) return rc;
    ok = l->len == 0;
    uva_free(l);
    if (!ok) return 400;
  }
  for (size_t used = 0;;) {
    if (used >= HTTPD_HEAD_MAX) return 431;
    if ((rc = read_body_line(k, HTTPD_HEAD_MAX - used, &l, &raw)) != 0) return rc == 400 ? 431 : rc;
    used += raw;
    bool last = l->len == 0, bad = http1_has_ctl(l->data, l->len);
    uva_free(l);
    if (bad) return 400;
    if (last) return 0;
  }
}

/* curl holds back a large body after "Expect: 100-continue" until told to
 * go on (or a second passes): answer at once so tests stay fast. Never to
 * an HTTP/1.0 client (RFC 9110 15.2). */
static int maybe_continue(conn_t *k) {
  const char *e = http1_field(&k->rq.head, "Expect");
  if (e == NULL || strcasecmp(e, "100-continue") != 0 || k->rq.head.version < 11) return 0;
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  k->h->stats.continues++;
  return put(k, cont, sizeof cont - 1);
}

static int read_body(conn_t *k) {
  req_t *rq = &k->rq;
  int te = transfer_coding(rq);
  if (te > 1) return te;
  bool has_cl;
  unsigned long long n;
  int rc = http1_content_length(&rq->head, &has_cl, &n);
  if (rc != 0) return rc;
  if (te == 1) {
    /* chunked wins over a Content-Length; with one, or in HTTP/1.0, the
     * framing is suspect: close after answering (RFC 9112 6.1, 6.3) */
    if (has_cl || rq->head.version == 10) k->close = k->linger = true;
    if ((rc = maybe_continue(k)) < 0) return rc;
    return read_chunked(k);
  }
  if (n > MAX_BODY) return 413;
  if (n == 0) return 0;
  if ((rc = maybe_continue(k)) < 0) return rc;
  return read_body_bytes(k, (size_t)n);
}

static int read_request(conn_t *k) {
  int rc = read_head(k);
  if (rc != 0) return rc;
  k->h->stats.requests++;
  k->close = wants_close(&k->rq);
  return read_body(k);
}

/* ---------------------------------------------------------- responses */

/* Status line and headers. clen < 0: no Content-Length (the caller's
 * extra headers say how the body ends). extra: whole "Name: v\r\n" lines. */
static int send_head(conn_t *k, int status, const char *extra, long long clen) {
  buf_t b = {0};
  buf_printf(&b, "HTTP/1.1 %d %s\r\n", status, http1_reason(status));
  if (clen >= 0) buf_printf(&b, "Content-Length: %lld\r\n", clen);
  if (k->close) buf_add(&b, "Connection: close\r\n", 19);
  else if (k->rq.head.version == 10) buf_add(&b, "Connection: keep-alive\r\n", 24);
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

/* Hold the request until ready(k) (checked every millisecond), noticing
 * meanwhile a client that hangs up, as pause_watch does. 0 once ready. */
static int hold_until(conn_t *k, bool (*ready)(conn_t *k)) {
  k->h->stats.holds++;
  while (!ready(k)) {
    int rc = pause_watch(k, 1);
    if (rc < 0) return rc;
  }
  return 0;
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

/* HTTP/1.0 has no chunked coding: the same data then goes without
 * framing, and the connection's end ends it. */
static int route_chunked(conn_t *k, const char *rest) {
  unsigned long long n;
  if (!parse_num(rest, NULL, &n)) return route_not_found(k, rest);
  bool framed = k->rq.head.version >= 11;
  if (!framed) k->close = true;
  int rc = send_head(k, 200, framed ? "Transfer-Encoding: chunked\r\n" : NULL, -1);
  if (k->rq.head_only) return rc;
  for (unsigned long long i = 0; rc == 0 && i < n; i++) {
    char chunk[64], data[32];
    int len = snprintf(data, sizeof data, "chunk %llu\n", i);
    int clen = framed ? snprintf(chunk, sizeof chunk, "%x\r\n%s\r\n", (unsigned)len, data)
                      : snprintf(chunk, sizeof chunk, "%s", data);
    rc = put(k, chunk, (size_t)clen);
  }
  return rc == 0 && framed ? put(k, "0\r\n\r\n", 5) : rc;
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
  /* every name is a token and no value holds a control character
   * (http1_read_head): nothing here can end a line early */
  buf_t extra = {0};
  buf_add(&extra, "X-Echo-Method: ", 15);
  buf_add(&extra, k->rq.head.method, strlen(k->rq.head.method));
  buf_add(&extra, "\r\n", 2);
  for (size_t i = 0; i < k->rq.head.nfields; i++) {
    const http1_field_t *f = &k->rq.head.fields[i];
    buf_add(&extra, "X-Echo-", 7);
    buf_add(&extra, f->name, strlen(f->name));
    buf_add(&extra, ": ", 2);
    buf_add(&extra, f->value, strlen(f->value));
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

/* A holding route's end, as for /drip: a hang-up seen in the wait or, if
 * it came first, as a failed write counts as aborted. */
static int held(conn_t *k, int rc) {
  if (rc < 0 && rc != UV_ECANCELED) k->h->stats.aborted++; /* not httpd_stop */
  return rc;
}

static bool never(conn_t *k) {
  (void)k;
  return false;
}

static int route_hold(conn_t *k, const char *rest) {
  (void)rest;
  return held(k, hold_until(k, never));
}

/* One pass of httpd_gate_pass, if there is one. */
static bool gate_open(conn_t *k) {
  if (k->h->gate_passes == 0) return false;
  k->h->gate_passes--;
  return true;
}

static int route_gate(conn_t *k, const char *rest) {
  unsigned long long n, first;
  const char *slash = strchr(rest, '/');
  if (!parse_num(rest, "/", &n) || slash == NULL || !parse_num(slash + 1, NULL, &first) ||
      first > n)
    return route_not_found(k, rest);
  int rc = send_head(k, 200, "Content-Type: application/octet-stream\r\n", (long long)n);
  if (k->rq.head_only) return rc;
  if (rc == 0) rc = put_pattern(k, 0, (size_t)first);
  if (rc == 0) rc = hold_until(k, gate_open);
  if (rc == 0) rc = put_pattern(k, (size_t)first, (size_t)(n - first));
  return held(k, rc);
}

/* The round this request waits in has been let go. */
static bool barrier_done(conn_t *k) { return k->h->barrier_round != k->barrier_round; }

static int route_barrier(conn_t *k, const char *rest) {
  unsigned long long n, m;
  const char *slash = strchr(rest, '/');
  if (!parse_num(rest, "/", &n) || slash == NULL || !parse_num(slash + 1, NULL, &m) || n == 0)
    return route_not_found(k, rest);
  httpd_t *h = k->h;
  k->barrier_round = h->barrier_round;
  int rc = 0;
  if (++h->barrier_in >= (long)n) { /* the last one in lets the round go */
    h->barrier_in = 0;
    h->barrier_round++;
    h->stats.holds++;
  } else {
    rc = hold_until(k, barrier_done);
    if (rc < 0 && !barrier_done(k)) h->barrier_in--; /* left the round */
  }
  if (rc == 0) rc = send_head(k, 200, "Content-Type: application/octet-stream\r\n", (long long)m);
  if (rc == 0 && !k->rq.head_only) rc = put_pattern(k, 0, (size_t)m);
  return held(k, rc);
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
    {"/close", route_close},     {"/hold", route_hold},
    {"/gate/", route_gate},      {"/barrier/", route_barrier},
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
  if (rc > 0) { /* refused: answer, then close */
    k->h->stats.refused++;
    http1_refuse(k->s, rc, "", rc == 400 ? "bad request" : http1_reason(rc), k->rq.head_only,
                 k->h->timeout_ms);
    return UV_EOF;
  }
  if (rc == 0) rc = dispatch(k);
  if (rc == 0 && k->h->after_response) k->h->after_response(k->h->after_response_data);
  if (rc == 0 && k->close) {
    if (k->linger) http1_linger(k->s, k->h->timeout_ms);
    rc = UV_EOF;
  }
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
  h->timeout_ms = HTTPD_HEAD_TIMEOUT_MS;
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

void httpd_set_head_timeout(httpd_t *h, int64_t ms) { h->timeout_ms = ms < 0 ? -1 : ms; }

void httpd_gate_pass(httpd_t *h, long n) { h->gate_passes += n; }

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
